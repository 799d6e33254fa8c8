"""The report's compute step: every number and result object the sections show, computed once.

Sections (:mod:`bayesvae.report.sections`) only draw and describe what :func:`compute`
returns, so what a report says can be checked on the :class:`ReportResults` alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ReportResults", "compute", "settings"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportResults:
    """Everything a report shows.

    Attributes
    ----------
    num_rows, num_columns : int
        Shape of the data.
    num_samples, ppc_samples, seed : int
        The report's settings.
    metrics : pandas.DataFrame
        One row of :func:`bayesvae.evaluation.evaluate`.
    pareto : ParetoDiagnostic
        Per-point Pareto-k-hat of the importance weights.
    ppc : PPCResult
        Posterior predictive p-values.
    history : pandas.DataFrame or None
        Training history (``None`` for a ``(model, guide)`` pair).
    latents : LatentSummary
        Posterior means, KL per unit, activity.
    labels : ndarray or None
        Labels colouring the embedding (``None`` when absent or of the wrong length).
    traversals : Traversals or None
        Decoded traversals (a :class:`~bayesvae.VAE` only).
    reconstructions : Reconstructions or None
        Decoded posterior means (a VAE whose guide has ``posterior``).
    prior_samples : PriorSamples or None
        Decoded prior draws (a VAE only).
    prior_summaries : tuple of PriorSummary
        The prior's own sections (:meth:`~bayesvae.models.Prior.summaries`).
    global_intervals : pandas.DataFrame or None
        Intervals of the global sites (a guide with a mean-field global part).
    settings : dict
        Model, guide, fit and report settings and package versions (JSON-serializable).
    columns : dict of str to DataFrame or None
        For a table model scored on a DataFrame: ``"log_likelihood"`` (each column's share)
        and ``"ppc"`` (the per-column-type check of :func:`bayesvae.tabular.ppc_summary`).
    """

    num_rows: int
    num_columns: int
    num_samples: int
    ppc_samples: int
    seed: int
    metrics: pd.DataFrame
    pareto: Any
    ppc: Any
    history: pd.DataFrame | None
    latents: Any
    labels: np.ndarray | None
    traversals: Any
    reconstructions: Any
    prior_samples: Any
    prior_summaries: tuple[Any, ...]
    global_intervals: pd.DataFrame | None
    settings: dict[str, Any]
    columns: dict[str, pd.DataFrame] | None = None


def _is_vae(model: Any) -> bool:
    return hasattr(model, "reconstruct") and hasattr(getattr(model, "prior", None), "decoder_input")


def _checked_labels(labels: Any, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if len(labels) != n:
        logger.warning("labels have %d entries but the data %d rows; the embedding is drawn without them", len(labels), n)
        return None
    return labels


def _decoded(view: Any, inputs: Any, latents: Any, *, seed: int) -> tuple[Any, Any, Any]:
    """Traversals, reconstructions and prior samples of a VAE (``None`` otherwise)."""
    from bayesvae.diagnostics.decoded import (
        latent_traversals,
        prior_samples,
        reconstructions,
        sample_groups,
    )

    if not _is_vae(view.model):
        return None, None, None
    traversals = latent_traversals(view, inputs.x, summary=latents)
    recon = reconstructions(view, inputs.x) if hasattr(view.guide, "posterior") else None
    samples = prior_samples(view, seed=seed, groups=sample_groups(inputs.groups, 25))
    return traversals, recon, samples


def _prior_parts(view: Any, inputs: Any, *, seed: int) -> tuple[tuple[Any, ...], pd.DataFrame | None]:
    """The prior's own summaries and the intervals of the global sites."""
    from bayesvae.diagnostics.decoded import global_site_intervals

    prior = getattr(view.model, "prior", None)
    ask = getattr(prior, "summaries", None)
    summaries = tuple(ask(inputs.guide, inputs.x, groups=inputs.groups)) if callable(ask) else ()
    has_globals = bool(getattr(prior, "global_sites", lambda: ())())
    intervals = None
    if has_globals and getattr(view.guide, "globals", None) is not None:
        intervals = global_site_intervals(view, seed=seed)
    return summaries, intervals


def compute(
    fit: Any, x: Any, *, num_samples: int, seed: int, groups: Any, labels: Any, ppc_samples: int
) -> ReportResults:
    """Evaluate, diagnose and summarize a fit on ``x``: the report's compute step.

    The order of the steps is fixed (draws that share torch's global RNG follow each other
    in the same order every time), so the same seed gives the same report.
    """
    from bayesvae.diagnostics import latent_summary, posterior_predictive_check, psis_diagnostic
    from bayesvae.diagnostics.decoded import fit_parts
    from bayesvae.evaluation import evaluate
    from bayesvae.scoring import prepare, resolve

    model, guide = resolve(fit)
    rows = prepare(model, guide, x, groups=groups)  # validated once; x_t, g_t on the model's device
    x_t, g_t = rows.x, rows.covariates.get("groups")
    inputs = SimpleNamespace(model=model, guide=guide, x=x_t, groups=g_t)
    view = fit_parts(fit)
    n, d = x_t.shape
    metrics = evaluate(fit, x_t, num_samples=num_samples, seed=seed, groups=g_t)
    pareto = psis_diagnostic(fit, x_t, num_samples=num_samples, seed=seed, groups=g_t)
    # the original data, so that a DataFrame's column names label the statistics
    ppc = posterior_predictive_check(fit, x, num_samples=ppc_samples, seed=seed + 1, groups=groups)
    history = getattr(view, "history", None)
    latents = latent_summary((model, guide), x_t, seed=seed, groups=g_t)
    traversals, recon, samples = _decoded(view, inputs, latents, seed=seed)
    summaries, intervals = _prior_parts(view, inputs, seed=seed)
    if labels is None:
        labels = getattr(x, "labels", None)
    return ReportResults(
        num_rows=int(n),
        num_columns=int(d),
        num_samples=num_samples,
        ppc_samples=ppc_samples,
        seed=seed,
        metrics=metrics,
        pareto=pareto,
        ppc=ppc,
        history=history if isinstance(history, pd.DataFrame) and len(history) else None,
        latents=latents,
        labels=_checked_labels(labels, int(n)),
        traversals=traversals,
        reconstructions=recon,
        prior_samples=samples,
        prior_summaries=summaries,
        global_intervals=intervals,
        settings=settings(view, inputs, num_samples, ppc_samples, seed),
        columns=_columns(fit, x, ppc_samples=ppc_samples, seed=seed),
    )


def _columns(fit: Any, x: Any, *, ppc_samples: int, seed: int) -> dict[str, pd.DataFrame] | None:
    """Per-column held-out log-likelihood and posterior predictive check of a table model."""
    from bayesvae.evaluation import per_column_log_likelihood

    per_column = per_column_log_likelihood(fit, x, seed=seed)
    if per_column is None:
        return None
    from bayesvae.tabular import ppc_summary

    ll = pd.DataFrame({"column": list(per_column), "log_likelihood": list(per_column.values())})
    return {"log_likelihood": ll, "ppc": ppc_summary(fit, x, num_replicates=min(ppc_samples, 50), seed=seed + 3)}


def version() -> str:
    """The installed bayesvae version."""
    import bayesvae

    return bayesvae.__version__


def settings(fit: Any, inputs: Any, num_samples: int, ppc_samples: int, seed: int) -> dict[str, Any]:
    """Model, guide, fit and report settings and the versions of the packages used."""
    import pyro
    import torch

    from bayesvae.diagnostics.inference_data import require_arviz

    def describe(part: Any) -> Any:
        return part.to_config() if hasattr(part, "to_config") else type(part).__name__

    config = getattr(fit, "config", None)
    return {
        "model": describe(inputs.model),
        "guide": describe(inputs.guide),
        "fit": config.to_dict() if config is not None else None,
        "data": {"rows": int(inputs.x.shape[0]), "columns": int(inputs.x.shape[1])},
        "report": {"num_samples": num_samples, "ppc_samples": ppc_samples, "seed": seed},
        "versions": {
            "bayesvae": version(),
            "torch": str(torch.__version__),
            "pyro": pyro.__version__,
            "arviz": require_arviz().__version__,
        },
    }
