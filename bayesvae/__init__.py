"""bayesvae: variational autoencoders as Bayesian latent-variable models, fitted with Pyro.

A model is a Pyro model function p(x, z) = p(z) p(x | z) (:mod:`bayesvae.models`); a guide is
a variational family q(z | x) (:mod:`bayesvae.guides`); :func:`fit` runs stochastic
variational inference; :mod:`bayesvae.evaluation`, :mod:`bayesvae.diagnostics` and
:func:`compare` read traces of the same two functions.

The names below are imported on first use (PEP 562 module ``__getattr__``): ``import
bayesvae`` itself imports neither torch nor Pyro, so the command line answers ``--help``
at once; ``bayesvae.fit`` or ``from bayesvae import VAE`` imports what it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Where each top-level name lives.
_EXPORTS = {
    # models
    "VAE": "bayesvae.models",
    "GaussianPrior": "bayesvae.models",
    "IBPPrior": "bayesvae.models",
    "ARDPrior": "bayesvae.models",
    "ARDDecoder": "bayesvae.models",
    "GroupPrior": "bayesvae.models",
    "HierarchicalLatentPrior": "bayesvae.models",
    "MixturePrior": "bayesvae.models",
    "VampPrior": "bayesvae.models",
    "ScalePrior": "bayesvae.models",
    "Bernoulli": "bayesvae.models",
    "ContinuousBernoulli": "bayesvae.models",
    "Gaussian": "bayesvae.models",
    "IsotropicGaussian": "bayesvae.models",
    "Poisson": "bayesvae.models",
    "NegativeBinomial": "bayesvae.models",
    "Categorical": "bayesvae.models",
    "Columns": "bayesvae.models",
    "ppca": "bayesvae.models",
    "factor_analysis": "bayesvae.models",
    "MLP": "bayesvae.nn",
    # guides
    "AmortizedGuide": "bayesvae.guides",
    "MeanFieldGuide": "bayesvae.guides",
    "ExactPosteriorGuide": "bayesvae.guides",
    # inference
    "fit": "bayesvae.infer",
    "load": "bayesvae.infer",
    "evaluate_elbo": "bayesvae.infer",
    "FitResult": "bayesvae.infer",
    "FitConfig": "bayesvae.infer",
    "DivergenceError": "bayesvae.infer",
    "StagedLR": "bayesvae.infer",
    "IWAE_ELBO": "bayesvae.objectives",
    "LinearWarmup": "bayesvae.objectives",
    # tables
    "impute": "bayesvae.tabular",
}

#: Subpackages reachable as attributes without an explicit import.
_SUBMODULES = ("datasets", "evaluation", "tabular")

# written out (not derived from _EXPORTS) so that linters see the names
__all__ = [
    "__version__",
    "datasets",
    "evaluation",
    "VAE",
    "GaussianPrior",
    "IBPPrior",
    "ARDPrior",
    "ARDDecoder",
    "GroupPrior",
    "HierarchicalLatentPrior",
    "MixturePrior",
    "VampPrior",
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
    "AmortizedGuide",
    "MeanFieldGuide",
    "ExactPosteriorGuide",
    "fit",
    "load",
    "evaluate_elbo",
    "FitResult",
    "FitConfig",
    "DivergenceError",
    "StagedLR",
    "IWAE_ELBO",
    "LinearWarmup",
    "impute",
    "tabular",
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"bayesvae.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bayesvae' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from bayesvae import datasets, evaluation, tabular
    from bayesvae.guides import AmortizedGuide, ExactPosteriorGuide, MeanFieldGuide
    from bayesvae.infer import (
        DivergenceError,
        FitConfig,
        FitResult,
        StagedLR,
        evaluate_elbo,
        fit,
        load,
    )
    from bayesvae.models import (
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
        VampPrior,
        factor_analysis,
        ppca,
    )
    from bayesvae.nn import MLP
    from bayesvae.objectives import IWAE_ELBO, LinearWarmup
    from bayesvae.tabular import impute
