"""Figures of a prior's own summaries (IBP feature usage, ARD relevance, intervals of global sites).

Each draws a table that a prior's :meth:`~bayesvae.models.Prior.summaries` or
:func:`~bayesvae.diagnostics.decoded.global_site_intervals` computed;
:func:`plot_prior_summary` picks the figure from a :class:`~bayesvae.models.PriorSummary`'s
``kind``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bayesvae.models.priors import PriorSummary
from bayesvae.plots._base import GOOD, GREY, OK, figure

__all__ = ["plot_feature_usage", "plot_relevance", "plot_global_sites", "plot_prior_summary"]

_USAGE_COLUMNS = ("feature", "usage", "fraction_used", "expected_pi", "prior_pi")
_RELEVANCE_COLUMNS = ("tau_mean", "tau_lower", "tau_upper", "active")
_INTERVAL_COLUMNS = ("site", "element", "mean", "lower", "upper")


def _frame(value: Any, columns: Sequence[str], what: str) -> pd.DataFrame:
    """The table of a PriorSummary or a DataFrame, checked for ``columns``."""
    frame = value.frame if isinstance(value, PriorSummary) else value
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{what} must be the DataFrame (or PriorSummary) it is drawn from, got {type(value).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks the columns {missing}; pass the DataFrame it is computed as")
    return frame


def plot_feature_usage(usage: Any, x: Any = None, *, threshold: float = 0.05) -> Figure:
    r"""IBP feature usage against the IBP's expected frequencies.

    Bars: the mean posterior probability of feature :math:`k`,
    :math:`\frac1n\sum_n q(b_{nk}=1 \mid x_n)` (green when active); dots: the share of points
    with :math:`q(b_{nk} = 1 \mid x_n) > 1/2`; lines: :math:`\mathbb E_q[\pi_k]` under the
    fitted sticks and the prior's :math:`(\alpha/(1+\alpha))^k`; a dotted line at the
    activity threshold.

    Parameters
    ----------
    usage : pandas.DataFrame, PriorSummary or FitResult
        The output of :func:`bayesvae.models.ibp.feature_usage` (or the IBP prior's
        summary); a fit is first summarized on ``x`` by that function.
    x : array-like of shape (n, d), optional
        Data, when ``usage`` is a fit.
    threshold : float, default 0.05
        Activity threshold, when ``usage`` is a fit.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not isinstance(usage, (pd.DataFrame, PriorSummary)):
        from bayesvae.diagnostics.decoded import fit_parts
        from bayesvae.models.ibp import feature_usage

        usage = feature_usage(fit_parts(usage), x, threshold=threshold)
    frame = _frame(usage, _USAGE_COLUMNS, "usage")
    k = frame["feature"].to_numpy()
    active = frame["active"].to_numpy() if "active" in frame else np.zeros(len(k), bool)
    fig = figure(max(5, 0.3 * len(frame) + 2), 3.2)
    ax = fig.subplots()
    ax.bar(k, frame["usage"], color=np.where(active, GOOD, GREY), label="usage: mean q(b_k = 1 | x)")
    ax.plot(k, frame["fraction_used"], "_", color="k", ms=10, mew=2, label="share of points with q(b_k = 1 | x) > 1/2")
    ax.plot(k, frame["expected_pi"], "o-", color="k", ms=3, label="E_q[pi_k] (fitted sticks)")
    ax.plot(k, frame["prior_pi"], "s--", color=OK, ms=3, label="prior (alpha/(1+alpha))^k")
    limit = frame.attrs.get("threshold")
    if limit is not None:
        ax.axhline(limit, color="k", lw=0.8, ls=":", label=f"threshold {limit:g}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("feature k")
    ax.set_ylabel("frequency")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"IBP features: {frame.attrs.get('num_active', int(active.sum()))} active of {len(frame)}")
    ax.legend(fontsize=7)
    return fig


