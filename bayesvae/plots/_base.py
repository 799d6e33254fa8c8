"""Shared figure helpers: a non-interactive backend, the palette, a figure and an image grid."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg", force=False)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["GOOD", "OK", "BAD", "GREY", "figure", "image_grid"]

GOOD, OK, BAD, GREY = "#1b9e77", "#d95f02", "#d7191c", "#999999"


def figure(width: float, height: float) -> Figure:
    """A ``Figure`` outside pyplot's global state (nothing to close, nothing leaks)."""
    return Figure(figsize=(width, height), layout="constrained")


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
