"""Evaluation of fitted latent-variable models from traces of the same model and guide.

* :func:`log_marginal_likelihood` -- importance-weighted :math:`\\log p(x)` per point (IWAE).
* :func:`elbo_decomposition` -- ELBO, reconstruction, KL, and the ELBO-surgery split of the
  KL into mutual information and marginal KL.
* :func:`active_units` -- latent units whose posterior mean moves with the data.
* :func:`amortization_gap` -- amortization and approximation gaps per point.
* :func:`evaluate` -- all of them as one labelled row.
* :func:`importance_log_weights` -- the shared kernel: per-point log weights from traces
  (see :mod:`bayesvae.evaluation._traces` for the estimator with global latents).
"""

from bayesvae.evaluation._traces import (
    GlobalDraw,
    ImportanceChunk,
    ImportanceSamples,
    TraceScorer,
    importance_log_weights,
)
from bayesvae.evaluation.active_units import ActiveUnits, active_units
from bayesvae.evaluation.elbo_parts import ELBODecomposition, elbo_decomposition
from bayesvae.evaluation.gaps import InferenceGaps, amortization_gap
from bayesvae.evaluation.marginal_likelihood import MarginalLikelihood, log_marginal_likelihood
from bayesvae.evaluation.summary import METRICS, evaluate

__all__ = [
    "log_marginal_likelihood",
    "MarginalLikelihood",
    "elbo_decomposition",
    "ELBODecomposition",
    "active_units",
    "ActiveUnits",
    "amortization_gap",
    "InferenceGaps",
    "evaluate",
    "METRICS",
    "importance_log_weights",
    "ImportanceSamples",
    "ImportanceChunk",
    "GlobalDraw",
    "TraceScorer",
]
