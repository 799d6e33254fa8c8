"""DataFrames in and out: multiple imputation, samples, per-column scores and checks.

The schema and the per-column likelihood are in :mod:`bayesvae.models.columns`
(``Columns.infer(frame)``); this package works with a model fitted on them.
"""

from __future__ import annotations

from bayesvae.tabular.imputation import Imputations, PooledEstimate, impute, pool
from bayesvae.tabular.summaries import column_log_likelihood, ppc_summary, sample_frame

__all__ = [
    "impute",
    "Imputations",
    "pool",
    "PooledEstimate",
    "sample_frame",
    "column_log_likelihood",
    "ppc_summary",
]
