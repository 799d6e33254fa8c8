"""Resolve what the evaluation functions accept: a fit or a (model, guide) pair, and data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bayesvae._checks import positive_int
from bayesvae.data import as_groups, as_tensor
from bayesvae.infer import FitResult, _check_data

__all__ = ["resolve", "prepare", "check_positive_int"]

#: the package-wide check, under the name the evaluation modules use
check_positive_int = positive_int


def resolve(fit: Any) -> tuple[Callable, Callable]:
    """``(model, guide)`` of a :class:`~bayesvae.FitResult` or of a ``(model, guide)`` pair."""
    if isinstance(fit, FitResult):
        return fit.model, fit.guide
    if isinstance(fit, (tuple, list)) and len(fit) == 2 and all(callable(f) for f in fit):
        return fit[0], fit[1]
    raise TypeError(
        f"expected a bayesvae FitResult or a (model, guide) pair of callables, got {type(fit).__name__}; pass the result of bayesvae.fit(...) or (model, guide)"
    )


def _reference(model: Any, guide: Any) -> torch.Tensor | None:
    for part in (model, guide):
        if isinstance(part, nn.Module):
            for p in part.parameters():
                return p
    return None


def prepare(
    model: Callable, guide: Callable, data: Any, groups: Any = None, *, name: str = "data"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate ``data`` (and ``groups``) for ``model``; returns tensors on the model's device and dtype."""
    ref = _reference(model, guide)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    x, info = as_tensor(data, device=device, dtype=dtype, name=name)
    _check_data(model, x, info, name)
    g = None if groups is None else as_groups(groups, info.num_data, device=device)
    return x, g
