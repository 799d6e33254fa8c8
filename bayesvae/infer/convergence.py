r"""Has the objective converged? A trend test of the ELBO against its Monte Carlo noise.

Over the last ``window`` epochs the per-epoch training ELBO :math:`y_t` is regressed on the
epoch index, :math:`y_t = a + b t + \varepsilon_t`, by ordinary least squares. The residuals
carry the Monte Carlo (and minibatch) noise of the estimates, so the slope's standard error

.. math::

    \widehat{\mathrm{se}}(b) = \sqrt{\frac{\sum_t \hat\varepsilon_t^2 / (W - 2)}
        {\sum_t (t - \bar t)^2}}

measures how large a trend that noise could fake. The fit is judged **not converged** when
the trend is both significant, :math:`b > 2\,\widehat{\mathrm{se}}(b)` (one-sided, about 2.5 %
false alarms under no trend), and material: the improvement it projects over another
window, :math:`b W`, exceeds ``tol`` nats per data point. A fit shorter than ``min_epochs``
gets the verdict ``None`` (unknown). PyMC's ``CheckParametersConvergence`` and scvi-tools'
early stopping judge the same question from parameter changes and validation loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["check_convergence", "EarlyStopping"]


def check_convergence(
    elbo: Sequence[float], *, window: int | None = None, tol: float = 0.01, min_epochs: int = 6
) -> dict[str, Any]:
    """The convergence verdict for a sequence of per-epoch ELBOs (per data point).

    Returns
    -------
    dict
        ``converged`` (bool, or None with fewer than ``min_epochs`` epochs), ``slope``
        (nats per point per epoch), ``se`` (its standard error), ``window`` (epochs used),
        ``projected_gain`` (``slope * window``), ``tol``, ``method``.
    """
    y = np.asarray([v for v in elbo if v is not None and math.isfinite(v)], dtype=float)
    out: dict[str, Any] = {"method": "OLS trend of the training ELBO over the last window", "tol": tol}
    if len(y) < min_epochs:
        out.update(converged=None, slope=None, se=None, window=int(len(y)), projected_gain=None)
        return out
    w = int(window or max(min_epochs, min(50, len(y) // 2)))
    w = min(w, len(y))
    tail = y[-w:]
    t = np.arange(w, dtype=float)
    tc = t - t.mean()
    slope = float((tc * (tail - tail.mean())).sum() / (tc**2).sum())
    resid = tail - tail.mean() - slope * tc
    se = float(math.sqrt((resid**2).sum() / max(w - 2, 1) / (tc**2).sum()))
    gain = slope * w
    converged = not (slope > 2 * se and gain > tol)
    out.update(converged=bool(converged), slope=slope, se=se, window=w, projected_gain=float(gain))
    return out


class EarlyStopping:
    """Stop when the validation ELBO has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = -math.inf
        self.best_epoch = 0
        self.waited = 0

    def update(self, epoch: int, value: float) -> tuple[bool, bool]:
        """Record ``value`` for ``epoch``; returns ``(improved, stop)``."""
        if value > self.best + self.min_delta:
            self.best, self.best_epoch, self.waited = value, epoch, 0
            return True, False
        self.waited += 1
        return False, self.waited >= self.patience
