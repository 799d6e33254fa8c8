"""Closed forms for the evaluation tests: a linear-Gaussian model, its exact posterior and log p(x).

Model: z ~ N(0, s^2 I_L), x | z ~ N(W z + mu, sigma^2 I_D). Then
    p(x)     = N(mu, s^2 W W^T + sigma^2 I)
    p(z | x) = N(C W^T (x - mu) / sigma^2, C),   C = (W^T W / sigma^2 + I / s^2)^{-1}
(Tipping & Bishop 1999, eqs. 6-7). Written here so the tests do not depend on bayesvae.models.linear.
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

import bayesvae
from bayesvae.guides._parts import MIN_SCALE
from bayesvae.models.priors import GlobalSite, LocalSite, Prior
from bayesvae.models.vae import data_plate

DTYPE = torch.float64


class ScaledGaussianPrior(Prior):
    """z ~ N(0, scale^2 I): a prior to swap in for GaussianPrior."""

    def __init__(self, latent_dim: int, scale: float) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.scale = float(scale)

    def local_sites(self):
        return (LocalSite("z", self.latent_dim, "normal"),)

    def sample_locals(self, batch_size, globals_, *, like, groups=None):
        loc = like.new_zeros(()).expand(batch_size, self.latent_dim)
        return {"z": pyro.sample("z", dist.Normal(loc, self.scale).to_event(1))}

    def to_config(self) -> dict[str, Any]:
        return {"type": "ScaledGaussianPrior", "latent_dim": self.latent_dim, "scale": self.scale}


class GlobalScalePrior(Prior):
    """tau ~ LogNormal(0, 0.5) (global), z_n | tau ~ N(0, tau^2 I) (local)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def global_sites(self):
        return (GlobalSite("tau", (), "lognormal", 0.0, 0.1),)

    def sample_globals(self, *, like):
        return {"tau": pyro.sample("tau", dist.LogNormal(like.new_zeros(()), 0.5))}

    def local_sites(self):
        return (LocalSite("z", self.latent_dim, "normal"),)

    def sample_locals(self, batch_size, globals_, *, like, groups=None):
        loc = like.new_zeros(()).expand(batch_size, self.latent_dim)
        # tau is () here, or (particles, 1) under Pyro's vectorized particles: broadcast over z's event
        return {"z": pyro.sample("z", dist.Normal(loc, globals_["tau"].unsqueeze(-1)).to_event(1))}

    def to_config(self) -> dict[str, Any]:
        return {"type": "GlobalScalePrior", "latent_dim": self.latent_dim}


def linear_vae(W: torch.Tensor, mu: torch.Tensor, sigma: float, prior: Prior | None = None) -> bayesvae.VAE:
    """A bayesvae VAE with an affine decoder W z + mu and fixed noise sigma, in float64."""
    d, k = W.shape
    decoder = bayesvae.MLP(k, d, hidden=()).to(DTYPE)
    with torch.no_grad():
        decoder.net[0].weight.copy_(W)
        decoder.net[0].bias.copy_(mu)
    model = bayesvae.VAE(
        prior=prior or bayesvae.GaussianPrior(k), likelihood=bayesvae.Gaussian(scale=sigma), decoder=decoder
    )
    return model.to(DTYPE)


def posterior(W, mu, sigma, x, prior_scale=1.0):
    """Exact posterior mean (n, L) and covariance (L, L)."""
    k = W.shape[1]
    cov = torch.linalg.inv(W.T @ W / sigma**2 + torch.eye(k, dtype=W.dtype) / prior_scale**2)
    mean = (x - mu) @ W @ cov / sigma**2
    return mean, cov


def exact_log_px(W, mu, sigma, x, prior_scale=1.0):
    """log N(x | mu, s^2 W W^T + sigma^2 I), per row."""
    d = W.shape[0]
    cov = prior_scale**2 * W @ W.T + sigma**2 * torch.eye(d, dtype=W.dtype)
    return dist.MultivariateNormal(mu, covariance_matrix=cov).log_prob(x)


class ExactPosteriorGuide(nn.Module):
    """q(z | x) = p(z | x) of the linear-Gaussian model (full covariance)."""

    def __init__(self, W, mu, sigma, prior_scale=1.0) -> None:
        super().__init__()
        self.register_buffer("W", W.clone())
        self.register_buffer("mu", mu.clone())
        self.sigma = sigma
        self.prior_scale = prior_scale

    def forward(self, x, *, index=None, num_data=None):
        mean, cov = posterior(self.W, self.mu, self.sigma, x, self.prior_scale)
        with data_plate(x.shape[0], index, num_data):
            pyro.sample("z", dist.MultivariateNormal(mean, covariance_matrix=cov))


class GlobalExactGuide(nn.Module):
    """tau ~ LogNormal(m, s); z_n | tau ~ exact posterior of the model given tau."""

    def __init__(self, W, mu, sigma, loc, scale) -> None:
        super().__init__()
        self.register_buffer("W", W.clone())
        self.register_buffer("mu", mu.clone())
        self.sigma = sigma
        self.loc, self.scale = float(loc), float(scale)

    def forward(self, x, *, index=None, num_data=None):
        tau = pyro.sample("tau", dist.LogNormal(x.new_tensor(self.loc), self.scale))
        mean, cov = posterior(self.W, self.mu, self.sigma, x, tau)
        with data_plate(x.shape[0], index, num_data):
            pyro.sample("z", dist.MultivariateNormal(mean, covariance_matrix=cov))


def inv_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


def diagonal_guide(model, W, mu, sigma, *, scale=None, shift=None, ignore_x=False):
    """An AmortizedGuide(hidden=()) set to the exact posterior mean and the given diagonal scale.

    scale: (L,) standard deviations (default sqrt(diag C)); shift: (L,) added to the mean;
    ignore_x: zero the encoder weights (q the same for every x).
    """
    guide = bayesvae.AmortizedGuide(model, hidden=()).to(DTYPE)
    k = W.shape[1]
    _, cov = posterior(W, mu, sigma, mu[None])
    A = (W @ cov / sigma**2).T  # mean = A (x - mu)
    sd = cov.diagonal().sqrt() if scale is None else torch.as_tensor(scale, dtype=DTYPE)
    lin = guide.heads["z"].linear
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        if not ignore_x:
            lin.weight[:k] = A
            lin.bias[:k] = -A @ mu
        if shift is not None:
            lin.bias[:k] += torch.as_tensor(shift, dtype=DTYPE)
        lin.bias[k:] = inv_softplus(sd - MIN_SCALE)
    return guide


def linear_problem(n=200, d=5, k=2, sigma=0.5, seed=0, orthogonal=False):
    """Random W, mu and n rows drawn from the model (float64)."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, k, generator=g, dtype=DTYPE)
    if orthogonal:
        W = torch.linalg.qr(W)[0] * torch.linspace(2.0, 1.0, k, dtype=DTYPE)
    mu = torch.randn(d, generator=g, dtype=DTYPE)
    z = torch.randn(n, k, generator=g, dtype=DTYPE)
    x = z @ W.T + mu + sigma * torch.randn(n, d, generator=g, dtype=DTYPE)
    return W, mu, sigma, x


def softplus_scale(raw: torch.Tensor) -> torch.Tensor:
    return F.softplus(raw) + MIN_SCALE
