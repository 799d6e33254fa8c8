r"""The calling convention between bayesvae and a Pyro model/guide, defined once.

Every model and guide is called as ``fn(x, *, index=..., num_data=..., **covariates)``:

* ``x`` -- a ``(B, d)`` minibatch (rows ``index`` of the full ``(N, d)`` data);
* ``index`` -- the minibatch's row numbers in the full data (a ``LongTensor`` of shape ``(B,)``);
* ``num_data`` -- the full data size ``N``;
* ``covariates`` -- per-row side information the model needs (``groups=`` labels for a
  multilevel prior today), each a tensor with one entry per row of ``x``.

Each function receives only the keywords its signature names (all of them when it takes
``**kwargs``). This module holds that convention -- the :class:`Batch` record that carries one
minibatch, the :class:`Rows` record that carries a whole validated data set, :class:`Call`, and
:func:`check_data` -- so that training, evaluation and diagnostics build calls the same way.

Minibatch scaling is *read from traces*, never inferred from a signature: see
:mod:`bayesvae.scaling`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bayesvae.data import DataInfo, as_groups, as_tensor
from bayesvae.streaming import row_chunks

__all__ = [
    "DATA_PLATE",
    "Batch",
    "Rows",
    "Call",
    "check_data",
    "prepare_rows",
    "reference_parameter",
]

#: Name of the data plate of the package's models and guides (a user's model may name its
#: data plate differently: :func:`bayesvae.scaling.verify_scales` finds it from the trace).
DATA_PLATE = "data"


@dataclass(frozen=True)
class Batch:
    """One minibatch in the calling convention.

    Attributes
    ----------
    x : Tensor of shape (B, d)
        The rows of the minibatch.
    index : LongTensor of shape (B,)
        Their row numbers in the full data.
    num_data : int
        Rows ``N`` of the full data (sites in the data plate are scaled by ``N / B``).
    covariates : mapping of str to Tensor
        Per-row side information (first dimension ``B``), passed to model and guide as
        keyword arguments of the same names.
    """

    x: torch.Tensor
    index: torch.Tensor
    num_data: int
    covariates: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``model(x, **kwargs)``."""
        return {"index": self.index, "num_data": self.num_data, **self.covariates}

    @property
    def size(self) -> int:
        """Rows ``B`` in the minibatch."""
        return int(self.x.shape[0])


@dataclass(frozen=True)
class Rows:
    """A validated data set: the tensor, its per-row covariates and what is known about it.

    Attributes
    ----------
    x : Tensor of shape (N, d)
        The data, on the model's device and dtype.
    info : DataInfo
        Size, width, column names and image shape.
    covariates : mapping of str to Tensor
        Per-row side information, each with first dimension ``N``.
    """

    x: torch.Tensor
    info: DataInfo
    covariates: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_data(self) -> int:
        """Rows ``N``."""
        return int(self.x.shape[0])

    def batch(self, index: torch.Tensor, num_data: int | None = None) -> Batch:
        """The minibatch of rows ``index`` (``num_data`` defaults to ``N``)."""
        return Batch(
            x=self.x[index],
            index=index,
            num_data=self.num_data if num_data is None else int(num_data),
            covariates={k: v[index] for k, v in self.covariates.items()},
        )

    def subset(self, index: torch.Tensor) -> Rows:
        """The rows ``index`` as a data set of their own (covariates follow)."""
        x = self.x[index]
        info = DataInfo(
            num_data=int(x.shape[0]),
            data_dim=self.info.data_dim,
            columns=self.info.columns,
            image_shape=self.info.image_shape,
        )
        return Rows(x=x, info=info, covariates={k: v[index] for k, v in self.covariates.items()})

    def chunks(self, size: int) -> Sequence[Batch]:
        """Consecutive minibatches of at most ``size`` rows, each scaled to ``N`` (each
        gathered when it is accessed, so data on disk are read one chunk at a time)."""
        return _Chunks(self, size)


class _Chunks(Sequence):
    """The consecutive row blocks of a :class:`Rows`, each gathered on access."""

    def __init__(self, rows: Rows, size: int) -> None:
        self.rows, self.size, self.starts = rows, size, range(0, rows.num_data, size)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        start = self.starts[i]
        idx = torch.arange(start, min(start + self.size, self.rows.num_data), device=self.rows.x.device)
        return self.rows.batch(idx)


def _accepted(fn: Callable) -> set[str] | None:
    """Keyword names ``fn`` accepts; ``None`` if it takes ``**kwargs``."""
    target = fn.forward if isinstance(fn, nn.Module) else fn
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {name for name in sig.parameters}


