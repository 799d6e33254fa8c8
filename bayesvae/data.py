"""Validation and conversion of user data at the package boundary (done once per fit)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from bayesvae.streaming import DiskArray, is_disk_backed, open_array, validate_finite

__all__ = ["as_tensor", "as_groups", "DataInfo", "resolve_device", "MISSING"]

DEVICES = ("cpu", "cuda")

logger = logging.getLogger(__name__)

#: What :func:`as_tensor` does with missing cells: raise, or model them (zero-fill + mask).
MISSING = ("error", "model")


@dataclass(frozen=True)
class DataInfo:
    """What the package remembers about a training set.

    Attributes
    ----------
    num_data : int
        Rows ``N``.
    data_dim : int
        Features ``d`` (images flattened).
    columns : tuple of str or None
        DataFrame column names, when the data came as a DataFrame.
    image_shape : tuple of int or None
        Shape to reshape a row into an image (e.g. ``(8, 8)``), when known.
    """

    num_data: int
    data_dim: int
    columns: tuple[str, ...] | None = None
    image_shape: tuple[int, ...] | None = None


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn ``"cpu"``/``"cuda"``/``"cuda:1"`` into a device, with a clear error if unusable."""
    if isinstance(device, torch.device):
        dev = device
    else:
        if not isinstance(device, str) or device.split(":")[0] not in DEVICES:
            raise ValueError(f"unknown device {device!r}; choose one of {list(DEVICES)} (e.g. 'cuda:0')")
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(
                f"invalid device {device!r}: expected 'cpu', 'cuda' or 'cuda:K' with an integer index K (e.g. 'cuda:0'); torch says: {exc}"
            ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device='cuda' was requested but CUDA is not available on this machine (torch.cuda.is_available() is False); use device='cpu' or install a CUDA build of torch"
        )
    if dev.type not in DEVICES:
        raise ValueError(f"unknown device {str(dev)!r}; choose one of {list(DEVICES)}")
    return dev


