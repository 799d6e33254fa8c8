r"""The VampPrior: a mixture of the encoder's posteriors at learned pseudo-inputs."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from bayesvae._checks import positive_int
from bayesvae._registry import register
from bayesvae.models.priors import LocalSite, Prior, Z

__all__ = ["VampPrior"]

#: Pseudo-inputs constrained to (0, 1) are initialized from data clamped to [EPS, 1 - EPS].
EPS = 1e-3


@register
class VampPrior(Prior):
    r"""Variational mixture of posteriors prior of Tomczak & Welling [1]_.

    .. math::

        p_\lambda(z_n) = \frac1K \sum_{k=1}^K q_\phi(z_n \mid u_k),

    with :math:`K` learned pseudo-inputs :math:`u_k` pushed through the *same* amortized
    encoder :math:`q_\phi(z \mid x)` that the guide uses (the approximation to the optimal,
    aggregate-posterior prior, eq. 9 of [1]_). The single site ``"z"`` is local, so the
    guide's ``"normal"`` head fits it; the pseudo-inputs are point-estimated with the decoder.

    Parameters
    ----------
    latent_dim : int
        :math:`L`, the width of :math:`z`.
    data_dim : int
        :math:`D`, the width of a pseudo-input (the data's width).
    components : int, default 50
        :math:`K`, the number of pseudo-inputs.
    unit_interval : bool, default False
        Constrain the pseudo-inputs to (0, 1) by a sigmoid (images with pixels in [0, 1]);
        otherwise they are unconstrained reals.

    Notes
    -----
    **The encoder.** Models never import guides, so the prior does not build an encoder:
    :class:`~bayesvae.guides.AmortizedGuide` binds its own (``prior.bind_encoder(guide.posterior)``)
    when it is built for a model with this prior. A hand-written guide calls
    :meth:`bind_encoder` itself. The encoder is held by reference, not as a submodule, so its
    weights are saved once (with the guide), and loading a fit rebinds it.

    **The KL is Monte Carlo.** There is no closed-form :math:`\mathrm{KL}(q(z \mid x) \,\|\,
    \frac1K \sum_k q(z \mid u_k))`, and none is registered, so ``TraceMeanField_ELBO`` falls
    back to the one-sample :math:`\log q(z \mid x) - \log p(z)` at this site (tested: its
    loss equals ``Trace_ELBO``'s on a fixed seed). Every KL reported for this prior is a
    Monte Carlo estimate. Each model call runs the encoder on the :math:`K` pseudo-inputs
    and scores :math:`z` under all :math:`K` components (cost :math:`O(BKL)`).

    **Initialization.** :meth:`init_from` copies :math:`K` distinct training rows into the
    pseudo-inputs (sec. 3.2 of [1]_ initializes them at random; rows start the mixture at the
    aggregate posterior's support). Without it the pseudo-inputs start at
    :math:`\mathcal N(0, 0.01)` (``unit_interval``: its sigmoid, about 0.5).

    References
    ----------
    .. [1] J. M. Tomczak and M. Welling, "VAE with a VampPrior", AISTATS 2018,
       arXiv:1705.07120.

    Examples
    --------
    >>> import torch
    >>> from bayesvae.models import VAE, Bernoulli
    >>> from bayesvae.guides import AmortizedGuide
    >>> from bayesvae.nn import MLP
    >>> prior = VampPrior(2, data_dim=64, components=5, unit_interval=True)
    >>> model = VAE(prior=prior, likelihood=Bernoulli(), decoder=MLP(2, 64))
    >>> guide = AmortizedGuide(model, hidden=(32,))  # binds its encoder to the prior
    >>> prior.init_from(torch.rand(100, 64)).pseudo_inputs.shape
    torch.Size([5, 64])
    """

    def __init__(self, latent_dim: int, data_dim: int, components: int = 50, *, unit_interval: bool = False) -> None:
        super().__init__()
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.data_dim = positive_int("data_dim", data_dim)
        self.components = positive_int("components", components)
        if not isinstance(unit_interval, bool):
            raise TypeError(f"unit_interval must be a bool, got {type(unit_interval).__name__}")
        self.unit_interval = unit_interval
        self.raw_pseudo = nn.Parameter(0.1 * torch.randn(self.components, self.data_dim))
        # Held outside the module tree: the encoder's weights belong to the guide.
        self._encoder: Callable[[torch.Tensor], Any] | None = None

    # The encoder ---------------------------------------------------------------------------
    def bind_encoder(self, encoder: Callable[[torch.Tensor], Any]) -> None:
        """Use ``encoder`` as :math:`q_\\phi(\\cdot \\mid u)`.

        Parameters
        ----------
        encoder : callable
            Maps a batch ``(K, data_dim)`` to the guide's local factors: a distribution for
            ``"z"`` with batch shape ``(K,)`` and event shape ``(latent_dim,)``, or a dict
            holding one under ``"z"`` (what ``AmortizedGuide.posterior`` returns).
        """
        if not callable(encoder):
            raise TypeError(f"VampPrior.bind_encoder needs a callable x -> q(z | x), got {type(encoder).__name__}")
        self._encoder = encoder

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        r"""The pseudo-inputs :math:`u_{1:K}`, shape ``(K, data_dim)`` (in (0, 1) with ``unit_interval``)."""
        return torch.sigmoid(self.raw_pseudo) if self.unit_interval else self.raw_pseudo

    @torch.no_grad()
    def init_from(self, x: Any, *, seed: int = 0) -> VampPrior:
        """Set the pseudo-inputs to ``components`` distinct rows of ``x`` drawn without replacement.

        Parameters
        ----------
        x : array-like of shape (n, data_dim)
            Training rows, ``n >= components`` (in [0, 1] with ``unit_interval``; clamped to
            ``[1e-3, 1 - 1e-3]`` before the logit).
        seed : int, default 0
            Seed of the row choice (a private generator; the global RNG is untouched).

        Returns
        -------
        VampPrior
            ``self``.
        """
        x = torch.as_tensor(x)
        if x.dim() != 2 or x.shape[1] != self.data_dim:
            raise ValueError(f"VampPrior.init_from needs rows of width data_dim={self.data_dim}, got shape {tuple(x.shape)}")
        if x.shape[0] < self.components:
            raise ValueError(f"VampPrior.init_from needs at least components={self.components} rows, got {x.shape[0]}")
        if not torch.isfinite(x).all():
            raise ValueError("VampPrior.init_from got non-finite values in x")
        if self.unit_interval and (x.min() < 0 or x.max() > 1):
            raise ValueError(
                f"VampPrior(unit_interval=True) pseudo-inputs live in (0, 1), but x has values in [{float(x.min()):g}, {float(x.max()):g}]. Use unit_interval=False for real-valued data."
            )
        rows = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[: self.components]
        u = x[rows].to(self.raw_pseudo)
        self.raw_pseudo.copy_(torch.logit(u.clamp(EPS, 1 - EPS)) if self.unit_interval else u)
        return self

    def component_distribution(self) -> dist.TorchDistribution:
        r""":math:`q_\phi(z \mid u_k)` for all :math:`k`: batch shape ``(K,)``, event shape ``(L,)``."""
        if self._encoder is None:
            raise ValueError(
                "VampPrior has no encoder: build the AmortizedGuide for this model first (it binds its encoder), or call prior.bind_encoder(fn) with a function x -> q(z | x)"
            )
        q = self._encoder(self.pseudo_inputs)
        if isinstance(q, dict):
            q = q[Z]
        if tuple(q.batch_shape) != (self.components,) or tuple(q.event_shape) != (self.latent_dim,):
            raise ValueError(
                f"VampPrior's encoder must give batch shape ({self.components},) and event shape ({self.latent_dim},) for the pseudo-inputs, got {tuple(q.batch_shape)} and {tuple(q.event_shape)}"
            )
        return q

    def distribution(self, batch_size: int) -> dist.TorchDistribution:
        """The mixture for ``batch_size`` points: batch shape ``(batch_size,)``, event ``(L,)``."""
        comp = self.component_distribution().expand((batch_size, self.components))
        logits = self.raw_pseudo.new_zeros(()).expand(batch_size, self.components)
        return dist.MixtureSameFamily(dist.Categorical(logits=logits), comp)

    # Prior hooks ---------------------------------------------------------------------------
    def local_sites(self) -> tuple[LocalSite, ...]:
        return (LocalSite(Z, self.latent_dim, "normal"),)

    def sample_locals(
        self,
        batch_size: int,
        globals_: dict[str, torch.Tensor],
        *,
        like: torch.Tensor,
        groups: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        return {Z: pyro.sample(Z, self.distribution(batch_size))}

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(z) = \operatorname{logsumexp}_k \log q(z \mid u_k) - \log K` for ``z`` of shape ``(..., L)``."""
        comp = self.component_distribution()
        return torch.logsumexp(comp.log_prob(z.unsqueeze(-2)), dim=-1) - math.log(self.components)

    def to_config(self) -> dict[str, Any]:
        return {
            "type": "VampPrior",
            "latent_dim": self.latent_dim,
            "data_dim": self.data_dim,
            "components": self.components,
            "unit_interval": self.unit_interval,
        }
