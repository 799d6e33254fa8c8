"""Figures of the model and its latent space: training curves, decoded means, latent units."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from bayesvae.diagnostics.decoded import (
    PriorSamples,
    Reconstructions,
    Traversals,
    latent_traversals,
    main_site,
    prior_samples,
    reconstructions,
)
from bayesvae.plots._base import GOOD, GREY, figure, image_grid

__all__ = [
    "plot_history",
    "plot_reconstructions",
    "plot_prior_samples",
    "plot_kl_per_dimension",
    "plot_latent_embedding",
    "plot_latent_traversals",
]


def plot_history(fit: Any) -> Figure:
    """Training (and validation) ELBO per data point against epochs (``fit.history``)."""
    h = fit.history
    fig = figure(5, 3.2)
    ax = fig.subplots()
    ax.plot(h["epoch"], h["elbo"], label="train ELBO")
    if "val_elbo" in h:
        ax.plot(h["epoch"], h["val_elbo"], label="validation ELBO")
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO per data point (nats)")
    ax.legend()
    return fig


def plot_reconstructions(fit: Any, data: Any = None, *, num: int = 10) -> Figure:
    """Inputs (top) next to their reconstructions E[x | z = E_q[z | x]] (bottom).

    Draws a :class:`~bayesvae.diagnostics.decoded.Reconstructions`; given a fit and data it
    draws :func:`~bayesvae.diagnostics.decoded.reconstructions` of their first ``num`` rows
    (a guide with ``posterior(x)`` and a :class:`~bayesvae.VAE`; an IBP prior is shown with
    its discrete indicators).
    """
    rec = fit if isinstance(fit, Reconstructions) else reconstructions(fit, data, num=num)
    k = len(rec.data)
    fig = figure(max(4, k * 0.6), 3.2)
    axes = fig.subplots(2, 1)
    image_grid(rec.data, rec.image_shape, ncols=k, ax=axes[0], title="data")
    image_grid(rec.reconstruction, rec.image_shape, ncols=k, ax=axes[1], title="reconstruction")
    return fig


def plot_prior_samples(fit: Any, *, num: int = 25, seed: int = 0, groups: Any = None) -> Figure:
    """E[x | z] for z drawn from the prior: a :class:`~bayesvae.diagnostics.decoded.PriorSamples`,
    or :func:`~bayesvae.diagnostics.decoded.prior_samples` of a fit."""
    s = fit if isinstance(fit, PriorSamples) else prior_samples(fit, num=num, seed=seed, groups=groups)
    fig = figure(5, 5)
    ax = fig.subplots()
    ncols = int(math.ceil(math.sqrt(len(s.mean))))
    image_grid(s.mean, s.image_shape, ncols=ncols, ax=ax, title="samples from the prior (E[x | z])")
    return fig


def _summary(fit: Any, x: Any, summary: Any, groups: Any = None) -> Any:
    if summary is not None:
        return summary
    from bayesvae.diagnostics.decoded import fit_parts
    from bayesvae.diagnostics.latents import latent_summary

    f = fit_parts(fit)
    return latent_summary((f.model, f.guide), x, groups=groups, seed=0)


def plot_kl_per_dimension(fit: Any = None, x: Any = None, *, summary: Any = None, groups: Any = None) -> Figure:
    r"""KL per latent unit, sorted, with active units (:math:`A_u > 0.01`) highlighted.

    Parameters
    ----------
    fit, x
        A fit and data, whose :func:`~bayesvae.diagnostics.latent_summary` is drawn;
        or pass ``summary=`` directly.
    summary : LatentSummary, optional
        Precomputed summary.
    groups : array-like, optional
        Group labels, for priors that use them.
    """
    s = _summary(fit, x, summary, groups)
    frame = s.to_frame()
    sites = list(s.means)
    fig = figure(max(6.5, 0.3 * len(frame) + 3), 3.4)
    axes = fig.subplots(1, 2, width_ratios=[3, 2])
    has_kl = bool(np.isfinite(frame["kl"]).any())
    key = "kl" if has_kl else "activity"
    frame = frame.sort_values(key, ascending=False, na_position="last").reset_index(drop=True)
    labels = [f"{r.site}[{r.unit}]" if len(sites) > 1 else str(r.unit) for r in frame.itertuples()]
    colors = [GOOD if a else GREY for a in frame["active"]]
    rotation = 90 if len(frame) > 12 else 0
    axes[0].bar(range(len(frame)), frame[key].fillna(0.0), color=colors)
    axes[0].set_xticks(range(len(frame)), labels, rotation=rotation, fontsize=7)
    axes[0].set_ylabel("KL(q || p) per point (nats)" if has_kl else "activity Var_x E_q[z_u]")
    axes[0].set_xlabel("latent unit (sorted)")
    axes[0].set_title(f"{s.num_active} of {len(frame)} units active (green)", fontsize=9)
    act = np.maximum(frame["activity"].to_numpy(), 1e-8)
    axes[1].bar(range(len(frame)), act, color=colors)
    axes[1].axhline(s.threshold, color="k", lw=0.8, ls="--", label=f"threshold {s.threshold:g}")
    axes[1].set_yscale("log")
    axes[1].set_xticks(range(len(frame)), labels, rotation=rotation, fontsize=7)
    axes[1].set_title("activity A_u", fontsize=9)
    axes[1].legend(fontsize=7)
    return fig


def _embed(mu: np.ndarray, name: str) -> tuple[np.ndarray, str, str]:
    """2-D coordinates of posterior means (PCA beyond 2 units, jitter for 1) and axis labels."""
    if mu.shape[1] < 2:
        xy = np.column_stack([mu[:, 0], np.random.default_rng(0).uniform(-0.1, 0.1, len(mu))])
        return xy, f"{name}[0]", "jitter"
    if mu.shape[1] == 2:
        return mu, f"{name}[0]", f"{name}[1]"
    centred = mu - mu.mean(0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    share = sv[:2] ** 2 / max(np.sum(sv**2), 1e-300)
    return centred @ vt[:2].T, f"PC 1 ({100 * share[0]:.0f}% var.)", f"PC 2 ({100 * share[1]:.0f}% var.)"


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
    name = main_site(s, site)
    xy, xlabel, ylabel = _embed(s.means[name], name)
    fig = figure(5, 4.2)
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


def plot_latent_traversals(
    fit: Any,
    x: Any = None,
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

    Draws a :class:`~bayesvae.diagnostics.decoded.Traversals`; given a fit and data it draws
    :func:`~bayesvae.diagnostics.decoded.latent_traversals` of them (the keywords are its
    own). Rows of an image figure are units, columns the steps; tabular data get one
    line plot per unit.
    """
    if isinstance(fit, Traversals):
        t = fit
    else:
        t = latent_traversals(
            fit, x, site=site, units=units, num_steps=num_steps, point=point, max_units=max_units, summary=summary, groups=groups
        )
    num_steps = len(t.values[0])
    shape = t.image_shape
    if shape is not None and math.prod(shape) == t.decoded[0].shape[1]:
        fig = figure(max(4, 0.7 * num_steps), 0.75 * len(t.units) + 0.8)
        ax = fig.subplots()
        title = f"traversals of {t.site!r} (rows: units {t.units})"
        image_grid(np.concatenate(t.decoded), shape, ncols=num_steps, ax=ax, title=title)
        return fig
    fig = figure(8, 1.8 * math.ceil(len(t.units) / 2) + 0.5)
    axes = np.atleast_1d(fig.subplots(math.ceil(len(t.units) / 2), 2, squeeze=False)).ravel()
    cols = t.columns
    for ax, u, grid, r in zip(axes, t.units, t.values, t.decoded):
        for j in range(min(r.shape[1], 10)):
            ax.plot(grid, r[:, j], label=str(cols[j]) if cols else f"x{j}")
        ax.set_title(f"{t.site}[{u}]", fontsize=9)
        ax.set_xlabel("unit value")
    for ax in axes[len(t.units) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=6, ncols=2)
    fig.suptitle(f"E[x | z] along each unit of {t.site!r}")
    return fig
