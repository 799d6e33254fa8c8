"""Generative models: priors, likelihoods and the VAE that combines them."""

from bayesvae.models.likelihoods import (
    Bernoulli,
    ContinuousBernoulli,
    Gaussian,
    Likelihood,
    Poisson,
)
from bayesvae.models.priors import GaussianPrior, GlobalSite, LocalSite, Prior
from bayesvae.models.vae import VAE, data_plate

__all__ = [
    "VAE",
    "data_plate",
    "Prior",
    "GlobalSite",
    "LocalSite",
    "GaussianPrior",
    "Likelihood",
    "Bernoulli",
    "ContinuousBernoulli",
    "Gaussian",
    "Poisson",
]
