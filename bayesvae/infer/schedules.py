r"""Learning-rate schedules for :func:`~bayesvae.fit`: any callable ``epoch -> lr``.

:class:`StagedLR` is the schedule of Burda, Grosse & Salakhutdinov [1]_ (section 5): stage
:math:`i = 0, \dots, 7` runs :math:`3^i` epochs at :math:`\mathrm{lr} = 10^{-3} \cdot
10^{-i/7}`, 3 280 epochs in all.

References
----------
.. [1] Y. Burda, R. Grosse and R. Salakhutdinov, "Importance Weighted Autoencoders",
   ICLR 2016, arXiv:1509.00519.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["StagedLR", "ConstantLR", "describe_lr", "lr_at"]


class ConstantLR:
    """The same learning rate every epoch."""

    def __init__(self, lr: float) -> None:
        self.lr = float(lr)

    def __call__(self, epoch: int) -> float:
        return self.lr

    def to_dict(self) -> dict[str, Any]:
        return {"type": "ConstantLR", "lr": self.lr}


class StagedLR:
    r"""Stage :math:`i` runs ``base ** i`` epochs at ``lr0 * decay ** i`` (Burda et al.'s schedule).

    Parameters
    ----------
    lr0 : float
        Learning rate of stage 0 (Burda: 1e-3).
    stages : int
        Number of stages (Burda: 8); after the last one the last rate is kept.
    growth : int
        Stage :math:`i` lasts ``growth ** i`` epochs (Burda: 3).
    decay : float
        Factor per stage (Burda: :math:`10^{-1/7}`).
    """

    def __init__(self, lr0: float = 1e-3, stages: int = 8, growth: int = 3, decay: float = 10 ** (-1 / 7)) -> None:
        if not (lr0 > 0 and math.isfinite(lr0)):
            raise ValueError(f"lr0 must be a positive finite number, got {lr0!r}")
        self.lr0, self.stages, self.growth, self.decay = float(lr0), int(stages), int(growth), float(decay)

    @property
    def total_epochs(self) -> int:
        """Epochs over all stages (3 280 for Burda's schedule)."""
        return sum(self.growth**i for i in range(self.stages))

    def stage(self, epoch: int) -> int:
        """The stage that 0-based ``epoch`` belongs to."""
        end = 0
        for i in range(self.stages):
            end += self.growth**i
            if epoch < end:
                return i
        return self.stages - 1

    def __call__(self, epoch: int) -> float:
        return self.lr0 * self.decay ** self.stage(epoch)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "StagedLR", "lr0": self.lr0, "stages": self.stages, "growth": self.growth, "decay": self.decay}


def describe_lr(lr: float | Callable[[int], float]) -> dict[str, Any] | None:
    """A JSON description of a schedule (``None`` for a constant number)."""
    if not callable(lr):
        return None
    to_dict = getattr(lr, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return {"type": "callable", "name": getattr(lr, "__qualname__", type(lr).__name__)}


def lr_at(lr: float | Callable[[int], float], epoch: int) -> float:
    """The learning rate of 0-based ``epoch``, checked positive and finite."""
    value = lr(epoch) if callable(lr) else lr
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"the learning-rate schedule returned {value!r} for epoch {epoch}, not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"the learning rate must be positive and finite; the schedule gave {value!r} for epoch {epoch}")
    return value
