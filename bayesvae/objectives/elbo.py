r"""Pyro's ELBOs, leaner per step, with a KL weight and the sticking-the-landing gradient.

:class:`Trace_ELBO` and :class:`TraceMeanField_ELBO` compute exactly what Pyro's classes of
the same names compute when ``kl_weight=1`` and ``gradient="reparam"`` (tested on the same
seed), without the per-step work a training step does not need. Two settings go beyond
Pyro:

* ``kl_weight`` :math:`\beta` multiplies the local latent terms (KL warm-up, the
  :math:`\beta`-VAE),

  .. math::

      \hat{\mathcal L}_\beta = \log p(x \mid z, g) + \beta\,\big[\log p(z \mid g) - \log q(z \mid x, g)\big]
          + \log p(g) - \log q(g),

  with :math:`z` the latent sites inside the data plate and :math:`g` the global ones
  (unweighted). :meth:`losses` returns the loss at :math:`\beta` for the gradient and the
  :math:`\beta = 1` loss (the ELBO) for reporting, from one set of traces.
* ``gradient="stl"`` (sticking the landing [1]_, :class:`Trace_ELBO` only): :math:`\log q`
  is evaluated with the guide's distribution parameters detached, :math:`\log q_{\bar\phi}(z_\phi)`,
  so the score term :math:`-\nabla_\phi \log q_\phi(z)\rvert_z` (zero in expectation) is
  dropped while the path through :math:`z` is kept. The value is unchanged.

References
----------
.. [1] G. Roeder, Y. Wu and D. Duvenaud, "Sticking the Landing: Simple, Lower-Variance
   Gradient Estimators for Variational Inference", NeurIPS 2017, arXiv:1703.09194.
"""

from __future__ import annotations

from typing import Any

import pyro.infer
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.distributions.util import scale_and_mask
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import prune_subsample_sites, site_is_subsample

from bayesvae.objectives._sites import (
    DATA_PLATE,
    check_gradient,
    check_kl_weight,
    check_plate_name,
    detached,
    in_plate,
    sample_sites,
)

__all__ = ["Trace_ELBO", "TraceMeanField_ELBO"]


class _LeanTraces:
    """Trace the guide and replay the model, nothing else (Pyro's checks run while validation is on).

    Pyro's ``get_importance_trace`` also copies both traces to prune subsample sites, and
    computes every site's log-density and score parts whether the objective uses them or
    not. After the first (validated) step of a fit those are pure overhead.
    """

    def _get_trace(self, model, guide, args, kwargs):
        if is_validation_enabled():
            return super()._get_trace(model, guide, args, kwargs)
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        return model_trace, guide_trace


def _scaled_log_prob_sum(site) -> torch.Tensor:
    log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    return scale_and_mask(log_p, site["scale"], site["mask"]).sum()


def _kl_weight_property(doc: str) -> property:
    """A validated, settable ``kl_weight`` attribute."""

    def get(self) -> float:
        return self._kl_weight

    def set_(self, value: float) -> None:
        self._kl_weight = check_kl_weight(value)

    return property(get, set_, doc=doc)


_KL_WEIGHT_DOC = (
    r"""The weight :math:`\beta` of the local latent terms; set it between steps (a warm-up)."""
)


def _no_rsample(name: str, q: dict[str, Any], setting: str) -> ValueError:
    return ValueError(
        f"{setting} needs reparameterized guide sites; site {name!r} ({type(q['fn']).__name__}) is not (its score-function surrogate is Pyro's and has no separate local KL term). Use kl_weight=1.0 with gradient='reparam' for models with discrete sites."
    )


