"""Evaluation of fitted latent-variable models from traces of the same model and guide.

* :func:`log_marginal_likelihood` -- importance-weighted :math:`\\log p(x)` per point (IWAE).
* :func:`elbo_decomposition` -- ELBO, reconstruction, KL, and the ELBO-surgery split of the
  KL into mutual information and marginal KL.
* :func:`active_units` -- latent units whose posterior mean moves with the data.
* :func:`amortization_gap` -- amortization and approximation gaps per point.
* :func:`evaluate` -- all of them as one labelled row.
* :func:`importance_log_weights` -- the shared kernel: per-point log weights from traces
  (re-exported from :mod:`bayesvae.scoring`, which holds the estimator with global latents).

Every function accepts a :class:`~bayesvae.FitResult` or a ``(model, guide)`` pair, data as a
tensor, ndarray, DataFrame or :class:`~bayesvae.convention.Rows`, and per-row covariates as
``covariates=`` (or group labels as ``groups=``), validated once by
:func:`bayesvae.scoring.prepare`.
"""

from __future__ import annotations

from bayesvae.evaluation.active_units import ActiveUnits, active_units
from bayesvae.evaluation.elbo_parts import ELBODecomposition, elbo_decomposition
from bayesvae.evaluation.gaps import InferenceGaps, amortization_gap
from bayesvae.evaluation.marginal_likelihood import MarginalLikelihood, log_marginal_likelihood
from bayesvae.evaluation.summary import METRICS, evaluate, evaluate_row, per_column_log_likelihood
from bayesvae.scoring import (
    GlobalDraw,
    ImportanceChunk,
    ImportanceSamples,
    TraceScorer,
    importance_log_weights,
)

__all__ = [
    "per_column_log_likelihood",
    "log_marginal_likelihood",
    "MarginalLikelihood",
    "elbo_decomposition",
    "ELBODecomposition",
    "active_units",
    "ActiveUnits",
    "amortization_gap",
    "InferenceGaps",
    "evaluate",
    "evaluate_row",
    "METRICS",
    "importance_log_weights",
    "ImportanceSamples",
    "ImportanceChunk",
    "GlobalDraw",
    "TraceScorer",
]
