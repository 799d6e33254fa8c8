r"""KL-weight schedules: :math:`\beta` as a function of training progress (warm-up, :math:`\beta`-VAE).

A schedule is a callable ``schedule(epoch, step) -> float`` (``epoch``: the 0-based index of
the current epoch; ``step``: the 0-based number of optimizer steps taken before this one)
with ``to_dict()`` for JSON; :func:`bayesvae._registry.build` rebuilds it from that dict.
The training loop sets ``objective.kl_weight = schedule(epoch, step)`` before each step.

References
----------
.. [1] S. R. Bowman, L. Vilnis, O. Vinyals, A. M. Dai, R. Jozefowicz and S. Bengio,
   "Generating Sentences from a Continuous Space", CoNLL 2016, arXiv:1511.06349.
.. [2] C. K. Sønderby, T. Raiko, L. Maaløe, S. K. Sønderby and O. Winther, "Ladder
   Variational Autoencoders", NeurIPS 2016, arXiv:1602.02282 (linear warm-up of the KL).
.. [3] I. Higgins et al., "beta-VAE: Learning Basic Visual Concepts with a Constrained
   Variational Framework", ICLR 2017.
"""

from __future__ import annotations

import math
from typing import Any

from bayesvae._checks import positive_int
from bayesvae._registry import register

__all__ = ["LinearWarmup", "ConstantWeight", "as_kl_schedule"]


def _weight(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


@register
class LinearWarmup:
    r"""A linear KL warm-up from ``start`` to 1 over ``epochs`` epochs or ``steps`` steps [1]_ [2]_.

    .. math:: \beta(t) = \mathrm{start} + (1 - \mathrm{start}) \min(1, t / T)

    with :math:`t` the epoch index (or step count) and :math:`T` = ``epochs`` (or ``steps``):
    :math:`\beta = \mathrm{start}` in the first epoch (step) and 1 from epoch (step)
    :math:`T` on.

    Parameters
    ----------
    epochs : int, optional
        :math:`T` in epochs. Give exactly one of ``epochs`` and ``steps``.
    steps : int, optional
        :math:`T` in optimizer steps.
    start : float, default 0.0
        :math:`\beta` at :math:`t = 0`, in [0, 1].

    Examples
    --------
    >>> schedule = LinearWarmup(epochs=4)
    >>> [schedule(epoch, 0) for epoch in range(6)]
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """

    def __init__(self, *, epochs: int | None = None, steps: int | None = None, start: float = 0.0) -> None:
        if (epochs is None) == (steps is None):
            raise ValueError(f"LinearWarmup needs exactly one of epochs= and steps=, got epochs={epochs!r}, steps={steps!r}")
        length = epochs if steps is None else steps
        length = positive_int(f"LinearWarmup's {'epochs' if steps is None else 'steps'}", length)
        start = _weight("start", start)
        if start > 1:
            raise ValueError(f"LinearWarmup's start must be in [0, 1] (it warms up to 1), got {start!r}")
        self.epochs, self.steps, self.start = epochs, steps, start

    def __call__(self, epoch: int, step: int) -> float:
        t, length = (epoch, self.epochs) if self.steps is None else (step, self.steps)
        return self.start + (1.0 - self.start) * min(1.0, t / length)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "LinearWarmup", "epochs": self.epochs, "steps": self.steps, "start": self.start}

    def __repr__(self) -> str:
        unit = f"epochs={self.epochs}" if self.steps is None else f"steps={self.steps}"
        return f"LinearWarmup({unit}, start={self.start})"


@register
class ConstantWeight:
    r"""A constant :math:`\beta` (the :math:`\beta`-VAE [3]_; ``ConstantWeight(1.0)`` is the ELBO).

    Parameters
    ----------
    beta : float
        The KL weight, a finite number :math:`\ge 0`.

    Examples
    --------
    >>> ConstantWeight(0.5)(3, 120)
    0.5
    """

    def __init__(self, beta: float) -> None:
        self.beta = _weight("beta", beta)

    def __call__(self, epoch: int, step: int) -> float:
        return self.beta

    def to_dict(self) -> dict[str, Any]:
        return {"type": "ConstantWeight", "beta": self.beta}

    def __repr__(self) -> str:
        return f"ConstantWeight({self.beta})"


def as_kl_schedule(value: Any) -> LinearWarmup | ConstantWeight | Any:
    """A schedule from ``fit(kl_weight=...)``: a number becomes :class:`ConstantWeight`; a schedule passes.

    Parameters
    ----------
    value : float or schedule
        A number :math:`\\beta \\ge 0`, or a callable ``(epoch, step) -> float`` with ``to_dict()``.

    Returns
    -------
    schedule
        A callable ``(epoch, step) -> float``.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ConstantWeight(value)
    if callable(value) and callable(getattr(value, "to_dict", None)):
        return value
    raise TypeError(
        f"kl_weight must be a number or a schedule (LinearWarmup(...), ConstantWeight(...): a callable (epoch, step) -> float with to_dict()), got {type(value).__name__}"
    )
