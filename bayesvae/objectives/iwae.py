r"""The importance-weighted bound, per data point, with STL and doubly-reparameterized gradients."""

from __future__ import annotations

import math
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.trace_struct import Trace

from bayesvae._checks import positive_int
from bayesvae.objectives._sites import (
    DATA_PLATE,
    check_gradient,
    check_kl_weight,
    check_plate_name,
    detached,
    in_plate,
    sample_sites,
)

__all__ = ["IWAE_ELBO"]

_PARTICLES = "_iwae_particles"


class IWAE_ELBO:
    r"""The importance-weighted bound of Burda et al. [1]_, per data point, as a training loss.

    .. math::

        \mathcal L_K = \mathbb E_{q(g)}\Big[\log\frac{p(g)}{q(g)} + \sum_{n=1}^N
            \mathbb E\log \frac1K \sum_{k=1}^K \frac{p(x_n, z_{nk} \mid g)}{q(z_{nk} \mid x_n, g)}\Big]
            \;\le\; \log p(x_{1:N})

    with :math:`z_{nk} \sim q(z \mid x_n, g)` independently. :math:`\mathcal L_1` is the ELBO,
    and :math:`\mathcal L_K` increases with :math:`K` towards :math:`\log p(x)`. Global
    latents :math:`g` (sites outside the data plate) are drawn once per step and
    shared by the :math:`K` samples of every point; their log weight is counted once. With
    a minibatch the point terms are scaled by ``N / batch``, so each step's loss is an
    unbiased estimate of :math:`-\mathcal L_K` for the full data.

    .. warning::

        Pyro's ``RenyiELBO(alpha=0)`` is *not* this bound once a model has global latents or
        a subsampled data plate: it importance-weights whole traces, with the global terms
        inside every sample's weight and the local terms already multiplied by
        ``N / batch``. Here each point has its own :math:`K` weights.

    Every latent site of the guide must be reparameterizable (a discrete site raises
    ``ValueError``).

    Parameters
    ----------
    num_particles : int
        :math:`K`, the importance samples per data point.
    max_plate_nesting : int, default 1
        Plates nested in the model (the package's models: 1, the data plate).
    kl_weight : float, default 1.0
        :math:`\beta \ge 0`: the log weights become :math:`\log p(x_n \mid z_{nk}, g) +
        \beta \log\{p(z_{nk} \mid g) / q(z_{nk} \mid x_n, g)\}` (a warm-up of the local terms;
        the global term is unweighted). :meth:`losses` also returns the :math:`\beta = 1`
        bound on the same draws.
    gradient : {"reparam", "stl", "dreg"}, default "reparam"
        How the bound is differentiated (the value is the same): see Notes.
    data_plate : str, default "data"
        Name of the plate whose sites are local (one importance weight per point).

    Notes
    -----
    Write :math:`w_k = p(x, z_k)/q_\phi(z_k)`, :math:`\tilde w_k = w_k / \sum_j w_j` and
    :math:`z_k = z(\epsilon_k, \phi)`. The reparameterized gradient is

    .. math::

        \nabla_\phi \mathcal L_K = \mathbb E \sum_k \tilde w_k \Big(
            \frac{\partial \log w_k}{\partial z_k}\frac{\partial z_k}{\partial \phi}
            - \frac{\partial \log q_\phi(z_k)}{\partial \phi}\Big),

    whose score term makes the inference network's signal-to-noise ratio fall as
    :math:`O(K^{-1/2})` [3]_.

    * ``"stl"`` [2]_ drops the score term by evaluating :math:`\log q_{\bar\phi}(z_k)` with
      the guide's distribution parameters detached. For :math:`K = 1` this is unbiased
      (the STL ELBO gradient); for :math:`K > 1` it is **biased**, because :math:`\tilde w_k`
      depends on :math:`z_k` and the dropped term no longer has mean zero [4]_.
    * ``"dreg"`` [4]_ (eq. 7) rewrites the score term by reparameterizing it once more,
      :math:`\mathbb E[\tilde w_k \partial_\phi \log q_\phi(z_k)] =
      \mathbb E[(\tilde w_k - \tilde w_k^2)\, \partial_{z_k} \log w_k\, \partial_\phi z_k]`,
      giving the unbiased

      .. math::

          \nabla_\phi^{\mathrm{DReG}} = \sum_k \tilde w_k^{\,2}\,
              \frac{\partial \log w_k}{\partial z_k}\frac{\partial z_k}{\partial \phi},

      whose SNR does not fall with :math:`K`; the generative parameters :math:`\theta`
      keep the IWAE gradient :math:`\sum_k \tilde w_k \nabla_\theta \log p_\theta(x, z_k)`.
      Both come from one backward pass of the surrogate
      :math:`\sum_k \bar{\tilde w}_k^{\,2} \log w_k(z_k) + (\bar{\tilde w}_k - \bar{\tilde w}_k^{\,2})
      \log w_k(\bar z_k)` (bars: detached), which costs one more replay of the model with
      the local draws detached. Any direct dependence of :math:`p` on a parameter (a
      VampPrior's encoder) is thus weighted by :math:`\tilde w_k`, as in IWAE. With
      ``kl_weight`` :math:`\beta \ne 1` the score term is :math:`\beta` times the one
      above, and the paths are weighted by :math:`(1 - \beta)\tilde w_k + \beta \tilde w_k^{\,2}`
      (unbiased for the :math:`\beta`-weighted bound).

    Both apply :math:`\log q_{\bar\phi}` to the global sites too (an unbiased STL term
    outside the logarithm). They need reparameterized guide sites and refuse flows
    (``ValueError``).

    .. warning::

        ``"dreg"`` is exact when each local guide site's distribution depends on
        :math:`x`, :math:`g` and :math:`\phi` only. If one local site's distribution
        depends on another local draw (:math:`q(z_1 \mid x, z_2)`), detaching that
        distribution's parameters also cuts the path through :math:`z_2`, and the
        estimator is biased; :func:`~bayesvae.objectives.make_elbo` refuses such
        package models.

    References
    ----------
    .. [1] Y. Burda, R. Grosse and R. Salakhutdinov, "Importance Weighted Autoencoders",
       ICLR 2016, arXiv:1509.00519.
    .. [2] G. Roeder, Y. Wu and D. Duvenaud, "Sticking the Landing", NeurIPS 2017,
       arXiv:1703.09194.
    .. [3] T. Rainforth, A. R. Kosiorek, T. A. Le, C. J. Maddison, M. Igl, F. Wood and
       Y. W. Teh, "Tighter Variational Bounds are Not Necessarily Better", ICML 2018,
       arXiv:1802.04537.
    .. [4] G. Tucker, D. Lawson, S. Gu and C. J. Maddison, "Doubly Reparameterized Gradient
       Estimators for Monte Carlo Objectives", ICLR 2019, arXiv:1810.04152.
    """

    def __init__(
        self,
        num_particles: int = 5,
        *,
        max_plate_nesting: int = 1,
        kl_weight: float = 1.0,
        gradient: str = "reparam",
        data_plate: str = DATA_PLATE,
    ) -> None:
        self.num_particles = positive_int("num_particles", num_particles)
        self.max_plate_nesting = max_plate_nesting
        self.gradient = check_gradient(gradient)
        self.kl_weight = kl_weight
        self.data_plate = check_plate_name(data_plate)
        self._has_globals: bool | None = None  # learned on the first call

    @property
    def kl_weight(self) -> float:
        r"""The weight :math:`\beta` of the local latent terms; set it between steps (a warm-up)."""
        return self._kl_weight

    @kl_weight.setter
    def kl_weight(self, value: float) -> None:
        self._kl_weight = check_kl_weight(value)

    def _in_data_plate(self, site: dict[str, Any]) -> bool:
        return in_plate(site, self.data_plate)

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
        for name, site in sample_sites(trace):
            if not self._in_data_plate(site):
                keep.add_node(name, **site)
        return keep

    def _traces(self, model, guide, args, kwargs):
        """The global draw, then the guide and the replayed model under the particle plate."""
        glob = Trace() if self._has_globals is False else self._globals(guide, args, kwargs)
        self._has_globals = bool(glob.nodes)
        with pyro.plate(_PARTICLES, self.num_particles, dim=-(self.max_plate_nesting + 1)):
            guide_trace = poutine.trace(poutine.replay(guide, trace=glob)).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        return glob, guide_trace, model_trace

    def _add_globals(self, bound: torch.Tensor, glob: Trace, model_trace: Trace) -> torch.Tensor:
        """``bound`` plus log p(g) - log q(g), counted once (stopped guide parameters under STL/DReG)."""
        k = self.num_particles
        for name, site in glob.nodes.items():
            p = model_trace.nodes[name]["fn"].log_prob(site["value"])
            # a global factor broadcast over the particle plate is counted once
            dim = -(self.max_plate_nesting + 1)
            if p.dim() >= -dim and p.shape[dim] == k:
                p = p.select(dim, 0)
            q = site["fn"] if self.gradient == "reparam" else detached(site["fn"], name, self.gradient)
            bound = bound + p.sum() - q.log_prob(site["value"]).sum()
        return bound

    def differentiable_loss(self, model, guide, *args: Any, **kwargs: Any) -> torch.Tensor:
        """:math:`-\\mathcal L_K` (at ``kl_weight``) estimated on one minibatch, differentiable."""
        if self.gradient != "reparam" or self._kl_weight != 1.0:
            return self.losses(model, guide, *args, **kwargs)[0]
        glob, guide_trace, model_trace = self._traces(model, guide, args, kwargs)
        k = self.num_particles
        local = 0.0
        scale = 1.0
        for name, site in sample_sites(model_trace):
            if not self._in_data_plate(site):
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
            raise ValueError(f"IWAE_ELBO found no sites inside a plate named {self.data_plate!r}")
        # (K, batch): one log weight per sample and point; logsumexp over the K samples
        local = local.reshape(k, -1)
        point = torch.logsumexp(local, dim=0) - math.log(k)
        bound = point.sum() * scale
        return -self._add_globals(bound, glob, model_trace)

    def loss(self, model, guide, *args: Any, **kwargs: Any) -> float:
        """:math:`-\\mathcal L_K` (at ``kl_weight``) as a float (no gradient)."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def _log_weights(self, model_trace: Trace, guide_trace: Trace):
        """``(obs, ratio, scale)``: per (particle, point) log p(x | z) and log p(z)/q(z), shape (K, batch)."""
        obs, ratio, scale = 0.0, 0.0, 1.0
        for name, site in sample_sites(model_trace):
            if not self._in_data_plate(site):
                continue
            scale = site["scale"]
            lp = site["fn"].log_prob(site["value"])
            if site["is_observed"]:
                obs = obs + lp
                continue
            q = guide_trace.nodes[name]
            fn = q["fn"] if self.gradient == "reparam" else detached(q["fn"], name, self.gradient)
            if not fn.has_rsample:
                raise ValueError(
                    f"IWAE_ELBO needs reparameterizable guide sites; site {name!r} ({type(q['fn']).__name__}) is not"
                )
            ratio = ratio + lp - fn.log_prob(q["value"])
        if not torch.is_tensor(obs) and not torch.is_tensor(ratio):
            raise ValueError(f"IWAE_ELBO found no sites inside a plate named {self.data_plate!r}")
        k = self.num_particles
        shape = torch.broadcast_shapes(*(t.shape for t in (obs, ratio) if torch.is_tensor(t)))
        obs = obs.expand(shape).reshape(k, -1) if torch.is_tensor(obs) else obs
        ratio = ratio.expand(shape).reshape(k, -1) if torch.is_tensor(ratio) else ratio
        return obs, ratio, scale

    def losses(self, model, guide, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(loss, reported)``: :math:`-\mathcal L_K` at ``kl_weight`` (differentiable, by ``gradient``) and at :math:`\beta = 1` (detached).

        Both from the same draws; at ``kl_weight == 1`` with ``gradient="reparam"`` the loss
        is :meth:`differentiable_loss`'s, computed once.
        """
        if self.gradient == "reparam" and self._kl_weight == 1.0:
            loss = self.differentiable_loss(model, guide, *args, **kwargs)
            return loss, loss.detach()
        glob, guide_trace, model_trace = self._traces(model, guide, args, kwargs)
        obs, ratio, scale = self._log_weights(model_trace, guide_trace)
        beta = self._kl_weight
        log_w = obs + beta * ratio
        k = self.num_particles
        point = torch.logsumexp(log_w, dim=0) - math.log(k)
        if self.gradient == "dreg":
            point = point.detach() + self._dreg_surrogate(model, log_w, model_trace, guide_trace, args, kwargs)
        loss = -self._add_globals(point.sum() * scale, glob, model_trace)
        if beta == 1.0:
            return loss, loss.detach()
        with torch.no_grad():
            plain = torch.logsumexp(obs + ratio, dim=0) - math.log(k)
            return loss, -self._add_globals(plain.sum() * scale, glob, model_trace)

    def _dreg_surrogate(self, model, log_w, model_trace, guide_trace, args, kwargs) -> torch.Tensor:
        r"""Per point, zero-valued, with the DReG gradient: :math:`(1 - \beta)\bar w + \beta \bar w^2` on the draws' paths, :math:`\bar w` elsewhere."""
        w = torch.softmax(log_w.detach(), dim=0)
        beta = self._kl_weight
        # the score term is beta E[sum_k w_k d log q(z_k)/d phi]; DReG rewrites it as
        # beta E[sum_k (w_k - w_k^2) d log w_k/dz_k dz_k/dphi], leaving w - beta (w - w^2) on the paths
        path = w * w if beta == 1.0 else (1.0 - beta) * w + beta * w * w
        # the model replayed at the same values with the local draws detached: only the
        # direct (generative) dependence of log w on the parameters remains
        still = Trace()
        for name, site in model_trace.nodes.items():
            if site["type"] == "sample" and not site["is_observed"] and self._in_data_plate(site):
                site = {**site, "value": site["value"].detach()}
            still.add_node(name, **site)
        with pyro.plate(_PARTICLES, self.num_particles, dim=-(self.max_plate_nesting + 1)):
            frozen = poutine.trace(poutine.replay(model, trace=still)).get_trace(*args, **kwargs)
        frozen_guide = Trace()
        for name, site in guide_trace.nodes.items():
            if site["type"] == "sample" and not site["is_observed"] and self._in_data_plate(site):
                site = {**site, "value": site["value"].detach()}
            frozen_guide.add_node(name, **site)
        obs, ratio, _ = self._log_weights(frozen, frozen_guide)
        log_w_frozen = obs + self._kl_weight * ratio
        surrogate = (path * log_w).sum(0) + ((w - path) * log_w_frozen).sum(0)
        return surrogate - surrogate.detach()
