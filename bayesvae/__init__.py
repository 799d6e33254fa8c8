"""bayesvae: variational autoencoders as Bayesian latent-variable models, fitted with Pyro.

A model is a Pyro model function p(x, z) = p(z) p(x | z) (:mod:`bayesvae.models`); a guide is
a variational family q(z | x) (:mod:`bayesvae.guides`); :func:`fit` runs stochastic
variational inference; :mod:`bayesvae.evaluation`, :mod:`bayesvae.diagnostics` and
:func:`compare` read traces of the same two functions.
"""

from __future__ import annotations

__version__ = "0.1.0"

from bayesvae import datasets, evaluation  # noqa: E402
from bayesvae.guides import (  # noqa: E402
    AmortizedGuide,
    ExactPosteriorGuide,
    MeanFieldGuide,
)
from bayesvae.infer import (  # noqa: E402
    DivergenceError,
    FitConfig,
    FitResult,
    evaluate_elbo,
    fit,
    load,
)
from bayesvae.models import (  # noqa: E402
    VAE,
    ARDDecoder,
    ARDPrior,
    Bernoulli,
    Categorical,
    Columns,
    ContinuousBernoulli,
    Gaussian,
    GaussianPrior,
    GroupPrior,
    HierarchicalLatentPrior,
    IBPPrior,
    IsotropicGaussian,
    MixturePrior,
    NegativeBinomial,
    Poisson,
    ScalePrior,
    factor_analysis,
    ppca,
)
from bayesvae.nn import MLP  # noqa: E402
from bayesvae.objectives import IWAE_ELBO  # noqa: E402

__all__ = [
    "__version__",
    "datasets",
    "evaluation",
    # models
    "VAE",
    "GaussianPrior",
    "IBPPrior",
    "ARDPrior",
    "ARDDecoder",
    "GroupPrior",
    "HierarchicalLatentPrior",
    "MixturePrior",
    "ScalePrior",
    "Bernoulli",
    "ContinuousBernoulli",
    "Gaussian",
    "IsotropicGaussian",
    "Poisson",
    "NegativeBinomial",
    "Categorical",
    "Columns",
    "ppca",
    "factor_analysis",
    "MLP",
    # guides
    "AmortizedGuide",
    "MeanFieldGuide",
    "ExactPosteriorGuide",
    # inference
    "fit",
    "load",
    "evaluate_elbo",
    "FitResult",
    "FitConfig",
    "DivergenceError",
    "IWAE_ELBO",
]
