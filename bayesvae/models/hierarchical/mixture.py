r"""A learned mixture-of-Gaussians prior p(z) = sum_k pi_k N(mu_k, diag sigma_k^2)."""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from bayesvae._checks import positive_int
from bayesvae._registry import register
from bayesvae.models.priors import LocalSite, Prior, Z

__all__ = ["MixturePrior"]

#: Floor of the components' scales.
MIN_SCALE = 1e-3


@register
class MixturePrior(Prior):
    r"""A :math:`K`-component diagonal Gaussian mixture prior with learned parameters.

    .. math::

        p_\lambda(z_n) = \sum_{k=1}^K \pi_k\,
            \mathcal N\big(z_n;\ \mu_k, \mathrm{diag}\,\sigma_k^2\big),

    with :math:`\pi = \mathrm{softmax}(\alpha)`, :math:`\sigma_k = \mathrm{softplus}(\rho_k)
    + 10^{-3}`. :math:`\lambda = (\alpha, \mu, \rho)` are point-estimated with the decoder
    (empirical Bayes, as the VampPrior's pseudo-inputs are [1]_); the single site ``"z"`` is
    local, with the component marginalized out, so a ``"normal"`` encoder head fits it.

    Parameters
    ----------
    latent_dim : int
        :math:`L`.
    components : int, default 10
        :math:`K`.
    init_spread : float, default 1.0
        Standard deviation of the random initial means (scales start at 1).

    Notes
    -----
    **The KL is Monte Carlo.** No closed form of :math:`\mathrm{KL}(q(z \mid x) \,\|\,
    \sum_k \pi_k \mathcal N_k)` exists and none is registered in torch, so
    ``TraceMeanField_ELBO`` falls back to the one-sample estimate
    :math:`\log q(z \mid x) - \log p(z)` at :math:`z \sim q` at this site (verified: on a
    fixed seed its loss equals ``Trace_ELBO``'s). Any report of the KL of this prior is a
    Monte Carlo estimate. ``"z"`` is in the data plate and rescaled by :math:`N / B` under
    minibatching.

    We chose a mixture of Gaussians over the VampPrior [1]_ (a mixture of the encoder's
    posteriors at learned pseudo-inputs) because the VampPrior puts the encoder -- part of
    the guide -- inside the prior, which the package's one-way imports (models never import
    guides) forbid; the mixture has the same multimodal family with free component
    parameters.

    References
    ----------
    .. [1] J. M. Tomczak and M. Welling, "VAE with a VampPrior", AISTATS 2018,
       arXiv:1705.07120.
    .. [2] N. Dilokthanakul et al., "Deep Unsupervised Clustering with Gaussian Mixture
       Variational Autoencoders", arXiv:1611.02648, 2016.

    Examples
    --------
    >>> from bayesvae.models import VAE, Bernoulli
    >>> from bayesvae.nn import MLP
    >>> model = VAE(prior=MixturePrior(2, components=5), likelihood=Bernoulli(), decoder=MLP(2, 64))
    >>> model.sample(4)["z"].shape
    torch.Size([4, 2])
    """

    def __init__(self, latent_dim: int, components: int = 10, *, init_spread: float = 1.0) -> None:
        super().__init__()
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.components = positive_int("components", components)
        if not (isinstance(init_spread, (int, float)) and 0 < init_spread < float("inf")):
            raise ValueError(f"init_spread must be a positive finite number, got {init_spread!r}")
        self.init_spread = float(init_spread)
        self.logits = nn.Parameter(torch.zeros(components))
        self.loc = nn.Parameter(init_spread * torch.randn(components, latent_dim))
        raw1 = float(torch.log(torch.expm1(torch.tensor(1.0 - MIN_SCALE, device="cpu"))))  # CPU: also under the meta device
        self.raw_scale = nn.Parameter(torch.full((components, latent_dim), raw1))

    @property
    def weights(self) -> torch.Tensor:
        r"""Mixing weights :math:`\pi`, shape ``(K,)``."""
        return self.logits.softmax(-1)

    @property
    def scale(self) -> torch.Tensor:
        r"""Component scales :math:`\sigma`, shape ``(K, L)``."""
        return F.softplus(self.raw_scale) + MIN_SCALE

    def distribution(self, batch_size: int) -> dist.TorchDistribution:
        """The mixture for ``batch_size`` points; batch shape ``(batch_size,)``, event ``(L,)``."""
        K, L = self.components, self.latent_dim
        mix = dist.Categorical(logits=self.logits.expand(batch_size, K))
        comp = dist.Normal(
            self.loc.expand(batch_size, K, L), self.scale.expand(batch_size, K, L)
        ).to_event(1)
        return dist.MixtureSameFamily(mix, comp)

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

    def to_config(self) -> dict[str, Any]:
        return {
            "type": "MixturePrior",
            "latent_dim": self.latent_dim,
            "components": self.components,
            "init_spread": self.init_spread,
        }
