"""Figures of the diagnostics: Pareto k-hat and posterior predictive checks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from bayesvae.diagnostics.psis import sample_size_threshold
from bayesvae.plots._base import BAD, GOOD, GREY, OK, figure

__all__ = ["plot_khat", "plot_ppc_columns", "plot_ppc_statistics"]


def plot_khat(diagnostic: Any) -> Figure:
    r"""Histogram of the per-point Pareto :math:`\hat k` with the 0.5 / 0.7 thresholds.

    ``diagnostic`` is a :class:`~bayesvae.diagnostics.ParetoDiagnostic`; exact points
    (:math:`\hat k = -\infty`) and undetermined ones are counted in the title.
    """
    k = np.asarray(diagnostic.khat, dtype=float)
    finite = k[np.isfinite(k)]
    fig = figure(5, 3.2)
    ax = fig.subplots()
    if finite.size:
        # bins of width 0.05 anchored at 0, so that 0.5 and 0.7 are bin edges
        lo = math.floor(min(float(finite.min()), 0.0) / 0.05) * 0.05
        hi = math.ceil(max(float(finite.max()), 1.0) / 0.05) * 0.05 + 1e-9
        bins = np.arange(lo, hi + 0.05, 0.05)
        for a, b, color in ((-np.inf, 0.5, GOOD), (0.5, diagnostic.threshold, OK), (diagnostic.threshold, np.inf, BAD)):
            sel = finite[(finite >= a) & (finite < b)] if b != np.inf else finite[finite >= a]
            if sel.size:
                ax.hist(sel, bins=bins, color=color, alpha=0.85)
    ax.axvline(0.5, color="k", lw=0.8, ls=":")
    ax.axvline(diagnostic.threshold, color="k", lw=0.8, ls="--", label=f"k = {diagnostic.threshold:g}")
    limit = sample_size_threshold(diagnostic.num_samples)
    if limit < diagnostic.threshold:
        ax.axvline(limit, color=OK, lw=0.8, ls="-.", label=f"1 - 1/log10(S) = {limit:.2f}")
    ax.legend(fontsize=7)
    shares = diagnostic.shares()
    ax.set_title(
        f"Pareto k-hat: {100 * shares['bad']:.0f}% > {diagnostic.threshold:g}, exact {int(np.sum(diagnostic.exact))}, undetermined {int(np.sum(np.isnan(k)))}",
        fontsize=9,
    )
    ax.set_xlabel("k-hat of the importance weights p(x, z) / q(z | x)")
    ax.set_ylabel("data points")
    return fig


def _ecdf(ax, values: np.ndarray, **kw) -> None:
    v = np.sort(values)
    ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", **kw)


def plot_ppc_columns(
    ppc: Any,
    *,
    columns: Sequence[str] | None = None,
    max_columns: int = 6,
    kind: str = "auto",
    num_replicates: int = 30,
) -> Figure:
    """Observed vs replicated distribution of single columns (ECDFs, histograms or frequencies).

    ``ppc`` is a :class:`~bayesvae.diagnostics.PPCResult`. By default the ``max_columns``
    columns with the most extreme p-values are shown. ``kind``: ``"ecdf"`` (observed in
    black over ``num_replicates`` replicated ECDFs), ``"hist"`` (observed histogram over the
    pooled replicates), ``"freq"`` (share of each value, observed against the replicates'
    95% interval: for discrete columns) or ``"auto"`` (``"freq"`` for a column with at most
    10 distinct values, else ``"ecdf"``).
    """
    if kind not in ("auto", "ecdf", "hist", "freq"):
        raise ValueError(f"kind must be 'auto', 'ecdf', 'hist' or 'freq', got {kind!r}")
    names = list(ppc.columns)
    if columns is None:
        t = ppc.statistics[ppc.statistics["statistic"] != "correlation"].copy()
        t["d"] = np.minimum(t["p_value"], 1 - t["p_value"])
        columns = list(dict.fromkeys(t.sort_values("d")["column"]))[:max_columns]
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"unknown columns {missing}; the data have columns {names[:10]}{'...' if len(names) > 10 else ''}")
    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig = figure(3.2 * ncols, 2.5 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    reps = ppc.replicated
    take = np.linspace(0, reps.shape[0] - 1, min(num_replicates, reps.shape[0])).astype(int)
    table = ppc.statistics.set_index(["statistic", "column"])
    for ax, c in zip(axes, columns):
        j = names.index(c)
        obs = ppc.observed[:, j]
        how = kind
        if kind == "auto":
            values = np.unique(np.concatenate([obs, reps[take, :, j].ravel()]))
            how = "freq" if len(values) <= 10 else "ecdf"
        if how == "freq":
            values = np.unique(np.concatenate([obs, reps[:, :, j].ravel()]))
            shares = np.stack([(reps[:, :, j] == v).mean(1) for v in values], 1)
            lo, hi = np.quantile(shares, [0.025, 0.975], axis=0)
            pos = np.arange(len(values))
            ax.bar(pos, hi - lo, bottom=lo, color=GREY, alpha=0.6, width=0.5, label="replicated 95%")
            ax.scatter(pos, [(obs == v).mean() for v in values], color="k", zorder=3, s=14, label="observed")
            ax.set_xticks(pos, [f"{v:g}" for v in values])
            ax.set_ylabel("share of points")
        elif how == "ecdf":
            for s in take:
                _ecdf(ax, reps[s, :, j], color=GREY, alpha=0.3, lw=0.7)
            _ecdf(ax, obs, color="k", lw=1.5)
            ax.set_ylabel("ECDF")
        else:
            pooled = reps[take, :, j].ravel()
            bins = np.histogram_bin_edges(np.concatenate([obs, pooled]), bins=20)
            ax.hist(pooled, bins=bins, density=True, color=GREY, alpha=0.6, label="replicated")
            ax.hist(obs, bins=bins, density=True, histtype="step", color="k", lw=1.5, label="observed")
            ax.set_ylabel("density")
        pm, pv = table.loc[("mean", c), "p_value"], table.loc[("variance", c), "p_value"]
        ax.set_title(f"{c}: p(mean) = {pm:.2f}, p(var) = {pv:.2f}", fontsize=8)
    for ax in axes[len(columns) :]:
        ax.set_visible(False)
    fig.suptitle("observed (black) vs replicated (grey)", fontsize=9)
    return fig


def plot_ppc_statistics(ppc: Any, *, max_columns: int = 40) -> Figure:
    """Observed column means and variances against the replicates' 95% intervals, and the
    correlation discrepancy of the data against its replicated distribution.

    With more than ``max_columns`` columns, the most extreme ones are shown.
    """
    stats = ppc.statistics
    fig = figure(11, 3.3)
    axes = fig.subplots(1, 3, width_ratios=[2, 2, 1.3])
    for ax, stat in zip(axes[:2], ("mean", "variance")):
        t = stats[stats["statistic"] == stat].reset_index(drop=True)
        if len(t) > max_columns:
            d = np.minimum(t["p_value"], 1 - t["p_value"])
            t = t.loc[np.sort(np.argsort(d.to_numpy(), kind="stable")[:max_columns])].reset_index(drop=True)
        pos = np.arange(len(t))
        ax.vlines(pos, t["replicated_lower"], t["replicated_upper"], color=GREY, lw=3, label="replicated 95%")
        color = np.where(t["extreme"], BAD, "k")
        ax.scatter(pos, t["observed"], color=color, s=12, zorder=3, label="observed")
        ax.set_xticks(pos, t["column"], rotation=90, fontsize=6)
        ax.set_title(f"column {stat}s ({int(t['extreme'].sum())} extreme in red)", fontsize=9)
        ax.legend(fontsize=7)
    ax = axes[2]
    corr = stats[stats["statistic"] == "correlation"]
    if len(corr) and getattr(ppc, "replicated_discrepancy", None) is not None:
        d_rep = ppc.replicated_discrepancy
        ax.hist(d_rep, bins=20, color=GREY, alpha=0.7, label="replicated")
        ax.axvline(float(corr["observed"].iloc[0]), color=BAD if bool(corr["extreme"].iloc[0]) else "k", lw=1.5, label="observed")
        ax.set_title(f"correlation discrepancy, p = {float(corr['p_value'].iloc[0]):.3f}", fontsize=9)
        ax.legend(fontsize=7)
    else:
        ax.set_visible(False)
    return fig


def plot_level_frequencies(frequencies: Any) -> Figure:
    """Observed vs replicated frequency of every level of the categorical and binary columns.

    ``frequencies`` is the ``statistic == "frequency"`` part of
    :func:`bayesvae.tabular.ppc_summary` (columns ``column``, ``level``, ``observed``,
    ``replicated``, ``replicated_sd``): one panel per column, bars for the observed
    frequencies, points with two replicate standard deviations for the replicated ones.
    """
    names = list(dict.fromkeys(frequencies["column"]))
    fig = figure(min(3.2 * len(names), 12), 3.0)
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for ax, name in zip(axes, names):
        part = frequencies[frequencies["column"] == name]
        pos = np.arange(len(part))
        ax.bar(pos, part["observed"], color=GREY, label="observed")
        ax.errorbar(pos, part["replicated"], yerr=2 * np.nan_to_num(part["replicated_sd"].to_numpy(float)), fmt="o", color=GOOD, label="replicated")
        ax.set_xticks(pos)
        ax.set_xticklabels([str(v) for v in part["level"]], rotation=45, ha="right", fontsize=7)
        ax.set_title(str(name), fontsize=9)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("frequency")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig
