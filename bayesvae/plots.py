"""Figures of a fit (matplotlib; every function returns the Figure and shows nothing).

Figures are built as ``matplotlib.figure.Figure`` objects, not through pyplot's global state,
so a report that draws dozens of them leaks nothing; save them with ``fig.savefig(path)``.

* training: :func:`plot_history` (training / validation ELBO per epoch);
* the latent space: :func:`plot_kl_per_dimension`, :func:`plot_latent_embedding`,
  :func:`plot_latent_traversals`;
* the generative model: :func:`plot_reconstructions`, :func:`plot_prior_samples`;
* diagnostics: :func:`plot_khat`, :func:`plot_ppc_columns`, :func:`plot_ppc_statistics`;
* priors: :func:`plot_feature_usage` (IBP), :func:`plot_relevance` (ARD),
  :func:`plot_global_sites` (any global latent: scales, group effects) with intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bayesvae.data import as_tensor  # noqa: E402

__all__ = [
    "plot_history",
    "plot_reconstructions",
    "plot_prior_samples",
    "image_grid",
    "plot_kl_per_dimension",
    "plot_latent_embedding",
    "plot_latent_traversals",
    "plot_khat",
    "plot_ppc_columns",
    "plot_ppc_statistics",
    "plot_feature_usage",
    "plot_relevance",
    "plot_global_sites",
]

_GOOD, _OK, _BAD, _GREY = "#1b9e77", "#d95f02", "#d7191c", "#999999"


def _device_of(module: Any) -> torch.device:
    ref = next(iter(module.parameters()), None) if hasattr(module, "parameters") else None
    return ref.device if ref is not None else torch.device("cpu")


def _dtype_of(module: Any) -> torch.dtype:
    ref = next(iter(module.parameters()), None) if hasattr(module, "parameters") else None
    return ref.dtype if ref is not None and ref.is_floating_point() else torch.float32


def _as_fit(fit: Any) -> Any:
    """A FitResult as is; a ``(model, guide)`` pair as an object with ``model`` and ``guide``."""
    if isinstance(fit, (tuple, list)) and len(fit) == 2:
        from types import SimpleNamespace

        return SimpleNamespace(model=fit[0], guide=fit[1], data=None, history=None)
    return fit


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def plot_history(fit: Any) -> Figure:
    """Training (and validation) ELBO per data point against epochs."""
    h = fit.history
    fig = _figure(5, 3.2)
    ax = fig.subplots()
    ax.plot(h["epoch"], h["elbo"], label="train ELBO")
    if "val_elbo" in h:
        ax.plot(h["epoch"], h["val_elbo"], label="validation ELBO")
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO per data point (nats)")
    ax.legend()
    return fig


def image_grid(rows: np.ndarray, image_shape: tuple[int, ...] | None, *, ncols: int, ax, title: str) -> None:
    """Draw flattened rows as a grid of images (or as a heat map when no image shape is known)."""
    if image_shape is None or math.prod(image_shape) != rows.shape[1]:
        ax.imshow(rows, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_ylabel("row")
        ax.set_xlabel("feature")
    else:
        h, w = image_shape[-2], image_shape[-1]
        nrows = math.ceil(len(rows) / ncols)
        canvas = np.full((nrows * (h + 1), ncols * (w + 1)), np.nan)
        for i, row in enumerate(rows):
            r, c = divmod(i, ncols)
            canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = row.reshape(h, w)
        ax.imshow(canvas, cmap="gray_r", interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(title)


def _scoring(fit: Any):
    from bayesvae.diagnostics._common import scoring_mode

    return scoring_mode(fit.model)


def _image_shape(fit: Any) -> tuple[int, ...] | None:
    info = getattr(fit, "data", None)
    return getattr(info, "image_shape", None)


@torch.no_grad()
def plot_reconstructions(fit: Any, data: Any, *, num: int = 10) -> Figure:
    """Inputs (top) next to their reconstructions E[x | z = E_q[z | x]] (bottom).

    Needs a guide with ``posterior(x)`` (e.g. ``AmortizedGuide``) and a model with
    ``reconstruct`` (a :class:`~bayesvae.VAE`); an IBP prior is shown with its discrete
    indicators.
    """
    fit = _as_fit(fit)
    x, _ = as_tensor(data, device=_device_of(fit.model), dtype=_dtype_of(fit.model))
    x = x[:num]
    with _scoring(fit):
        q = fit.guide.posterior(x)
        means = {name: d.mean for name, d in q.items()}
        z = fit.model.prior.decoder_input(means, _global_means(fit))
        recon = fit.model.reconstruct(z)
    fig = _figure(max(4, num * 0.6), 3.2)
    axes = fig.subplots(2, 1)
    image_grid(x.cpu().numpy(), _image_shape(fit), ncols=num, ax=axes[0], title="data")
    image_grid(recon.cpu().numpy(), _image_shape(fit), ncols=num, ax=axes[1], title="reconstruction")
    return fig


def _global_means(fit: Any) -> dict[str, torch.Tensor]:
    glob = getattr(fit.guide, "globals", None)
    if glob is None:
        return {}
    return {s.name: glob.distribution(s.name).mean for s in glob.sites}


@torch.no_grad()
def plot_prior_samples(fit: Any, *, num: int = 25, seed: int = 0, groups: Any = None) -> Figure:
    """E[x | z] for z drawn from the prior (``groups``: one label per sample, for priors that need them)."""
    fit = _as_fit(fit)
    torch.manual_seed(seed)
    with _scoring(fit):
        mean = (fit.model.sample(num) if groups is None else fit.model.sample(num, groups=groups))["mean"].cpu().numpy()
    fig = _figure(5, 5)
    ax = fig.subplots()
    image_grid(mean, _image_shape(fit), ncols=int(math.ceil(math.sqrt(num))), ax=ax, title="samples from the prior (E[x | z])")
    return fig


# ---------------------------------------------------------------------------------------------
# The latent space


def _summary(fit: Any, x: Any, summary: Any, groups: Any = None, seed: int = 0) -> Any:
    if summary is not None:
        return summary
    from bayesvae.diagnostics.latents import latent_summary

    f = _as_fit(fit)
    return latent_summary((f.model, f.guide), x, groups=groups, seed=seed)


def plot_kl_per_dimension(fit: Any = None, x: Any = None, *, summary: Any = None, groups: Any = None) -> Figure:
    r"""KL per latent unit, sorted, with active units (:math:`A_u > 0.01`) highlighted.

    Parameters
    ----------
    fit, x
        A fit and data, to compute a :class:`~bayesvae.diagnostics.latents.LatentSummary`;
        or pass ``summary=`` directly.
    summary : LatentSummary, optional
        Precomputed summary.
    groups : array-like, optional
        Group labels, for priors that use them.
    """
    s = _summary(fit, x, summary, groups)
    frame = s.to_frame()
    sites = list(s.means)
    fig = _figure(max(6.5, 0.3 * len(frame) + 3), 3.4)
    axes = fig.subplots(1, 2, width_ratios=[3, 2])
    has_kl = bool(np.isfinite(frame["kl"]).any())
    key = "kl" if has_kl else "activity"
    frame = frame.sort_values(key, ascending=False, na_position="last").reset_index(drop=True)
    labels = [f"{r.site}[{r.unit}]" if len(sites) > 1 else str(r.unit) for r in frame.itertuples()]
    colors = [_GOOD if a else _GREY for a in frame["active"]]
    axes[0].bar(range(len(frame)), frame[key].fillna(0.0), color=colors)
    axes[0].set_xticks(range(len(frame)), labels, rotation=90 if len(frame) > 12 else 0, fontsize=7)
    axes[0].set_ylabel("KL(q || p) per point (nats)" if has_kl else "activity Var_x E_q[z_u]")
    axes[0].set_xlabel("latent unit (sorted)")
    axes[0].set_title(f"{s.num_active} of {len(frame)} units active (green)", fontsize=9)
    act = np.maximum(frame["activity"].to_numpy(), 1e-8)
    axes[1].bar(range(len(frame)), act, color=colors)
    axes[1].axhline(s.threshold, color="k", lw=0.8, ls="--", label=f"threshold {s.threshold:g}")
    axes[1].set_yscale("log")
    axes[1].set_xticks(range(len(frame)), labels, rotation=90 if len(frame) > 12 else 0, fontsize=7)
    axes[1].set_title("activity A_u", fontsize=9)
    axes[1].legend(fontsize=7)
    return fig


def _main_site(summary: Any, site: str | None) -> str:
    if site is not None:
        if site not in summary.means:
            raise ValueError(f"no local latent site {site!r}; the fit's local sites are {list(summary.means)}")
        return site
    return "z" if "z" in summary.means else next(iter(summary.means))


def plot_latent_embedding(
    fit: Any = None,
    x: Any = None,
    *,
    labels: Sequence[Any] | np.ndarray | None = None,
    site: str | None = None,
    summary: Any = None,
    groups: Any = None,
) -> Figure:
    """Posterior means of a local site in 2-D (PCA when the site has more than 2 units),
    coloured by ``labels`` when given (e.g. the digit of each image)."""
    s = _summary(fit, x, summary, groups)
    name = _main_site(s, site)
    mu = s.means[name]
    if mu.shape[1] >= 2:
        centred = mu - mu.mean(0)
        _, sv, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T if mu.shape[1] > 2 else mu
        share = sv[:2] ** 2 / max(np.sum(sv**2), 1e-300)
        xlabel, ylabel = (
            (f"PC 1 ({100 * share[0]:.0f}% var.)", f"PC 2 ({100 * share[1]:.0f}% var.)")
            if mu.shape[1] > 2
            else (f"{name}[0]", f"{name}[1]")
        )
    else:
        xy = np.column_stack([mu[:, 0], np.random.default_rng(0).uniform(-0.1, 0.1, len(mu))])
        xlabel, ylabel = f"{name}[0]", "jitter"
    fig = _figure(5, 4.2)
    ax = fig.subplots()
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.7, color="#377eb8")
    else:
        lab = np.asarray(labels)
        if len(lab) != len(xy):
            raise ValueError(f"labels has {len(lab)} entries but the data have {len(xy)} rows")
        classes = np.unique(lab)
        if len(classes) <= 20:
            cmap = matplotlib.colormaps["tab20" if len(classes) > 10 else "tab10"]
            for i, c in enumerate(classes):
                sel = lab == c
                ax.scatter(xy[sel, 0], xy[sel, 1], s=6, alpha=0.8, color=cmap(i), label=str(c))
            ax.legend(fontsize=7, markerscale=2, ncols=2 if len(classes) > 10 else 1, loc="best")
        else:
            sc = ax.scatter(xy[:, 0], xy[:, 1], s=6, c=lab.astype(float), cmap="viridis")
            fig.colorbar(sc, ax=ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"posterior means of {name!r}")
    return fig


@torch.no_grad()
def plot_latent_traversals(
    fit: Any,
    x: Any,
    *,
    site: str | None = None,
    units: Sequence[int] | None = None,
    num_steps: int = 7,
    point: int = 0,
    max_units: int = 8,
    summary: Any = None,
    groups: Any = None,
) -> Figure:
    r"""Decoded means along one latent unit at a time, the others fixed at a point's posterior mean.

    Unit :math:`u` of ``site`` moves over the 5%--95% range of the posterior means across
    the data (a range every prior fills, Gaussian or IBP); other sites and units stay at
    the posterior mean of row ``point``; global sites at their posterior means. Rows of the
    figure are units (by default the most active ``max_units``), columns the steps. Needs a
    :class:`~bayesvae.VAE` (``prior.decoder_input`` and ``reconstruct``).
    """
    fit = _as_fit(fit)
    if not (hasattr(fit.model, "reconstruct") and hasattr(getattr(fit.model, "prior", None), "decoder_input")):
        raise TypeError(
            f"latent traversals need a bayesvae VAE (prior.decoder_input and reconstruct); got {type(fit.model).__name__}"
        )
    if num_steps < 2:
        raise ValueError(f"num_steps must be at least 2, got {num_steps}")
    s = _summary(fit, x, summary, groups)
    name = _main_site(s, site)
    mu = s.means[name]
    if not 0 <= point < len(mu):
        raise ValueError(f"point must be a row number in 0..{len(mu) - 1}, got {point}")
    if units is None:
        units = list(np.argsort(-s.activity[name])[: min(max_units, mu.shape[1])])
    units = [int(u) for u in units]
    lo, hi = np.quantile(mu, [0.05, 0.95], axis=0)
    device, dtype = _device_of(fit.model), _dtype_of(fit.model)
    rows = []
    values = []
    for u in units:
        grid = np.linspace(lo[u], hi[u], num_steps)
        values.append(grid)
        locals_ = {}
        for other, m in s.means.items():
            ref = torch.as_tensor(m[point], device=device, dtype=dtype).expand(num_steps, -1).clone()
            if other == name:
                ref[:, u] = torch.as_tensor(grid, device=device, dtype=dtype)
            locals_[other] = ref
        with _scoring(fit):
            z = fit.model.prior.decoder_input(locals_, _global_means(fit))
            rows.append(fit.model.reconstruct(z).cpu().numpy())
    shape = _image_shape(fit)
    if shape is not None and math.prod(shape) == rows[0].shape[1]:
        fig = _figure(max(4, 0.7 * num_steps), 0.75 * len(units) + 0.8)
        ax = fig.subplots()
        image_grid(np.concatenate(rows), shape, ncols=num_steps, ax=ax, title=f"traversals of {name!r} (rows: units {units})")
        return fig
    fig = _figure(8, 1.8 * math.ceil(len(units) / 2) + 0.5)
    axes = np.atleast_1d(fig.subplots(math.ceil(len(units) / 2), 2, squeeze=False)).ravel()
    cols = getattr(getattr(fit, "data", None), "columns", None)
    for ax, u, grid, r in zip(axes, units, values, rows):
        show = min(r.shape[1], 10)
        for j in range(show):
            ax.plot(grid, r[:, j], label=str(cols[j]) if cols else f"x{j}")
        ax.set_title(f"{name}[{u}]", fontsize=9)
        ax.set_xlabel("unit value")
    for ax in axes[len(units) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=6, ncols=2)
    fig.suptitle(f"E[x | z] along each unit of {name!r}")
    return fig


# ---------------------------------------------------------------------------------------------
# Diagnostics


def plot_khat(diagnostic: Any) -> Figure:
    r"""Histogram of the per-point Pareto :math:`\hat k` with the 0.5 / 0.7 thresholds.

    ``diagnostic`` is a :class:`~bayesvae.diagnostics.ParetoDiagnostic`; exact points
    (:math:`\hat k = -\infty`) and undetermined ones are counted in the title.
    """
    from bayesvae.diagnostics.psis import sample_size_threshold

    k = np.asarray(diagnostic.khat, dtype=float)
    finite = k[np.isfinite(k)]
    fig = _figure(5, 3.2)
    ax = fig.subplots()
    if finite.size:
        # bins of width 0.05 anchored at 0, so that 0.5 and 0.7 are bin edges
        lo = math.floor(min(float(finite.min()), 0.0) / 0.05) * 0.05
        hi = math.ceil(max(float(finite.max()), 1.0) / 0.05) * 0.05 + 1e-9
        bins = np.arange(lo, hi + 0.05, 0.05)
        for a, b, color in ((-np.inf, 0.5, _GOOD), (0.5, diagnostic.threshold, _OK), (diagnostic.threshold, np.inf, _BAD)):
            sel = finite[(finite >= a) & (finite < b)] if b != np.inf else finite[finite >= a]
            if sel.size:
                ax.hist(sel, bins=bins, color=color, alpha=0.85)
    ax.axvline(0.5, color="k", lw=0.8, ls=":")
    ax.axvline(diagnostic.threshold, color="k", lw=0.8, ls="--", label=f"k = {diagnostic.threshold:g}")
    limit = sample_size_threshold(diagnostic.num_samples)
    if limit < diagnostic.threshold:
        ax.axvline(limit, color=_OK, lw=0.8, ls="-.", label=f"1 - 1/log10(S) = {limit:.2f}")
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
    fig = _figure(3.2 * ncols, 2.5 * nrows)
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
            ax.bar(pos, hi - lo, bottom=lo, color=_GREY, alpha=0.6, width=0.5, label="replicated 95%")
            ax.scatter(pos, [(obs == v).mean() for v in values], color="k", zorder=3, s=14, label="observed")
            ax.set_xticks(pos, [f"{v:g}" for v in values])
            ax.set_ylabel("share of points")
        elif how == "ecdf":
            for s in take:
                _ecdf(ax, reps[s, :, j], color=_GREY, alpha=0.3, lw=0.7)
            _ecdf(ax, obs, color="k", lw=1.5)
            ax.set_ylabel("ECDF")
        else:
            pooled = reps[take, :, j].ravel()
            bins = np.histogram_bin_edges(np.concatenate([obs, pooled]), bins=20)
            ax.hist(pooled, bins=bins, density=True, color=_GREY, alpha=0.6, label="replicated")
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
    fig = _figure(11, 3.3)
    axes = fig.subplots(1, 3, width_ratios=[2, 2, 1.3])
    for ax, stat in zip(axes[:2], ("mean", "variance")):
        t = stats[stats["statistic"] == stat].reset_index(drop=True)
        if len(t) > max_columns:
            d = np.minimum(t["p_value"], 1 - t["p_value"])
            t = t.loc[np.sort(np.argsort(d.to_numpy(), kind="stable")[:max_columns])].reset_index(drop=True)
        pos = np.arange(len(t))
        ax.vlines(pos, t["replicated_lower"], t["replicated_upper"], color=_GREY, lw=3, label="replicated 95%")
        color = np.where(t["extreme"], _BAD, "k")
        ax.scatter(pos, t["observed"], color=color, s=12, zorder=3, label="observed")
        ax.set_xticks(pos, t["column"], rotation=90, fontsize=6)
        ax.set_title(f"column {stat}s ({int(t['extreme'].sum())} extreme in red)", fontsize=9)
        ax.legend(fontsize=7)
    ax = axes[2]
    corr = stats[stats["statistic"] == "correlation"]
    if len(corr):
        from bayesvae.diagnostics.ppc import _corr, _rms_offdiag

        reps = ppc.replicated
        cols = np.arange(min(reps.shape[2], 256))
        c_bar = np.mean([_corr(reps[s][:, cols].astype(float)) for s in range(reps.shape[0])], axis=0)
        d_rep = [_rms_offdiag(_corr(reps[s][:, cols].astype(float)) - c_bar) for s in range(reps.shape[0])]
        ax.hist(d_rep, bins=20, color=_GREY, alpha=0.7, label="replicated")
        ax.axvline(float(corr["observed"].iloc[0]), color=_BAD if bool(corr["extreme"].iloc[0]) else "k", lw=1.5, label="observed")
        ax.set_title(f"correlation discrepancy, p = {float(corr['p_value'].iloc[0]):.3f}", fontsize=9)
        ax.legend(fontsize=7)
    else:
        ax.set_visible(False)
    return fig


# ---------------------------------------------------------------------------------------------
# Priors


def plot_feature_usage(fit: Any, x: Any, *, threshold: float = 0.05) -> Figure:
    r"""IBP feature usage against the IBP's expected frequencies.

    Bars: the share of points using feature :math:`k` (:math:`\frac1n\sum_n q(b_{nk}=1)`);
    lines: :math:`\mathbb E_q[\pi_k]` under the fitted sticks and the prior's
    :math:`(\alpha/(1+\alpha))^k`. Needs a fit whose prior is an
    :class:`~bayesvae.models.IBPPrior`.
    """
    from bayesvae.models.ibp import feature_usage

    frame = feature_usage(_as_fit(fit), x, threshold=threshold)
    fig = _figure(max(5, 0.3 * len(frame) + 2), 3.2)
    ax = fig.subplots()
    k = frame["feature"].to_numpy()
    ax.bar(k, frame["usage"], color=np.where(frame["active"], _GOOD, _GREY), label="usage: mean q(b_k = 1 | x)")
    ax.plot(k, frame["expected_pi"], "o-", color="k", ms=3, label="E_q[pi_k] (fitted sticks)")
    ax.plot(k, frame["prior_pi"], "s--", color=_OK, ms=3, label="prior (alpha/(1+alpha))^k")
    ax.set_xlabel("feature k")
    ax.set_ylabel("frequency")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"IBP features: {frame.attrs.get('num_active', int(frame['active'].sum()))} active of {len(frame)}")
    ax.legend(fontsize=7)
    return fig


def plot_relevance(fit: Any, *, level: float = 0.9) -> Figure:
    r"""ARD relevance scales :math:`\tau_k` with central ``level`` intervals, sorted.

    Needs a fit whose prior is an ARD prior with ``relevance(fit, level=)``.
    """
    fit = _as_fit(fit)
    frame = fit.model.prior.relevance(fit, level=level).sort_values("tau_mean", ascending=False)
    fig = _figure(max(4.5, 0.35 * len(frame) + 2), 3.2)
    ax = fig.subplots()
    pos = np.arange(len(frame))
    mean = frame["tau_mean"].to_numpy()
    err = np.vstack([mean - frame["tau_lower"].to_numpy(), frame["tau_upper"].to_numpy() - mean])
    colors = np.where(frame["active"], _GOOD, _GREY)
    ax.bar(pos, mean, color=colors)
    ax.errorbar(pos, mean, yerr=np.maximum(err, 0), fmt="none", ecolor="k", lw=1, capsize=2)
    ax.set_xticks(pos, [str(i) for i in frame.index])
    ax.set_xlabel("latent dimension (sorted)")
    ax.set_ylabel("relevance scale tau_k")
    ax.set_yscale("log")
    ax.set_title(f"ARD: posterior mean and {100 * level:.0f}% interval ({int(frame['active'].sum())} active)")
    return fig


@torch.no_grad()
def plot_global_sites(
    fit: Any,
    *,
    sites: Sequence[str] | None = None,
    level: float = 0.9,
    num_draws: int = 2000,
    max_elements: int = 40,
    seed: int = 0,
) -> Figure:
    r"""Posterior mean and central ``level`` interval of each global latent site's elements.

    Reads :math:`q(g)` from the guide's mean-field global part (``guide.globals``, as in
    :class:`~bayesvae.AmortizedGuide`); intervals are quantiles of ``num_draws`` draws (so any
    family works: normal, log-normal, Beta). Sites with more than ``max_elements`` elements
    show their first ``max_elements``. Group effects, variance components, ARD scales and
    IBP sticks all appear here.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    fit = _as_fit(fit)
    glob = getattr(fit.guide, "globals", None)
    available = [s.name for s in getattr(glob, "sites", ())]
    if not available:
        raise ValueError(
            "the fit's guide has no mean-field global part (guide.globals) with global sites; only models with global latents (IBP, ARD, group priors) have them"
        )
    chosen = list(available if sites is None else sites)
    unknown = [s for s in chosen if s not in available]
    if unknown:
        raise ValueError(f"unknown global sites {unknown}; the guide's global sites are {available}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    fig = _figure(max(5, 3.5 * min(len(chosen), 3)), 3.0 * math.ceil(len(chosen) / 3))
    axes = np.atleast_1d(fig.subplots(math.ceil(len(chosen) / 3), min(len(chosen), 3), squeeze=False)).ravel()
    a = (1 - level) / 2
    for ax, name in zip(axes, chosen):
        q = glob.distribution(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            draws = q.sample((num_draws,)).reshape(num_draws, -1).double().cpu().numpy()
        draws = draws[:, :max_elements]
        mean = draws.mean(0)
        lo, hi = np.quantile(draws, [a, 1 - a], axis=0)
        pos = np.arange(draws.shape[1])
        ax.errorbar(pos, mean, yerr=np.vstack([mean - lo, hi - mean]), fmt="o", ms=3, color="k", ecolor=_GREY, capsize=2)
        ax.axhline(0.0, color=_GREY, lw=0.5)
        shape = tuple(q.event_shape)
        ax.set_title(f"{name} {shape}: mean, {100 * level:.0f}% interval", fontsize=8)
        index = [",".join(map(str, i)) for i in np.ndindex(*shape)][: len(pos)] if shape else [""]
        ax.set_xticks(pos, index, rotation=90 if len(pos) > 12 else 0, fontsize=7)
        ax.set_xlim(-0.7, len(pos) - 0.3)
        ax.set_xlabel("element" if shape else "")
    for ax in axes[len(chosen) :]:
        ax.set_visible(False)
    return fig
