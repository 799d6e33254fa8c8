r"""Automatic relevance determination on the decoder's first layer (Bayesian PCA for a linear one)."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pyro
import pyro.distributions as dist
import torch
from torch import nn

from bayesvae._checks import positive_int
from bayesvae._registry import register
from bayesvae.models.hierarchical._common import (
    ScalePrior,
    as_scale_prior,
    global_factor,
    summarize,
)
from bayesvae.models.priors import GlobalSite, LocalSite, Prior, PriorSummary, Z
from bayesvae.nn import ACTIVATIONS, MLP

__all__ = ["ARDPrior", "ARDDecoder", "ARD_SCALE", "ARD_WEIGHT"]

#: Site of the relevance scales :math:`\tau_k` (global, shape ``(L,)``).
ARD_SCALE = "ard_scale"
#: Site of the first-layer weights :math:`W` (global, shape ``(L, H)``).
ARD_WEIGHT = "ard_weight"


@register
class ARDPrior(Prior):
    r"""Automatic relevance determination of latent dimensions (MacKay & Neal; Bishop's BPCA).

    .. math::

        \tau_k &\sim p(\tau) \quad (k = 1..L), \qquad
        W_{kh} \mid \tau_k \sim \mathcal N(0, \tau_k^2) \quad (h = 1..H), \\
        z_n &\sim \mathcal N(0, I_L), \qquad
        u_n = z_n W \in \mathbb R^H \quad\text{(the decoder's input)}.

    :math:`\tau` and :math:`W` are **global** sites (``"ard_scale"``, ``"ard_weight"``),
    inferred by the guide's non-amortized mean-field part (log-normal on :math:`\tau`,
    Gaussian on :math:`W`); :math:`z` is the **local** site ``"z"``, inferred by the encoder.
    The decoder receives :math:`u = zW` and must *start after* its first weight matrix:
    :class:`ARDDecoder` (``u + b`` for Bayesian PCA, or an activation then an MLP for a deep
    decoder whose first hidden layer has width :math:`H`).

    Parameters
    ----------
    num_factors : int
        :math:`L`, the number of candidate latent dimensions (the width of ``"z"``).
    width : int
        :math:`H`, the decoder's input width; this is the prior's ``latent_dim`` (the
        :class:`~bayesvae.models.Prior` contract). For Bayesian PCA, :math:`H = D`.
    scale_prior : ScalePrior or str, default "half_cauchy"
        Hyperprior on each :math:`\tau_k`: ``"half_cauchy"``, ``"half_normal"`` or
        ``"inverse_gamma"`` (on :math:`\tau_k^2`), or a :class:`ScalePrior` with its
        parameters.
    weight_init_scale : float, default 0.1
        Initial standard deviation of the guide on :math:`W`.

    Notes
    -----
    **Why the relevance sits on the weights, not on z.** Putting the scale on the latent,
    :math:`z_{nk} \sim \mathcal N(0, \tau_k^2)`, is not identifiable: the decoder's weights
    on :math:`z_k` absorb any scale, so :math:`z_k/\tau_k` with weights :math:`\tau_k w_k`
    has the same likelihood and the same KL for every :math:`\tau_k`. An unused dimension
    then contributes zero KL whatever :math:`\tau_k` is, and its posterior returns to the
    hyperprior instead of shrinking (measured on the linear-Gaussian data of the tests,
    3 true factors in 10: unused :math:`\tau \approx 1.0`, the half-Cauchy's median,
    against 2.2-2.9 for the used ones). With :math:`z` fixed
    at unit scale and the prior on the weights leaving :math:`z_k` -- ARD on a network's
    inputs [1]_ [2]_, Bayesian PCA [3]_ in the linear case -- an unused row
    :math:`W_{k\cdot}` is pushed to 0 by its prior and :math:`\tau_k` follows it: the
    :math:`\tau_k`-dependent part of the ELBO,
    :math:`-H\log\tau_k - \mathbb E_q\lVert W_{k\cdot}\rVert^2 / (2\tau_k^2)
    + \log p(\tau_k)`, is maximized at
    :math:`\tau_k^2 \approx \mathbb E_q\lVert W_{k\cdot}\rVert^2 / H`, the mean squared weight
    of the row (measured on the same data: unused :math:`\tau \approx 0.02`, used
    0.74-1.09 -- the true loadings' scale is 1 -- and the true column space recovered
    within about 1 degree).

    **KL per site.** ``"z"``: analytic Gaussian KL under ``TraceMeanField_ELBO``.
    ``"ard_weight"``: analytic Gaussian KL given the sampled :math:`\tau` (one draw of
    :math:`\tau` per particle, so the estimate is unbiased). ``"ard_scale"``: Monte Carlo
    (no KL from a log-normal to a half-Cauchy, half-normal or root-inverse-gamma is
    registered). Under ``Trace_ELBO`` all three are Monte Carlo. The global sites are
    outside the data plate and are not rescaled under minibatching; ``"z"`` is, by
    :math:`N / B`.

    References
    ----------
    .. [1] D. J. C. MacKay, "Probable networks and plausible predictions -- a review of
       practical Bayesian methods for supervised neural networks", Network 6(3), 469-505,
       1995. doi:10.1088/0954-898X_6_3_011
    .. [2] R. M. Neal, *Bayesian Learning for Neural Networks*, Springer, 1996, sec. 1.2.3.
       doi:10.1007/978-1-4612-0745-0
    .. [3] C. M. Bishop, "Bayesian PCA", NIPS 11, 382-388, 1999; and "Variational principal
       components", ICANN 1999, 509-514. doi:10.1049/cp:19991160

    Examples
    --------
    Bayesian PCA of 20-dimensional data with up to 10 factors:

    >>> from bayesvae.models import VAE, Gaussian
    >>> prior = ARDPrior(10, width=20)
    >>> model = VAE(prior=prior, likelihood=Gaussian(data_dim=20), decoder=ARDDecoder(20))
    >>> model.sample(3)["x"].shape
    torch.Size([3, 20])
    """

    def __init__(
        self,
        num_factors: int,
        *,
        width: int,
        scale_prior: ScalePrior | str = "half_cauchy",
        weight_init_scale: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_factors = positive_int("num_factors", num_factors)
        self.latent_dim = positive_int("width", width)
        self.scale_prior = as_scale_prior(scale_prior, "scale_prior")
        if not (isinstance(weight_init_scale, (int, float)) and weight_init_scale > 0):
            raise ValueError(f"weight_init_scale must be positive, got {weight_init_scale!r}")
        self.weight_init_scale = float(weight_init_scale)

    @property
    def width(self) -> int:
        """:math:`H`, the decoder's input width (same as ``latent_dim``)."""
        return self.latent_dim

    def global_sites(self) -> tuple[GlobalSite, ...]:
        return (
            GlobalSite(
                ARD_SCALE, (self.num_factors,), "lognormal", self.scale_prior.init_log(), 0.1
            ),
            GlobalSite(
                ARD_WEIGHT, (self.num_factors, self.width), "normal", 0.0, self.weight_init_scale
            ),
        )

    def local_sites(self) -> tuple[LocalSite, ...]:
        return (LocalSite(Z, self.num_factors, "normal"),)

    def sample_globals(self, *, like: torch.Tensor) -> dict[str, torch.Tensor]:
        tau = pyro.sample(
            ARD_SCALE, self.scale_prior.distribution(like, (self.num_factors,)).to_event(1)
        )
        # row k of W has scale tau_k; tau may carry leading particle dims
        scale = tau.unsqueeze(-1).expand(*tau.shape, self.width)
        weight = pyro.sample(ARD_WEIGHT, dist.Normal(torch.zeros_like(scale), scale).to_event(2))
        return {ARD_SCALE: tau, ARD_WEIGHT: weight}

    def sample_locals(
        self,
        batch_size: int,
        globals_: dict[str, torch.Tensor],
        *,
        like: torch.Tensor,
        groups: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        zero = like.new_zeros(()).expand(batch_size, self.num_factors)
        one = like.new_ones(()).expand(batch_size, self.num_factors)
        return {Z: pyro.sample(Z, dist.Normal(zero, one).to_event(1))}

    def decoder_input(
        self, locals_: dict[str, torch.Tensor], globals_: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        # (..., B, 1, L) @ (..., 1, L, H): the global's batch dims broadcast against the plate
        return (locals_[Z].unsqueeze(-2) @ globals_[ARD_WEIGHT]).squeeze(-2)

    @torch.no_grad()
    def loadings(self, fit: Any) -> torch.Tensor:
        """Posterior mean of :math:`W`, shape ``(num_factors, width)``; row k leaves z_k."""
        return global_factor(fit.guide, ARD_WEIGHT).mean.detach()

    @torch.no_grad()
    def relevance(self, fit: Any, *, level: float = 0.9, threshold: float = 0.1) -> pd.DataFrame:
        r"""Which latent dimensions are switched off: posterior of each relevance scale.

        Parameters
        ----------
        fit : FitResult
            A fit of a model with this prior and a guide with a mean-field global part
            (``AmortizedGuide`` or ``MeanFieldGuide``).
        level : float, default 0.9
            Mass of the central posterior interval.
        threshold : float, default 0.1
            A dimension is *active* when its posterior-mean :math:`\tau_k` is at least
            ``threshold`` times the largest one.

        Returns
        -------
        pandas.DataFrame
            One row per latent dimension ``k``, sorted by ``k``: ``tau_mean``
            (:math:`\mathbb E_q\tau_k`), ``tau_lower`` / ``tau_upper`` (the central
            ``level`` interval of :math:`q(\tau_k)`), ``relative`` (``tau_mean`` over the
            largest ``tau_mean``), ``weight_norm`` (:math:`\lVert\mathbb E_q W_{k\cdot}\rVert`,
            the size of the decoder's weights leaving :math:`z_k`) and ``active`` (bool).
        """
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
        s = summarize(global_factor(fit.guide, ARD_SCALE), level)
        mean = s["mean"].detach().cpu()
        rel = mean / mean.max()
        frame = pd.DataFrame(
            {
                "dimension": range(self.num_factors),
                "tau_mean": mean.numpy(),
                "tau_lower": s["lower"].detach().cpu().numpy(),
                "tau_upper": s["upper"].detach().cpu().numpy(),
                "relative": rel.numpy(),
                "weight_norm": self.loadings(fit).cpu().norm(dim=-1).numpy(),
                "active": (rel >= threshold).numpy(),
            }
        )
        return frame.set_index("dimension")

    def summaries(self, guide, x=None, *, groups=None) -> tuple[PriorSummary, ...]:
        """The relevance scales with 90% intervals (:meth:`relevance`)."""
        frame = self.relevance(SimpleNamespace(guide=guide), level=0.9)
        frame.attrs["level"] = 0.9
        return (
            PriorSummary(
                "ard_relevance",
                "ARD relevance scales",
                "relevance",
                frame,
                "ARD relevance scales with 90% intervals.",
            ),
        )

    def make_decoder(self, out_features: int, *, hidden: Sequence[int] = (), activation: str = "relu") -> nn.Module:
        """:class:`ARDDecoder`: the decoder after its first weight matrix (held by this prior).

        With ``hidden`` empty it is Bayesian PCA's bias, and ``width`` must equal
        ``out_features``; otherwise ``width`` is the first hidden width and the remaining
        ``hidden[1:]`` follow.
        """
        hidden = tuple(hidden)
        expected = hidden[0] if hidden else out_features
        if self.width != expected:
            raise ValueError(
                f"ARDPrior(width={self.width}) needs a decoder whose first layer has width {self.width}; hidden={hidden} with out_features={out_features} gives {expected}. Build the prior with width={expected}."
            )
        return ARDDecoder(self.width, out_features if hidden else None, hidden=hidden[1:], activation=activation)

    def to_config(self) -> dict[str, Any]:
        return {
            "type": "ARDPrior",
            "num_factors": self.num_factors,
            "width": self.width,
            "scale_prior": self.scale_prior.to_config(),
            "weight_init_scale": self.weight_init_scale,
        }


@register
class ARDDecoder(nn.Module):
    r"""The decoder after its first weight matrix, whose weights :class:`ARDPrior` holds.

    With ``out_features=None``: :math:`f(u) = u + b` (Bayesian PCA's mean :math:`\mu`;
    with :math:`u = zW` the full decoder is the linear map :math:`zW + b`). Otherwise:
    :math:`f(u) = \mathrm{MLP}(\mathrm{act}(u + b))`, a deep decoder whose first layer
    :math:`\mathrm{act}(zW + b)` has its weights in the prior.

    Parameters
    ----------
    in_features : int
        :math:`H`, equal to the prior's ``width``.
    out_features : int, optional
        Output width; ``None`` means ``in_features`` (bias only).
    hidden : sequence of int, default ()
        Further hidden layers after the first (deep decoder only).
    activation : str, default "relu"
        Nonlinearity after the first layer and the hidden ones (deep decoder only).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int | None = None,
        *,
        hidden: Sequence[int] = (),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        positive_int("in_features", in_features)
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.in_features = in_features
        self.deep = out_features is not None
        self.out_features = positive_int("out_features", out_features) if self.deep else in_features
        self.hidden = tuple(int(h) for h in hidden)
        if self.hidden and not self.deep:
            raise ValueError("ARDDecoder hidden= needs out_features= (a deep decoder); a bias-only decoder has no hidden layers")
        self.activation = activation
        self.bias = nn.Parameter(torch.zeros(in_features))
        if self.deep:
            self.net: nn.Module = nn.Sequential(
                ACTIVATIONS[activation](),
                MLP(in_features, self.out_features, hidden=self.hidden, activation=activation),
            )
        else:
            self.net = nn.Identity()

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.net(u + self.bias)

    def to_config(self) -> dict[str, Any]:
        return {
            "type": "ARDDecoder",
            "in_features": self.in_features,
            "out_features": self.out_features if self.deep else None,
            "hidden": list(self.hidden),
            "activation": self.activation,
        }