class Call:
    """Call a model/guide with the keywords of the calling convention that it accepts.

    ``wrappers`` are effect handlers (callables ``fn -> fn``, e.g. from
    :class:`bayesvae.scaling.ScalePlan`) applied around every call.
    """

    def __init__(self, fn: Callable, wrappers: tuple[Callable[[Batch], Any], ...] = ()) -> None:
        if isinstance(fn, Call):
            fn = fn.fn
        if not callable(fn):
            raise TypeError(f"a model or guide must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.accepts = _accepted(fn)
        self.wrappers = wrappers

    def takes(self, name: str) -> bool:
        """Whether the function accepts keyword ``name``."""
        return self.accepts is None or name in self.accepts

    def with_wrappers(self, *wrappers: Callable) -> Call:
        """The same function with effect handlers entered around every call."""
        return Call(self.fn, tuple(wrappers))

    def __call__(self, x, **kwargs):
        fn = self.fn
        for wrap in self.wrappers:
            fn = wrap(fn, x, kwargs)
        if self.accepts is not None:
            kwargs = {k: v for k, v in kwargs.items() if k in self.accepts}
        return fn(x, **kwargs)


def check_data(model: Any, x: torch.Tensor, info: DataInfo, name: str, *, support: bool = True) -> None:
    """Validate data against a model: its width and (unless ``support=False``) its likelihood's support."""
    width = getattr(model, "data_dim", None)
    if width is not None and width != info.data_dim:
        raise ValueError(
            f"{name} has {info.data_dim} columns but the model expects data_dim={width}; build the model for {info.data_dim} features or pass matching data"
        )
    likelihood = getattr(model, "likelihood", None)
    if support and likelihood is not None and hasattr(likelihood, "validate"):
        row_chunks(x, lambda block: likelihood.validate(block, info.columns))  # a DiskArray chunk by chunk


def reference_parameter(*parts: Any) -> torch.Tensor | None:
    """The first parameter of the first module among ``parts`` (device and dtype reference)."""
    for part in parts:
        module = part if isinstance(part, nn.Module) else getattr(part, "__self__", None)
        if isinstance(module, nn.Module):
            for p in module.parameters():
                return p
    return None


def prepare_rows(
    model: Any,
    guide: Any,
    data: Any,
    *,
    groups: Any = None,
    covariates: Mapping[str, Any] | None = None,
    name: str = "data",
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    missing: str | None = None,
    support: bool = True,
) -> Rows:
    """Validate ``data`` (and per-row covariates) for ``model``; returns :class:`Rows`.

    Device and dtype default to those of the model's/guide's first parameter (CPU and
    float32 when there is none). ``groups`` is a shorthand for ``covariates={"groups": ...}``
    (integer labels ``0..G-1``, validated). A DataFrame is encoded by the model likelihood's
    ``schema`` when it has one (:class:`bayesvae.models.Schema`). ``missing="model"`` (or a
    bool ``covariates["mask"]``, True = observed) zero-fills missing cells and puts the
    observed mask into ``covariates["mask"]`` when any cell is missing
    (:func:`bayesvae.data.as_tensor`); ``missing=None`` (the default) means ``"model"`` for a
    DataFrame with missing cells and ``"error"`` otherwise. ``support=False`` skips the likelihood's support
    check (for data transformed before it reaches the model, e.g. intensities that are
    binarized per minibatch).
    """
    if isinstance(data, Rows):
        return data
    if missing is None:  # a DataFrame's missing cells are modelled; elsewhere NaN is an error
        import pandas as pd

        missing = "model" if isinstance(data, pd.DataFrame) and bool(data.isna().to_numpy().any()) else "error"
    ref = reference_parameter(model, guide)
    if device is None:
        device = ref.device if ref is not None else torch.device("cpu")
    if dtype is None:
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    covariates = dict(covariates or {})
    given = covariates.pop("mask", None)
    schema = getattr(getattr(model, "likelihood", None), "schema", None)
    cov: dict[str, torch.Tensor] = {}
    if missing == "model" or given is not None:
        x, info, mask = as_tensor(data, device=device, dtype=dtype, name=name, missing="model", mask=given, schema=schema)
        if given is not None or not bool(mask.all()):
            cov["mask"] = mask
    else:
        x, info = as_tensor(data, device=device, dtype=dtype, name=name, missing=missing, schema=schema)
    check_data(model, x, info, name, support=support)
    if groups is not None:
        cov["groups"] = as_groups(groups, info.num_data, device=device)
    for key, value in covariates.items():
        if key in ("index", "num_data"):
            raise ValueError(f"covariate name {key!r} is reserved by the calling convention")
        t = torch.as_tensor(value, device=device)
        if t.dim() < 1 or t.shape[0] != info.num_data:
            raise ValueError(
                f"covariate {key!r} must have one entry per row of the {name}: got shape {tuple(t.shape)} for {info.num_data} rows"
            )
        cov[key] = t
    return Rows(x=x, info=info, covariates=cov)