def plot_relevance(relevance: Any, *, level: float = 0.9) -> Figure:
    r"""ARD relevance scales :math:`\tau_k` with their central intervals, sorted.

    Parameters
    ----------
    relevance : pandas.DataFrame, PriorSummary or FitResult
        The output of the ARD prior's ``relevance`` (or its summary); a fit is first
        summarized by its prior's ``relevance(fit, level=)``.
    level : float, default 0.9
        Mass of the interval, when ``relevance`` is a fit (otherwise read from the frame's
        ``attrs["level"]`` for the title).
    """
    if not isinstance(relevance, (pd.DataFrame, PriorSummary)):
        from bayesvae.diagnostics.decoded import fit_parts

        fit = fit_parts(relevance)
        relevance = fit.model.prior.relevance(fit, level=level)
        relevance.attrs["level"] = level
    frame = _frame(relevance, _RELEVANCE_COLUMNS, "relevance").sort_values("tau_mean", ascending=False)
    level = frame.attrs.get("level", level)
    fig = figure(max(4.5, 0.35 * len(frame) + 2), 3.2)
    ax = fig.subplots()
    pos = np.arange(len(frame))
    mean = frame["tau_mean"].to_numpy()
    err = np.vstack([mean - frame["tau_lower"].to_numpy(), frame["tau_upper"].to_numpy() - mean])
    ax.bar(pos, mean, color=np.where(frame["active"], GOOD, GREY))
    ax.errorbar(pos, mean, yerr=np.maximum(err, 0), fmt="none", ecolor="k", lw=1, capsize=2)
    ax.set_xticks(pos, [str(i) for i in frame.index])
    ax.set_xlabel("latent dimension (sorted)")
    ax.set_ylabel("relevance scale tau_k")
    ax.set_yscale("log")
    ax.set_title(f"ARD: posterior mean and {100 * level:.0f}% interval ({int(frame['active'].sum())} active)")
    return fig


def plot_global_sites(
    intervals: Any,
    *,
    sites: Sequence[str] | None = None,
    level: float = 0.9,
    num_draws: int = 2000,
    max_elements: int = 40,
    seed: int = 0,
) -> Figure:
    r"""Posterior mean and central interval of each global latent site's elements.

    Parameters
    ----------
    intervals : pandas.DataFrame, PriorSummary or FitResult
        A table with columns ``site``, ``element``, ``mean``, ``lower``, ``upper`` (from
        :func:`~bayesvae.diagnostics.decoded.global_site_intervals`, or a prior's
        ``"intervals"`` summary); a fit is first summarized by that function with the
        keywords below.
    sites, level, num_draws, max_elements, seed
        Keywords of :func:`~bayesvae.diagnostics.decoded.global_site_intervals`, when
        ``intervals`` is a fit.
    """
    if not isinstance(intervals, (pd.DataFrame, PriorSummary)):
        from bayesvae.diagnostics.decoded import global_site_intervals

        intervals = global_site_intervals(
            intervals, sites=sites, level=level, num_draws=num_draws, max_elements=max_elements, seed=seed
        )
    frame = _frame(intervals, _INTERVAL_COLUMNS, "intervals")
    level = frame.attrs.get("level", level)
    shapes = frame.attrs.get("shapes", {})
    chosen = list(dict.fromkeys(frame["site"]))
    ncols = min(len(chosen), 3)
    fig = figure(max(5, 3.5 * ncols), 3.0 * math.ceil(len(chosen) / 3))
    axes = np.atleast_1d(fig.subplots(math.ceil(len(chosen) / 3), ncols, squeeze=False)).ravel()
    for ax, name in zip(axes, chosen):
        t = frame[frame["site"] == name]
        mean, lo, hi = (t[c].to_numpy() for c in ("mean", "lower", "upper"))
        pos = np.arange(len(t))
        ax.errorbar(pos, mean, yerr=np.vstack([mean - lo, hi - mean]), fmt="o", ms=3, color="k", ecolor=GREY, capsize=2)
        ax.axhline(0.0, color=GREY, lw=0.5)
        shape = shapes.get(name, (len(t),))
        ax.set_title(f"{name} {tuple(shape)}: mean, {100 * level:.0f}% interval", fontsize=8)
        ax.set_xticks(pos, list(t["element"]), rotation=90 if len(pos) > 12 else 0, fontsize=7)
        ax.set_xlim(-0.7, len(pos) - 0.3)
        ax.set_xlabel("element" if shape else "")
    for ax in axes[len(chosen) :]:
        ax.set_visible(False)
    return fig


#: The figure of each :data:`~bayesvae.models.priors.SUMMARY_KINDS` entry that has one.
FIGURES = {"usage": plot_feature_usage, "relevance": plot_relevance, "intervals": plot_global_sites}


def plot_prior_summary(summary: PriorSummary) -> Figure | None:
    """The figure of a :class:`~bayesvae.models.PriorSummary`, chosen by its ``kind``
    (``None`` for ``"table"``, which is shown as a table)."""
    if not isinstance(summary, PriorSummary):
        raise TypeError(f"plot_prior_summary draws a PriorSummary, got {type(summary).__name__}")
    draw = FIGURES.get(summary.kind)
    return None if draw is None else draw(summary)
