"""The ``groups=`` spelling that :mod:`bayesvae.evaluation.gaps` still uses, over the scoring engine.

Transitional: ``gaps.py`` is being rewritten on the new training step; until then its body
calls ``prepare(model, guide, x, groups)`` for ``(x, groups)`` tensors and
``TraceScorer(model, guide, x, groups=...)``. Both convert at once to the covariates mapping of
:mod:`bayesvae.scoring`. Delete this module when ``gaps.py`` carries a
:class:`~bayesvae.convention.Rows`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from bayesvae import scoring
from bayesvae.scoring import check_positive_int, resolve

__all__ = ["TraceScorer", "check_positive_int", "prepare", "resolve"]


def prepare(
    model: Callable, guide: Callable, data: Any, groups: Any = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`bayesvae.scoring.prepare`, as the ``(x, group labels)`` pair ``gaps.py`` unpacks."""
    rows = scoring.prepare(model, guide, data, groups=groups)
    return rows.x, rows.covariates.get("groups")


def TraceScorer(  # noqa: N802 - stands in for the class in gaps.py
    model: Callable, guide: Callable, x: torch.Tensor, *, groups: torch.Tensor | None = None
) -> scoring.TraceScorer:
    """A :class:`bayesvae.scoring.TraceScorer` with the group labels as its covariates."""
    return scoring.TraceScorer(model, guide, x, covariates=scoring.merge_covariates(groups))
