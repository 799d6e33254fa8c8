"""Generative models: priors, likelihoods and the VAE that combines them."""

from bayesvae.models.columns import Columns, Schema, infer_schema
from bayesvae.models.likelihoods import (
    Bernoulli,
    Categorical,
    ContinuousBernoulli,
    Gaussian,
    Likelihood,
    NegativeBinomial,
    Poisson,
    StudentT,
)
from bayesvae.models.priors import GaussianPrior, GlobalSite, LocalSite, Prior, PriorSummary
from bayesvae.models.vae import VAE, data_plate

__all__ = [
    "VAE",
    "data_plate",
    "Prior",
    "GlobalSite",
    "LocalSite",
    "PriorSummary",
    "GaussianPrior",
    "Likelihood",
    "Bernoulli",
    "ContinuousBernoulli",
    "Gaussian",
    "Poisson",
    "NegativeBinomial",
    "Categorical",
    "Columns",
    "Schema",
    "infer_schema",
    "StudentT",
]

from bayesvae.models.linear import (  # noqa: E402
    ConvergenceWarning,
    IsotropicGaussian,
    LinearGaussianEstimate,
    exact_log_likelihood,
    exact_posterior,
    factor_analysis,
    factor_analysis_em,
    linear_parameters,
    model_log_likelihood,
    ppca,
    ppca_mle,
)

__all__ += [
    "IsotropicGaussian",
    "ppca",
    "factor_analysis",
    "linear_parameters",
    "exact_log_likelihood",
    "model_log_likelihood",
    "exact_posterior",
    "ppca_mle",
    "factor_analysis_em",
    "LinearGaussianEstimate",
    "ConvergenceWarning",
]

from bayesvae.models.ibp import (  # noqa: E402
    ConcreteRelaxation,
    ExactBernoulli,
    IBPPrior,
    IndicatorEstimator,
    RelaxedBernoulliKL,
    TemperatureSchedule,
    feature_usage,
)

__all__ += [
    "IBPPrior",
    "IndicatorEstimator",
    "RelaxedBernoulliKL",
    "ConcreteRelaxation",
    "ExactBernoulli",
    "TemperatureSchedule",
    "feature_usage",
]

from bayesvae.models.hierarchical import (  # noqa: E402
    ARDDecoder,
    ARDPrior,
    GroupPrior,
    HierarchicalLatentPrior,
    MixturePrior,
    ScalePrior,
    group_codes,
)

__all__ += [
    "ARDPrior",
    "ARDDecoder",
    "GroupPrior",
    "group_codes",
    "HierarchicalLatentPrior",
    "MixturePrior",
    "ScalePrior",
]

from bayesvae.models.vamp import VampPrior  # noqa: E402

__all__ += ["VampPrior"]
