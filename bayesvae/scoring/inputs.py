r"""The boundary of the scoring engine: what a fit is, and data validated once into :class:`Rows`.

Every public estimator accepts a :class:`~bayesvae.infer.FitResult` or a ``(model, guide)``
pair (:func:`resolve`) and data as a tensor, ndarray, DataFrame or an already validated
:class:`~bayesvae.convention.Rows`, with per-row covariates given as ``covariates=`` (a mapping
name -> array with one entry per row) or, for group labels, the shorthand ``groups=``.
:func:`prepare` turns them into one ``Rows`` record -- on the model's device and dtype,
checked against its width and likelihood -- which is all that travels further in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from bayesvae._checks import positive_int
from bayesvae.convention import Rows, prepare_rows
from bayesvae.data import DataInfo
from bayesvae.infer import FitResult

__all__ = ["resolve", "prepare", "as_rows", "merge_covariates", "check_positive_int"]

#: the package-wide check, under the name the evaluation modules use
check_positive_int = positive_int

#: keywords of the calling convention that a covariate may not be named
_RESERVED = ("index", "num_data")


def as_rows(data: torch.Tensor | Rows, covariates: Mapping[str, Any] | None = None) -> Rows:
    """A validated ``(N, d)`` tensor and its per-row covariates as :class:`~bayesvae.convention.Rows`.

    ``data`` may already be a ``Rows`` (then ``covariates`` must be empty). Each covariate
    must have one entry per row; non-tensors are converted on the data's device.

    Raises
    ------
    TypeError
        If ``data`` is neither a 2-d tensor nor ``Rows``.
    ValueError
        If a covariate has the wrong length or a reserved name, or covariates are passed
        both inside ``Rows`` and alongside.
    """
    if isinstance(data, Rows):
        if covariates:
            raise ValueError(
                f"covariates {sorted(covariates)} were passed alongside a Rows record, which carries its own; put them in the Rows or pass a tensor"
            )
        return data
    if not isinstance(data, torch.Tensor) or data.dim() != 2:
        raise TypeError(
            f"x must be a (N, d) torch.Tensor; got {type(data).__name__} {tuple(getattr(data, 'shape', ()))}"
        )
    n = int(data.shape[0])
    cov: dict[str, torch.Tensor] = {}
    for name, value in (covariates or {}).items():
        if name in _RESERVED:
            raise ValueError(f"covariate name {name!r} is reserved by the calling convention")
        t = value if isinstance(value, torch.Tensor) else torch.as_tensor(value, device=data.device)
        if t.dim() < 1 or t.shape[0] != n:
            raise ValueError(
                f"covariate {name!r} has {t.shape[0] if t.dim() else 0} entries but x has {n} rows; pass one entry per row"
            )
        cov[name] = t
    return Rows(x=data, info=DataInfo(num_data=n, data_dim=int(data.shape[1])), covariates=cov)


def resolve(fit: Any) -> tuple[Callable, Callable]:
    """``(model, guide)`` of a :class:`~bayesvae.infer.FitResult` or of a ``(model, guide)`` pair.

    Raises
    ------
    TypeError
        If ``fit`` is neither.
    """
    if isinstance(fit, FitResult):
        return fit.model, fit.guide
    if isinstance(fit, (tuple, list)) and len(fit) == 2 and all(callable(f) for f in fit):
        return fit[0], fit[1]
    raise TypeError(
        f"expected a bayesvae FitResult or a (model, guide) pair of callables, got {type(fit).__name__}; pass the result of bayesvae.fit(...) or (model, guide)"
    )


def merge_covariates(groups: Any = None, covariates: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One covariates mapping from the boundary's two spellings (``groups=`` is ``{"groups": ...}``).

    Raises
    ------
    TypeError
        If ``covariates`` is not a mapping.
    ValueError
        If group labels are given both as ``groups=`` and as ``covariates["groups"]``.
    """
    if covariates is not None and not isinstance(covariates, Mapping):
        raise TypeError(
            f"covariates must be a mapping of name to per-row array, got {type(covariates).__name__}; pass e.g. covariates={{'groups': labels}}"
        )
    out = dict(covariates or {})
    if groups is not None:
        if "groups" in out:
            raise ValueError("group labels were given twice, as groups= and as covariates['groups']; pass one of them")
        out["groups"] = groups
    return out


def prepare(
    model: Callable,
    guide: Callable,
    data: Any,
    *,
    groups: Any = None,
    covariates: Mapping[str, Any] | None = None,
    name: str = "data",
) -> Rows:
    """Validate ``data`` and its per-row covariates for ``model``, once; returns :class:`Rows`.

    Parameters
    ----------
    model, guide : callable
        The fit's model and guide; tensors go to the device and dtype of their first
        parameter (CPU and float32 without one).
    data : Tensor, ndarray, DataFrame of shape (N, d), or Rows
        The data; a ``Rows`` is taken as already validated (and carries its covariates).
    groups : array-like of int of shape (N,), optional
        Group labels ``0..G-1``; shorthand for ``covariates={"groups": groups}``.
    covariates : mapping of str to array-like of shape (N, ...), optional
        Per-row side information, passed to model and guide as keywords of the same names.
    name : str, default "data"
        What the data are called in error messages.

    Returns
    -------
    Rows
        ``x`` of shape (N, d), its :class:`~bayesvae.data.DataInfo` and the covariates.

    Raises
    ------
    ValueError
        If the data do not fit the model, a covariate's length is not ``N``, or covariates
        are passed alongside a ``Rows`` record.
    """
    cov = merge_covariates(groups, covariates)
    if isinstance(data, Rows):
        return as_rows(data, cov)
    labels = cov.pop("groups", None)
    return prepare_rows(model, guide, data, groups=labels, covariates=cov, name=name)
