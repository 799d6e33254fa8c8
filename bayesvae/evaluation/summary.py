r"""All the evaluation metrics of one fit on one data set, as one labelled row."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd
import torch
from torch import nn

from bayesvae.convention import Rows
from bayesvae.evaluation.active_units import posterior_means
from bayesvae.evaluation.elbo_parts import elbo_decomposition_from_scorer
from bayesvae.evaluation.gaps import amortization_gap, supports_amortization_gap
from bayesvae.evaluation.marginal_likelihood import (
    marginal_likelihood_from_scorer,
    predictive_from_scorer,
)
from bayesvae.infer import FitResult
from bayesvae.scoring import check_positive_int, prepare, resolve, scoring_session

__all__ = ["evaluate", "evaluate_row", "per_column_log_likelihood", "METRICS"]

#: Columns of :func:`evaluate`, in order, with what each holds.
METRICS: dict[str, str] = {
    "log_px": "mean over points of the IWAE estimate log p(x_n) (num_samples draws)",
    "log_px_se": "its standard error over points",
    "elbo": "mean ELBO per point (reconstruction - kl - global_kl / N)",
    "reconstruction": "mean E_q[log p(x_n | z)]",
    "kl": "mean KL(q(z | x_n) || p(z)) of the local sites",
    "global_kl": "log q(g) - log p(g) of the global draw (0 without global sites)",
    "mutual_information": "I_q(n; z) of the aggregate posterior (ELBO surgery)",
    "marginal_kl": "KL(q(z) || p(z)) of the aggregate posterior",
    "active_units": "latent units with Var_x(E_q[z_u]) > threshold",
    "latent_units": "latent units in all local sites",
    "amortization_gap": "mean local ELBO minus amortized ELBO (NaN unless gaps=True and the fit supports it)",
    "approximation_gap": "mean log p(x) minus local ELBO (NaN unless gaps=True)",
    "num_parameters": "scalar parameters of model and guide",
    "training_seconds": "training time of the fit (NaN for a (model, guide) pair)",
    "num_data": "points evaluated",
    "num_samples": "importance samples per point",
}


def _num_parameters(fit: Any, model: Any, guide: Any) -> int:
    if isinstance(fit, FitResult):
        return fit.num_parameters
    seen: dict[int, torch.Tensor] = {}
    for part in (model, guide):
        if isinstance(part, nn.Module):
            seen.update({id(p): p for p in part.parameters()})
    return sum(p.numel() for p in seen.values())


def evaluate(
    fit: Any,
    x: Any,
    *,
    num_samples: int = 1000,
    seed: int | None = 0,
    groups: Any = None,
    covariates: Mapping[str, Any] | None = None,
    threshold: float = 0.01,
    elbo_samples: int = 100,
    gaps: bool = False,
    gap_points: int | None = 100,
    chunk_size: int | None = None,
    global_draws: int = 10,
) -> pd.DataFrame:
    r"""Every evaluation metric of a fit on data ``x``, as a one-row DataFrame.

    Runs :func:`~bayesvae.evaluation.log_marginal_likelihood` (``num_samples`` draws),
    :func:`~bayesvae.evaluation.elbo_decomposition` (``elbo_samples`` draws, one for the
    mutual information), :func:`~bayesvae.evaluation.active_units` and, with ``gaps=True``,
    :func:`~bayesvae.evaluation.amortization_gap` on the first ``gap_points`` rows.

    Parameters
    ----------
    fit : FitResult or (model, guide)
        A fitted model and guide.
    x : Tensor, ndarray, DataFrame of shape (N, d), or Rows
        Data (usually held out).
    num_samples : int, default 1000
        Importance samples per point for :math:`\log \hat p(x)`.
    seed : int or None, default 0
        Seed for all draws.
    groups : array-like of int, optional
        Group labels, for priors that use them (shorthand for ``covariates={"groups": ...}``).
    covariates : mapping of str to array-like of shape (N, ...), optional
        Per-row side information passed to model and guide as keywords.
    threshold : float, default 0.01
        Activity threshold of the active units.
    elbo_samples : int, default 100
        Draws per point for the ELBO's reconstruction term.
    gaps : bool, default False
        Also compute the amortization and approximation gaps (an optimization per point);
        left NaN for fits :func:`~bayesvae.evaluation.amortization_gap` does not apply to
        (not a :class:`~bayesvae.VAE` with an amortized guide and normal local sites).
    gap_points : int or None, default 100
        Rows used for the gaps (``None``: all).
    chunk_size : int, optional
        Largest number of (sample, point) pairs evaluated at once.
    global_draws : int, default 10
        For a model with global latents, :math:`\log \hat p(x)` is the posterior predictive
        density over this many draws :math:`g_s \sim q(g)`
        (:func:`~bayesvae.evaluation.log_marginal_likelihood`, ``estimand="predictive"``).

    Returns
    -------
    pandas.DataFrame
        One row; the columns are :data:`METRICS`. ``frame.attrs["log_px_per_point"]`` holds
        the per-point :math:`\log \hat p(x_n)` as a float64 numpy array; for a table model
        (a ``Columns`` likelihood with a schema) scored on a DataFrame,
        ``frame.attrs["log_px_per_column"]`` holds each column's share by name.
    """
    row, per_point = evaluate_row(
        fit,
        x,
        num_samples=num_samples,
        seed=seed,
        groups=groups,
        covariates=covariates,
        threshold=threshold,
        elbo_samples=elbo_samples,
        gaps=gaps,
        gap_points=gap_points,
        chunk_size=chunk_size,
        global_draws=global_draws,
    )
    frame = pd.DataFrame([row], columns=list(METRICS))
    frame.attrs["log_px_per_point"] = per_point.double().cpu().numpy()
    per_column = per_column_log_likelihood(fit, x, seed=seed)
    if per_column is not None:
        frame.attrs["log_px_per_column"] = per_column
    return frame


def per_column_log_likelihood(fit: Any, x: Any, *, seed: int | None = 0, num_particles: int = 100) -> dict[str, float] | None:
    """Each column's held-out log-likelihood share (a DataFrame under a table model), else None.

    See :func:`bayesvae.tabular.column_log_likelihood` for the estimator.
    """
    model, _ = resolve(fit)
    if not isinstance(x, pd.DataFrame) or getattr(getattr(model, "likelihood", None), "schema", None) is None:
        return None
    from bayesvae.tabular import column_log_likelihood

    series = column_log_likelihood(fit, x, num_particles=num_particles, seed=0 if seed is None else seed)
    return {str(k): float(v) for k, v in series.items()}


def _check_arguments(
    num_samples: int, elbo_samples: int, gap_points: int | None, threshold: float
) -> None:
    check_positive_int("num_samples", num_samples)
    check_positive_int("elbo_samples", elbo_samples)
    if gap_points is not None:
        check_positive_int("gap_points", gap_points)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0:
        raise ValueError(f"threshold must be a non-negative number, got {threshold!r}")


def evaluate_row(
    fit: Any,
    x: Any,
    *,
    num_samples: int = 1000,
    seed: int | None = 0,
    groups: Any = None,
    covariates: Mapping[str, Any] | None = None,
    threshold: float = 0.01,
    elbo_samples: int = 100,
    gaps: bool = False,
    gap_points: int | None = 100,
    chunk_size: int | None = None,
    global_draws: int = 10,
) -> tuple[dict[str, float], torch.Tensor]:
    r"""The metrics of :func:`evaluate` as a plain row, with the per-point :math:`\log \hat p(x_n)`.

    Takes the arguments of :func:`evaluate`. :func:`bayesvae.compare.compare` builds its
    table from these rows (and pairs the per-point values across models).

    Returns
    -------
    row : dict of str to float
        One value per column of :data:`METRICS`.
    per_point : Tensor of shape (N,)
        :math:`\log \hat p(x_n)`, the IWAE estimate of every point.
    """
    model, guide = resolve(fit)
    _check_arguments(num_samples, elbo_samples, gap_points, threshold)
    rows = prepare(model, guide, x, groups=groups, covariates=covariates)
    with scoring_session(model, guide, rows, seed=seed) as scorer:
        if scorer.global_sites:  # held-out: the posterior predictive density, not the joint bound
            lml = predictive_from_scorer(scorer, num_samples, global_draws, chunk_size=chunk_size)
        else:
            lml = marginal_likelihood_from_scorer(scorer, scorer.draw_globals(), num_samples, chunk_size=chunk_size)
    with scoring_session(model, guide, rows, seed=seed) as scorer:
        draw = scorer.draw_globals()
        parts = elbo_decomposition_from_scorer(scorer, draw, elbo_samples, 1, chunk_size)
        means, _ = posterior_means(scorer, draw, 1, chunk_size)
    variance = {k: v.double().var(0, unbiased=False) for k, v in means.items()}
    summary = parts.summary()
    row: dict[str, float] = {
        "log_px": lml.mean,
        "log_px_se": lml.se,
        "elbo": summary["elbo"],
        "reconstruction": summary["reconstruction"],
        "kl": summary["kl"],
        "global_kl": parts.global_kl,
        "mutual_information": summary["mutual_information"],
        "marginal_kl": summary["marginal_kl"],
        "active_units": int(sum(int((v > threshold).sum()) for v in variance.values())),
        "latent_units": int(sum(v.numel() for v in variance.values())),
        "amortization_gap": math.nan,
        "approximation_gap": math.nan,
        "num_parameters": _num_parameters(fit, model, guide),
        "training_seconds": fit.elapsed if isinstance(fit, FitResult) else math.nan,
        "num_data": rows.num_data,
        "num_samples": num_samples,
    }
    if gaps and supports_amortization_gap(model, guide):
        row.update(_gaps(model, guide, rows, num_samples, seed, gap_points))
    return row, lml.per_point


def _gaps(model: Any, guide: Any, rows: Rows, num_samples: int, seed: int | None, gap_points: int | None) -> dict[str, float]:
    """The mean amortization and approximation gaps on the first ``gap_points`` rows."""
    if gap_points is not None:
        rows = rows.subset(torch.arange(min(gap_points, rows.num_data), device=rows.x.device))
    gap = amortization_gap((model, guide), rows, num_samples=min(num_samples, 100), seed=seed)
    s = gap.summary()
    return {"amortization_gap": s["amortization_gap"], "approximation_gap": s["approximation_gap"]}