def as_tensor(
    data: torch.Tensor | np.ndarray | pd.DataFrame | DiskArray | str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    image_shape: Sequence[int] | None = None,
    name: str = "data",
    missing: str = "error",
    mask: Any = None,
    schema: Any = None,
) -> tuple[torch.Tensor | DiskArray, DataInfo] | tuple[torch.Tensor, DataInfo, torch.Tensor]:
    """Validate data and return a ``(N, d)`` tensor on ``device`` plus its :class:`DataInfo`.

    Parameters
    ----------
    data : Tensor, ndarray, DataFrame of shape (N, d) or (N, *image_shape), or data on disk
        Numeric (real) data; arrays of rank > 2 are flattened per row (the image shape is
        kept). A ``bayesvae.datasets.Dataset`` is accepted too (its ``x`` is used). A numpy
        masked array's masked cells are missing cells (see ``missing``). Data on disk -- a
        memory-mapped ndarray (``np.load(path, mmap_mode="r")``), an ``h5py.Dataset``, a
        :class:`~bayesvae.streaming.DiskArray`, or the path of a ``.npy`` / HDF5 file -- are
        validated in chunks of about 32 MiB and returned as a
        :class:`~bayesvae.streaming.DiskArray` that reads rows when indexed, not copied into
        memory (with ``missing="model"``, ``mask`` or ``schema`` they are read into memory).
    dtype, device
        Target dtype and device.
    image_shape : sequence of int, optional
        Image shape of a row, recorded for plots.
    name : str
        What to call the data in error messages.
    missing : {"error", "model"}
        ``"error"``: a missing cell (NaN, ``pd.NA``, ``None``) or an infinite one is a
        ``ValueError``. ``"model"``: missing cells are set to 0 and a bool mask of the
        observed cells is returned as well (the model leaves their log-likelihood out, the
        encoder reads the mask); infinite observed cells are still an error.
    mask : bool array-like of shape (N, d), optional
        Observed cells given by the caller (needs ``missing="model"``): cells where it is
        ``False`` are treated as missing whatever they hold; NaN cells are missing too.
    schema : Schema, optional
        Encodes a DataFrame (``schema.encode(frame) -> (values, observed)``): labels to codes,
        measurements standardized; see :class:`bayesvae.models.Schema`.

    Returns
    -------
    x : Tensor or DiskArray of shape (N, d)
        The data (missing cells 0 when ``missing="model"``); a ``DiskArray`` for data on disk.
    info : DataInfo
    mask : bool Tensor of shape (N, d)
        Only with ``missing="model"``: ``True`` where a cell is observed.

    Raises
    ------
    TypeError
        For a non-numeric or complex DataFrame column (named), a complex array (the dtype
        named), or an unsupported container.
    ValueError
        For NaN/inf (with the number of rows and the columns affected), fewer than one row,
        a rank-1 array, duplicate DataFrame column names, masked cells of a masked array
        without ``missing="model"``, or -- with ``missing="model"`` -- a column with no
        observed cell.
    """
    if missing not in MISSING:
        raise ValueError(f"missing must be one of {list(MISSING)}, got {missing!r}")
    if mask is not None and missing != "model":
        raise ValueError(f"{name}: a mask of observed cells needs missing='model', got missing={missing!r}")
    columns: tuple[str, ...] | None = None
    observed: np.ndarray | None = None
    if hasattr(data, "x") and hasattr(data, "image_shape") and not isinstance(data, (torch.Tensor, DiskArray)):
        image_shape = image_shape or getattr(data, "image_shape", None)
        columns = getattr(data, "columns", None)
        data = data.x
    if is_disk_backed(data):
        if isinstance(data, (str, os.PathLike)):
            data = open_array(data)
        if missing != "model" and schema is None:
            return _on_disk(data, dtype=dtype, device=device, image_shape=image_shape, name=name, columns=columns)
        logger.info("%s: reading the data on disk into memory (missing cells are modelled with an in-memory mask)", name)
        disk, disk_info = _on_disk(data, dtype=dtype, device="cpu", image_shape=image_shape, name=name, columns=columns, check=False)
        image_shape, data = disk_info.image_shape, disk.to_tensor()
    if isinstance(data, pd.DataFrame):
        duplicated = sorted({str(c) for c in data.columns[data.columns.duplicated()]})
        if duplicated:
            raise ValueError(
                f"{name}: DataFrame column names must be unique; {duplicated} appear more than once. Rename or drop the duplicates (e.g. frame.loc[:, ~frame.columns.duplicated()])."
            )
    if isinstance(data, pd.DataFrame) and schema is not None:
        columns = tuple(schema.names)
        array, observed = schema.encode(data, name=name)
    elif isinstance(data, pd.DataFrame):
        bad = [str(c) for c in data.columns if not pd.api.types.is_numeric_dtype(data[c])]
        if bad:
            raise TypeError(
                f"{name}: DataFrame columns must be numeric; column(s) {bad} are not (dtypes {[str(data[c].dtype) for c in bad]}). Encode or drop them first."
            )
        complex_cols = [str(c) for c in data.columns if pd.api.types.is_complex_dtype(data[c])]
        if complex_cols:
            raise TypeError(
                f"{name}: DataFrame columns must be real numbers; column(s) {complex_cols} are complex. Split them into real and imaginary columns if both matter."
            )
        columns = tuple(str(c) for c in data.columns)
        array = data.to_numpy(dtype=np.float64, na_value=np.nan)
    elif isinstance(data, torch.Tensor):
        if data.is_complex():
            raise TypeError(f"{name}: data must be real numbers, got a complex tensor (dtype {data.dtype}); split real and imaginary parts into columns if both matter")
        array = data.detach().cpu()
    elif isinstance(data, np.ndarray):
        if data.dtype.kind == "c":
            raise TypeError(f"{name}: data must be real numbers, got a complex array (dtype {data.dtype}); split real and imaginary parts into columns if both matter")
        if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
            raise TypeError(f"{name}: array must be numeric, got dtype {data.dtype}")
        array = data
        if isinstance(data, np.ma.MaskedArray):
            array, observed = _unmask(data, missing, name)
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor, numpy.ndarray, pandas.DataFrame or data on disk (a memory-mapped array, an h5py.Dataset, a .npy/.h5 path), got {type(data).__name__}"
        )
    t = array if isinstance(array, torch.Tensor) else torch.as_tensor(np.array(array))
    if t.dim() < 2:
        raise ValueError(f"{name} must have shape (N, d) with one row per data point; got shape {tuple(t.shape)}")
    if t.dim() > 2:
        image_shape = image_shape or tuple(t.shape[1:])
        t = t.reshape(t.shape[0], -1)
    if t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"{name} is empty: shape {tuple(t.shape)}")
    if observed is not None and observed.shape != tuple(t.shape):
        observed = observed.reshape(tuple(t.shape))
    t = t.to(dtype)
    finite = torch.isfinite(t)
    if missing == "model":
        t, seen = _fill_missing(t, observed, mask, columns, name)
        finite = torch.isfinite(t)
    elif observed is not None and not observed.all():
        finite &= torch.as_tensor(observed)
    if not bool(finite.all()):
        bad_rows = int((~finite).any(1).sum())
        cols = torch.nonzero((~finite).any(0)).flatten().tolist()
        names = [columns[c] if columns else str(c) for c in cols[:8]]
        more = f" and {len(cols) - 8} more" if len(cols) > 8 else ""
        raise ValueError(
            f"{name} contains NaN or inf in {bad_rows} rows (columns [{', '.join(names)}{more}]); remove or impute them, or model them as missing (missing='model')"
        )
    info = DataInfo(
        num_data=int(t.shape[0]),
        data_dim=int(t.shape[1]),
        columns=columns,
        image_shape=tuple(int(s) for s in image_shape) if image_shape else None,
    )
    dev = resolve_device(device)
    if missing == "model":
        return t.to(dev), info, seen.to(dev)
    return t.to(dev), info


