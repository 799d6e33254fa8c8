r"""Training objectives beyond Pyro's ELBOs: the importance-weighted bound, per data point."""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.infer
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.distributions.util import scale_and_mask
from pyro.infer.util import is_validation_enabled
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import prune_subsample_sites, site_is_subsample

from bayesvae._checks import positive_int

__all__ = ["IWAE_ELBO", "Trace_ELBO", "TraceMeanField_ELBO"]

_PARTICLES = "_iwae_particles"
_DATA = "data"


def _in_data_plate(site: dict[str, Any]) -> bool:
    return any(frame.name == _DATA for frame in site["cond_indep_stack"])


def _sample_sites(trace: Trace):
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and not site_is_subsample(site):
            yield name, site


class IWAE_ELBO:
    r"""The importance-weighted bound of Burda et al. [1]_, per data point, as a training loss.

    .. math::

        \mathcal L_K = \mathbb E_{q(g)}\Big[\log\frac{p(g)}{q(g)} + \sum_{n=1}^N
            \mathbb E\log \frac1K \sum_{k=1}^K \frac{p(x_n, z_{nk} \mid g)}{q(z_{nk} \mid x_n, g)}\Big]
            \;\le\; \log p(x_{1:N})

    with :math:`z_{nk} \sim q(z \mid x_n, g)` independently. :math:`\mathcal L_1` is the ELBO,
    and :math:`\mathcal L_K` increases with :math:`K` towards :math:`\log p(x)`. Global
    latents :math:`g` (sites outside the plate named ``"data"``) are drawn once per step and
    shared by the :math:`K` samples of every point; their log weight is counted once. With
    a minibatch the point terms are scaled by ``N / batch``, so each step's loss is an
    unbiased estimate of :math:`-\mathcal L_K` for the full data.

    .. warning::

        Pyro's ``RenyiELBO(alpha=0)`` is *not* this bound once a model has global latents or
        a subsampled data plate: it importance-weights whole traces, with the global terms
        inside every sample's weight and the local terms already multiplied by
        ``N / batch``. Here each point has its own :math:`K` weights.

    The gradient is the reparameterization gradient of the bound (every latent site of the
    guide must be reparameterizable; a discrete site raises ``ValueError``).

    Parameters
    ----------
    num_particles : int
        :math:`K`, the importance samples per data point.
    max_plate_nesting : int, default 1
        Plates nested in the model (the package's models: 1, the data plate).

    References
    ----------
    .. [1] Y. Burda, R. Grosse and R. Salakhutdinov, "Importance Weighted Autoencoders",
       ICLR 2016, arXiv:1509.00519.
    """

    def __init__(self, num_particles: int = 5, *, max_plate_nesting: int = 1) -> None:
        self.num_particles = positive_int("num_particles", num_particles)
        self.max_plate_nesting = max_plate_nesting
        self._has_globals: bool | None = None  # learned on the first call

    def _globals(self, guide, args, kwargs) -> Trace:
        """One draw of the guide's global sites (traced on the batch's first row only)."""
        first = {**kwargs}
        x = args[0][:1]
        if kwargs.get("index") is not None:
            first["index"] = kwargs["index"][:1]
        if kwargs.get("groups") is not None:
            first["groups"] = kwargs["groups"][:1]
        trace = poutine.trace(guide).get_trace(x, *args[1:], **first)
        keep = Trace()
        for name, site in _sample_sites(trace):
            if not _in_data_plate(site):
                keep.add_node(name, **site)
        return keep

    def differentiable_loss(self, model, guide, *args: Any, **kwargs: Any) -> torch.Tensor:
        """:math:`-\\mathcal L_K` estimated on one minibatch, differentiable."""
        glob = Trace() if self._has_globals is False else self._globals(guide, args, kwargs)
        self._has_globals = bool(glob.nodes)
        k = self.num_particles
        with pyro.plate(_PARTICLES, k, dim=-(self.max_plate_nesting + 1)):
            guide_trace = poutine.trace(poutine.replay(guide, trace=glob)).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        local = 0.0
        scale = 1.0
        for name, site in _sample_sites(model_trace):
            if not _in_data_plate(site):
                continue
            scale = site["scale"]
            lp = site["fn"].log_prob(site["value"])
            local = local + lp
            if not site["is_observed"]:
                q = guide_trace.nodes[name]
                if not q["fn"].has_rsample:
                    raise ValueError(
                        f"IWAE_ELBO needs reparameterizable guide sites; site {name!r} ({type(q['fn']).__name__}) is not"
                    )
                local = local - q["fn"].log_prob(q["value"])
        if not torch.is_tensor(local):
            raise ValueError("IWAE_ELBO found no sites inside a plate named 'data'")
        # (K, batch): one log weight per sample and point; logsumexp over the K samples
        local = local.reshape(k, -1)
        point = torch.logsumexp(local, dim=0) - math.log(k)
        bound = point.sum() * scale
        for name, site in glob.nodes.items():
            p = model_trace.nodes[name]["fn"].log_prob(site["value"])
            # a global factor broadcast over the particle plate is counted once
            dim = -(self.max_plate_nesting + 1)
            if p.dim() >= -dim and p.shape[dim] == k:
                p = p.select(dim, 0)
            bound = bound + p.sum() - site["fn"].log_prob(site["value"]).sum()
        return -bound

    def loss(self, model, guide, *args: Any, **kwargs: Any) -> float:
        """:math:`-\\mathcal L_K` as a float (no gradient)."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))


# ---------------------------------------------------------------------------------------------
# Pyro's ELBOs without the per-step work that a training step does not need


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


class Trace_ELBO(_LeanTraces, pyro.infer.Trace_ELBO):
    r"""Pyro's :class:`~pyro.infer.Trace_ELBO`, leaner per step; the same estimator.

    :math:`\hat{\mathcal L} = \log p(x, z) - \log q(z \mid x)` at :math:`z \sim q` (scaled log-densities),
    differentiated by reparameterization. When a guide site is not reparameterizable (a
    discrete site) the step is delegated to Pyro's implementation, whose surrogate adds the
    score-function term. With validation on (the first step of a fit) Pyro's own checks run.
    Same seed, same value and gradients as Pyro's class (tested).
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
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


class TraceMeanField_ELBO(_LeanTraces, pyro.infer.TraceMeanField_ELBO):
    r"""Pyro's :class:`~pyro.infer.TraceMeanField_ELBO`, leaner per step; the same estimator.

    :math:`\hat{\mathcal L} = \log p(x \mid z) - \sum_{\text{sites}} \mathrm{KL}(q \,\|\, p)` with the analytic
    KL wherever torch/Pyro register one and :math:`\log p(z) - \log q(z)` at the sample
    elsewhere, exactly as Pyro's class; but only the log-densities the estimator uses are
    computed (not a latent site's log p and log q next to its analytic KL), and no trace is
    copied. With validation on (the first step of a fit) Pyro's own implementation and
    checks run. Same seed, same value and gradients as Pyro's class (tested).

    .. warning:: Valid only when the guide is fully reparameterized and factorizes like the
       model's latent sites (Pyro's mean-field condition, checked while validation is on).
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
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