class Trace_ELBO(_LeanTraces, pyro.infer.Trace_ELBO):
    r"""Pyro's :class:`~pyro.infer.Trace_ELBO`, leaner per step; the same estimator.

    :math:`\hat{\mathcal L} = \log p(x, z) - \log q(z \mid x)` at :math:`z \sim q` (scaled log-densities),
    differentiated by reparameterization. When a guide site is not reparameterizable (a
    discrete site) the step is delegated to Pyro's implementation, whose surrogate adds the
    score-function term. With validation on (the first step of a fit) Pyro's own checks run.
    Same seed, same value and gradients as Pyro's class (tested).

    Parameters
    ----------
    num_particles, max_plate_nesting, vectorize_particles, ...
        As Pyro's :class:`~pyro.infer.Trace_ELBO`.
    kl_weight : float, default 1.0
        :math:`\beta \ge 0` multiplying the local terms :math:`\log p(z \mid g) - \log q(z
        \mid x, g)` of the latent sites inside the data plate (see the module docstring).
    gradient : {"reparam", "stl"}, default "reparam"
        ``"stl"``: sticking the landing [1]_, :math:`\log q` with the guide's distribution
        parameters detached at every latent site (local and global).
    data_plate : str, default "data"
        Name of the plate whose latent sites are local.

    Notes
    -----
    The STL estimator is unbiased for the ELBO because the dropped term has mean zero,
    :math:`\mathbb E_{q_\phi}[\nabla_\phi \log q_\phi(z)] = 0`, and has zero variance when
    :math:`q` is the exact posterior (then :math:`\log p(x, z) - \log q(z)` is constant in
    :math:`z`, so its path derivative vanishes) [1]_.

    .. warning::

        ``kl_weight != 1`` and ``gradient="stl"`` need every guide site reparameterized
        (``ValueError`` otherwise), and ``"stl"`` refuses flows (their parameters sit in
        transform networks that cannot be stopped here). Where a guide site's distribution
        depends on another sampled site (``q(z_1 \mid x, z_2)``), STL also drops that
        site's score through :math:`z_2` -- still mean zero, so still unbiased, but no
        longer zero-variance at the exact posterior.

    References
    ----------
    .. [1] G. Roeder, Y. Wu and D. Duvenaud, "Sticking the Landing", NeurIPS 2017,
       arXiv:1703.09194.
    """

    def __init__(
        self,
        *args: Any,
        kl_weight: float = 1.0,
        gradient: str = "reparam",
        data_plate: str = DATA_PLATE,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if check_gradient(gradient) == "dreg":
            raise ValueError(
                "gradient='dreg' (doubly reparameterized) is a gradient of the importance-weighted bound; use elbo='iwae' with it, or gradient='stl' with elbo='trace' (its K = 1 case)"
            )
        self.gradient = gradient
        self.kl_weight = kl_weight
        self.data_plate = check_plate_name(data_plate)

    kl_weight = _kl_weight_property(_KL_WEIGHT_DOC)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        if self.gradient != "reparam" or self._kl_weight != 1.0:
            return self.losses(model, guide, *args, **kwargs)[0]
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            latent = [
                site for site in guide_trace.nodes.values()
                if site["type"] == "sample" and not site_is_subsample(site) and not site["is_observed"]
            ]
            if is_validation_enabled() or not all(site["fn"].has_rsample for site in latent):
                model_trace = prune_subsample_sites(model_trace)
                guide_trace = prune_subsample_sites(guide_trace)
                model_trace.compute_log_prob()
                guide_trace.compute_score_parts()
                _, surrogate = self._differentiable_loss_particle(model_trace, guide_trace)
                # the value of the ELBO (a tensor, not Pyro's float: a traced step must not
                # bake it in), the gradient of the surrogate (with its score-function terms)
                value = sum(s["log_prob_sum"] for s in guide_trace.nodes.values() if s["type"] == "sample") - sum(
                    s["log_prob_sum"] for s in model_trace.nodes.values() if s["type"] == "sample"
                )
                loss = loss + (value.detach() + (surrogate - surrogate.detach())) / self.num_particles
                continue
            elbo = 0.0
            for site in model_trace.nodes.values():
                if site["type"] == "sample" and not site_is_subsample(site):
                    elbo = elbo + _scaled_log_prob_sum(site)
            for site in latent:
                elbo = elbo - _scaled_log_prob_sum(site)
            loss = loss - elbo / self.num_particles
        return loss

    def losses(self, model, guide, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(loss, reported)``: :math:`-\hat{\mathcal L}_\beta` (differentiable) and :math:`-\hat{\mathcal L}_1` (detached).

        One set of traces gives both; at ``kl_weight == 1`` they are the same number and
        the loss is :meth:`differentiable_loss`'s, computed once.
        """
        if self.gradient == "reparam" and self._kl_weight == 1.0:
            loss = self.differentiable_loss(model, guide, *args, **kwargs)
            return loss, loss.detach()
        weighted, plain = 0.0, 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            rest, local = _elbo_parts(self, model_trace, guide_trace, analytic_kl=False)
            weighted = weighted - (rest + self._kl_weight * local) / self.num_particles
            plain = plain - (rest + local) / self.num_particles
        return weighted, _detached_value(plain)


class TraceMeanField_ELBO(_LeanTraces, pyro.infer.TraceMeanField_ELBO):
    r"""Pyro's :class:`~pyro.infer.TraceMeanField_ELBO`, leaner per step; the same estimator.

    :math:`\hat{\mathcal L} = \log p(x \mid z) - \sum_{\text{sites}} \mathrm{KL}(q \,\|\, p)` with the analytic
    KL wherever torch/Pyro register one and :math:`\log p(z) - \log q(z)` at the sample
    elsewhere, exactly as Pyro's class; but only the log-densities the estimator uses are
    computed (not a latent site's log p and log q next to its analytic KL), and no trace is
    copied. With validation on (the first step of a fit) Pyro's own implementation and
    checks run. Same seed, same value and gradients as Pyro's class (tested).

    Parameters
    ----------
    num_particles, max_plate_nesting, vectorize_particles, ...
        As Pyro's :class:`~pyro.infer.TraceMeanField_ELBO`.
    kl_weight : float, default 1.0
        :math:`\beta \ge 0` multiplying each local site's KL (analytic or Monte Carlo);
        global sites' terms are unweighted.
    gradient : {"reparam"}, default "reparam"
        The only estimator here: ``"stl"`` and ``"dreg"`` raise ``ValueError`` (see below).
    data_plate : str, default "data"
        Name of the plate whose latent sites are local.

    Notes
    -----
    Sticking the landing is refused rather than given a meaning: it removes the score
    term of the Monte Carlo :math:`\log q(z)`, and an analytic KL has no such term (its
    gradient is exact), so STL here would change only the sites without a registered KL --
    an estimator that silently depends on which KLs torch registers.

    .. warning:: Valid only when the guide is fully reparameterized and factorizes like the
       model's latent sites (Pyro's mean-field condition, checked while validation is on).
    """

    def __init__(
        self,
        *args: Any,
        kl_weight: float = 1.0,
        gradient: str = "reparam",
        data_plate: str = DATA_PLATE,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if check_gradient(gradient) != "reparam":
            raise ValueError(
                f"gradient={gradient!r} is not defined for elbo='meanfield': sticking the landing removes the score term of a Monte Carlo log q(z), and the analytic KL(q || p) has no score term to remove (doubly reparameterized gradients belong to the importance-weighted bound). Use elbo='trace' with gradient='stl', or elbo='iwae' with gradient='stl' or 'dreg'."
            )
        self.gradient = gradient
        self.kl_weight = kl_weight
        self.data_plate = check_plate_name(data_plate)

    kl_weight = _kl_weight_property(_KL_WEIGHT_DOC)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        if self._kl_weight != 1.0:
            return self.losses(model, guide, *args, **kwargs)[0]
        if is_validation_enabled():
            return super().differentiable_loss(model, guide, *args, **kwargs)
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo = 0.0
            for name, site in model_trace.nodes.items():
                if site["type"] != "sample" or site_is_subsample(site):
                    continue
                if site["is_observed"]:
                    elbo = elbo + _scaled_log_prob_sum(site)
                    continue
                q = guide_trace.nodes[name]
                try:
                    kl = kl_divergence(q["fn"], site["fn"])
                except NotImplementedError:
                    elbo = elbo + _scaled_log_prob_sum(site) - _scaled_log_prob_sum(q)
                else:
                    kl = scale_and_mask(kl, scale=q["scale"], mask=q["mask"])
                    if torch.is_tensor(kl):
                        elbo = elbo - kl.sum()
                    else:  # a constant KL, the same for every batch element
                        elbo = elbo - kl * torch.Size(q["fn"].batch_shape).numel()
            for name, q in guide_trace.nodes.items():  # auxiliary guide sites
                if q["type"] == "sample" and name not in model_trace.nodes and not site_is_subsample(q):
                    elbo = elbo - _scaled_log_prob_sum(q)
            loss = loss - elbo / self.num_particles
        return loss

    def losses(self, model, guide, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(loss, reported)``: :math:`-\hat{\mathcal L}_\beta` (differentiable) and :math:`-\hat{\mathcal L}_1` (detached).

        One set of traces gives both; at ``kl_weight == 1`` the loss is
        :meth:`differentiable_loss`'s, computed once.
        """
        if self._kl_weight == 1.0:
            loss = self.differentiable_loss(model, guide, *args, **kwargs)
            return loss, loss.detach()
        weighted, plain = 0.0, 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            rest, local = _elbo_parts(self, model_trace, guide_trace, analytic_kl=True)
            weighted = weighted - (rest + self._kl_weight * local) / self.num_particles
            plain = plain - (rest + local) / self.num_particles
        return weighted, _detached_value(plain)


def _detached_value(value) -> torch.Tensor:
    """``value`` without its graph (a tensor even when no site contributed)."""
    return value.detach() if torch.is_tensor(value) else torch.tensor(float(value))


def _elbo_parts(objective, model_trace, guide_trace, *, analytic_kl: bool):
    """``(rest, local)``: the scaled ELBO terms outside and inside the local latent terms."""
    plate, gradient = objective.data_plate, objective.gradient
    setting = f"kl_weight={objective.kl_weight!r}" if gradient == "reparam" else f"gradient={gradient!r}"
    rest, local = 0.0, 0.0
    found = False
    for name, site in sample_sites(model_trace):
        if site["is_observed"]:
            rest = rest + _scaled_log_prob_sum(site)
            continue
        is_local = in_plate(site, plate)
        found = found or is_local
        q = guide_trace.nodes.get(name)
        if q is None:  # a model-only latent site: its log p, as Pyro counts it
            term = _scaled_log_prob_sum(site)
        elif analytic_kl:
            term = _minus_kl(site, q)
        else:
            term = _scaled_log_prob_sum(site) - _guide_log_prob(name, q, gradient, setting)
        if is_local:
            local = local + term
        else:
            rest = rest + term
    for name, q in sample_sites(guide_trace):  # auxiliary guide sites
        if not q["is_observed"] and name not in model_trace.nodes:
            rest = rest - _guide_log_prob(name, q, gradient, setting)
    if not found and objective.kl_weight != 1.0:
        plates = sorted({f.name for _, site in sample_sites(model_trace) for f in site["cond_indep_stack"]})
        raise ValueError(
            f"kl_weight={objective.kl_weight!r} weights the latent sites inside the plate named {plate!r}, but the model has none there (its plates: {plates}); pass data_plate= with the name of the model's data plate"
        )
    return rest, local


def _guide_log_prob(name: str, q: dict[str, Any], gradient: str, setting: str) -> torch.Tensor:
    """Scaled :math:`\\sum \\log q` at a guide site, with stopped parameters under STL."""
    fn = q["fn"] if gradient == "reparam" else detached(q["fn"], name, gradient)
    if not fn.has_rsample:
        raise _no_rsample(name, q, setting)
    log_q = fn.log_prob(q["value"], *q["args"], **q["kwargs"])
    return scale_and_mask(log_q, q["scale"], q["mask"]).sum()


def _minus_kl(site: dict[str, Any], q: dict[str, Any]) -> torch.Tensor:
    """Minus the scaled KL(q || p) at one site: analytic where registered, else Monte Carlo."""
    if not q["fn"].has_rsample:
        raise _no_rsample(site["name"], q, "kl_weight != 1")
    try:
        kl = kl_divergence(q["fn"], site["fn"])
    except NotImplementedError:
        return _scaled_log_prob_sum(site) - _scaled_log_prob_sum(q)
    kl = scale_and_mask(kl, scale=q["scale"], mask=q["mask"])
    if torch.is_tensor(kl):
        return -kl.sum()
    return -kl * torch.Size(q["fn"].batch_shape).numel()
