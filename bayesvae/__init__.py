"""bayesvae: variational autoencoders as Bayesian latent-variable models, fitted with Pyro.

A model is a Pyro model function p(x, z) = p(z) p(x | z) (:mod:`bayesvae.models`); a guide is
a variational family q(z | x) (:mod:`bayesvae.guides`); :func:`fit` runs stochastic
variational inference; evaluation and diagnostics read traces of the same two functions.
"""

from __future__ import annotations

__version__ = "0.1.0"

from bayesvae import datasets  # noqa: E402
from bayesvae.guides import AmortizedGuide, MeanFieldGuide
from bayesvae.infer import DivergenceError, FitConfig, FitResult, evaluate_elbo, fit, load
from bayesvae.models import (
    VAE,
    Bernoulli,
    ContinuousBernoulli,
    Gaussian,
    GaussianPrior,
    Poisson,
)
from bayesvae.nn import MLP

__all__ = [
    "__version__",
    "datasets",
    "VAE",
    "GaussianPrior",
    "Bernoulli",
    "ContinuousBernoulli",
    "Gaussian",
    "Poisson",
    "MLP",
    "AmortizedGuide",
    "MeanFieldGuide",
    "fit",
    "load",
    "evaluate_elbo",
    "FitResult",
    "FitConfig",
    "DivergenceError",
]