def _unmask(data: np.ma.MaskedArray, missing: str, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A masked array's values and observed cells (``None`` when nothing is masked)."""
    masked = np.ma.getmaskarray(data)
    values = np.ma.getdata(data)
    if not masked.any():
        return values, None
    if missing != "model":
        rows = int(masked.reshape(masked.shape[0], -1).any(1).sum()) if masked.ndim else 1
        raise ValueError(
            f"{name} is a masked array with {int(masked.sum())} masked cells in {rows} rows; pass missing='model' to model them as missing, or fill them first (data.filled(value))"
        )
    return values, ~masked


def _on_disk(data, *, dtype, device, image_shape, name, columns, check: bool = True) -> tuple[DiskArray, DataInfo]:
    """Data on disk as a :class:`DiskArray`, checked finite chunk by chunk."""
    kind = np.dtype(data.source.dtype if isinstance(data, DiskArray) else data.dtype).kind
    if kind == "c":
        raise TypeError(f"{name}: data must be real numbers, got a complex array (dtype {data.dtype}); split real and imaginary parts into columns if both matter")
    if kind not in "biuf":
        raise TypeError(f"{name}: array must be numeric, got dtype {data.dtype}")
    if len(data.shape) < 2:
        raise ValueError(f"{name} must have shape (N, d) with one row per data point; got shape {tuple(data.shape)}")
    dev = resolve_device(device)
    x = data.to(device=dev, dtype=dtype) if isinstance(data, DiskArray) else DiskArray(data, dtype=dtype, device=dev)
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if columns is not None and len(columns) != x.shape[1]:
        columns = None
    if check and not x.validated:
        validate_finite(x, name=name, columns=columns)
    image_shape = image_shape or x.image_shape
    info = DataInfo(
        num_data=int(x.shape[0]),
        data_dim=int(x.shape[1]),
        columns=tuple(columns) if columns else None,
        image_shape=tuple(int(s) for s in image_shape) if image_shape else None,
    )
    return x, info


def _fill_missing(t, observed, mask, columns, name) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-fill missing cells; the observed mask. Infinite observed cells stay for the error."""
    seen = ~torch.isnan(t)
    if observed is not None:
        seen &= torch.as_tensor(observed)
    if mask is not None:
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).cpu()
        if m.dtype != torch.bool:
            raise TypeError(f"{name}: mask must be boolean (True = observed), got dtype {m.dtype}")
        if tuple(m.shape) != tuple(t.shape):
            raise ValueError(f"{name}: mask has shape {tuple(m.shape)} but the data have shape {tuple(t.shape)}")
        seen &= m
    empty = torch.nonzero(~seen.any(0)).flatten().tolist()
    if empty:
        names = [columns[c] if columns else str(c) for c in empty]
        raise ValueError(
            f"{name}: column(s) {names} have no observed values (every cell is missing); drop them before fitting"
        )
    return torch.where(seen, t, t.new_zeros(())), seen


def as_groups(groups, num_data: int, *, device: str | torch.device = "cpu") -> torch.Tensor:
    """Validate integer group labels ``0..G-1`` of length ``num_data``; returns a long tensor."""
    if isinstance(groups, (pd.Series, pd.Index)):
        groups = groups.to_numpy()
    g = torch.as_tensor(np.asarray(groups) if not isinstance(groups, torch.Tensor) else groups)
    if g.dim() != 1 or g.shape[0] != num_data:
        raise ValueError(
            f"groups must be a vector with one label per data point: got shape {tuple(g.shape)} for {num_data} rows"
        )
    if g.is_floating_point():
        if not bool(torch.isfinite(g).all()):
            raise ValueError(f"groups contain {int((~torch.isfinite(g)).sum())} NaN/inf labels")
        if not bool((g == g.round()).all()):
            raise ValueError("groups must be integer labels 0..G-1; got non-integer values")
    if g.numel() and int(g.min()) < 0:
        raise ValueError(f"groups must be labels 0..G-1; got negative label {int(g.min())}")
    return g.long().to(resolve_device(device))
