"""Figures of a fit (matplotlib; every function returns the Figure and shows nothing)."""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bayesvae.data import as_tensor  # noqa: E402

__all__ = ["plot_history", "plot_reconstructions", "plot_prior_samples", "image_grid"]


def _device_of(module: Any) -> torch.device:
    ref = next(iter(module.parameters()), None) if hasattr(module, "parameters") else None
    return ref.device if ref is not None else torch.device("cpu")


def plot_history(fit: Any) -> Figure:
    """Training (and validation) ELBO per data point against epochs."""
    h = fit.history
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(h["epoch"], h["elbo"], label="train ELBO")
    if "val_elbo" in h:
        ax.plot(h["epoch"], h["val_elbo"], label="validation ELBO")
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO per data point (nats)")
    ax.legend()
    fig.tight_layout()
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


@torch.no_grad()
def plot_reconstructions(fit: Any, data: Any, *, num: int = 10) -> Figure:
    """Inputs (top) next to their reconstructions E[x | z = E_q[z | x]] (bottom)."""
    x, _ = as_tensor(data, device=_device_of(fit.model))
    x = x[:num]
    q = fit.guide.posterior(x)
    means = {name: d.mean for name, d in q.items()}
    z = fit.model.prior.decoder_input(means, _global_means(fit))
    recon = fit.model.reconstruct(z)
    fig, axes = plt.subplots(2, 1, figsize=(max(4, num * 0.6), 3.2))
    image_grid(x.cpu().numpy(), fit.data.image_shape, ncols=num, ax=axes[0], title="data")
    image_grid(recon.cpu().numpy(), fit.data.image_shape, ncols=num, ax=axes[1], title="reconstruction")
    fig.tight_layout()
    return fig


def _global_means(fit: Any) -> dict[str, torch.Tensor]:
    glob = getattr(fit.guide, "globals", None)
    if glob is None:
        return {}
    return {s.name: glob.distribution(s.name).mean for s in glob.sites}


@torch.no_grad()
def plot_prior_samples(fit: Any, *, num: int = 25, seed: int = 0) -> Figure:
    """E[x | z] for z drawn from the prior."""
    torch.manual_seed(seed)
    mean = fit.model.sample(num)["mean"].cpu().numpy()
    fig, ax = plt.subplots(figsize=(5, 5))
    image_grid(mean, fit.data.image_shape, ncols=int(math.ceil(math.sqrt(num))), ax=ax, title="samples from the prior (E[x | z])")
    fig.tight_layout()
    return fig
