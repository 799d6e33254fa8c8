"""Argument checks shared across the package (one wording for every message)."""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["positive_int", "real_number"]


def positive_int(name: str, value: Any) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= 1.

    Parameters
    ----------
    name : str
        The argument's name, as the caller spells it, for the message.
    value : Any
        The value to check. Python ints and NumPy integers count; ``bool`` does not.

    Returns
    -------
    int
        ``int(value)``.

    Raises
    ------
    TypeError
        If ``value`` is not an integer (a float such as ``2.0``, a string, a bool).
    ValueError
        If ``value < 1``.

    Examples
    --------
    >>> positive_int("num_samples", 8)
    8
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {int(value)}")
    return int(value)


def real_number(name: str, value: Any) -> float:
    """Return ``value`` as a ``float`` if it is a real number (not a bool).

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : Any
        The value to check: an int, float or NumPy real scalar.

    Returns
    -------
    float
        ``float(value)``; its range is the caller's to check.

    Raises
    ------
    TypeError
        If ``value`` is a bool or not a real number (a string, a complex, None).

    Examples
    --------
    >>> real_number("noise", 1)
    1.0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a real number; got {value!r} of type {type(value).__name__}."
        )
    return float(value)
