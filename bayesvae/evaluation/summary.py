r"""All the evaluation metrics of one fit on one data set, as one labelled row."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch
from torch import nn

from bayesvae.evaluation._inputs import check_positive_int, prepare, resolve
from bayesvae.evaluation._traces import TraceScorer, evaluation_mode, seeded
from bayesvae.evaluation.active_units import posterior_means
from bayesvae.evaluation.elbo_parts import _decompose
from bayesvae.evaluation.gaps import amortization_gap, supports_amortization_gap
from bayesvae.evaluation.marginal_likelihood import _log_marginal_likelihood
from bayesvae.infer import FitResult

__all__ = ["evaluate", "METRICS"]

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
    threshold: float = 0.01,
    elbo_samples: int = 100,
    gaps: bool = False,
    gap_points: int | None = 100,
    chunk_size: int | None = None,
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
    x : Tensor, ndarray or DataFrame of shape (N, d)
        Data (usually held out).
    num_samples : int, default 1000
        Importance samples per point for :math:`\log \hat p(x)`.
    seed : int or None, default 0
        Seed for all draws.
    groups : array-like of int, optional
        Group labels, for priors that use them.
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

    Returns
    -------
    pandas.DataFrame
        One row; the columns are :data:`METRICS`. ``frame.attrs["log_px_per_point"]`` holds
        the per-point :math:`\log \hat p(x_n)` as a float64 numpy array.
    """
    row, per_point = _evaluate(
        fit,
        x,
        num_samples=num_samples,
        seed=seed,
        groups=groups,
        threshold=threshold,
        elbo_samples=elbo_samples,
        gaps=gaps,
        gap_points=gap_points,
        chunk_size=chunk_size,
    )
    frame = pd.DataFrame([row], columns=list(METRICS))
    frame.attrs["log_px_per_point"] = per_point.double().cpu().numpy()
    return frame


def _evaluate(
    fit: Any,
    x: Any,
    *,
    num_samples: int,
    seed: int | None,
    groups: Any,
    threshold: float,
    elbo_samples: int,
    gaps: bool,
    gap_points: int | None,
    chunk_size: int | None,
) -> tuple[dict[str, float], torch.Tensor]:
    model, guide = resolve(fit)
    check_positive_int("num_samples", num_samples)
    check_positive_int("elbo_samples", elbo_samples)
    if gap_points is not None:
        check_positive_int("gap_points", gap_points)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0:
        raise ValueError(f"threshold must be a non-negative number, got {threshold!r}")
    xt, g = prepare(model, guide, x, groups)
    lml = _log_marginal_likelihood(
        model, guide, xt, g, num_samples=num_samples, seed=seed, chunk_size=chunk_size, vectorize=None
    )
    with torch.no_grad(), evaluation_mode(model, guide), seeded(seed, xt.device):
        scorer = TraceScorer(model, guide, xt, groups=g)
        draw = scorer.draw_globals()
        parts = _decompose(scorer, draw, elbo_samples, 1, chunk_size)
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
        "num_data": int(xt.shape[0]),
        "num_samples": num_samples,
    }
    if gaps and supports_amortization_gap(model, guide):
        rows = xt if gap_points is None else xt[:gap_points]
        grows = None if g is None else (g if gap_points is None else g[:gap_points])
        gap = amortization_gap((model, guide), rows, num_samples=min(num_samples, 100), seed=seed, groups=grows)
        s = gap.summary()
        row["amortization_gap"] = s["amortization_gap"]
        row["approximation_gap"] = s["approximation_gap"]
    return row, lml.per_point
