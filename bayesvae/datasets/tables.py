"""Readers of generic numeric files: CSV and Parquet tables (pandas) and ``.npy`` arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayesvae.datasets._files import check_exists, file_stem
from bayesvae.datasets.record import Dataset

__all__ = ["read_npy", "read_table", "load_npy"]

#: The first bytes of every ``.npy`` file (format spec, ``numpy.lib.format.MAGIC_PREFIX``).
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def read_table(path: Path, reader: Any) -> Dataset:
    """A numeric CSV/Parquet table as a Dataset with its column names."""
    check_exists(path)
    try:
        frame = reader(path)
    except ImportError as exc:
        raise ValueError(
            f"reading {path} needs a Parquet engine that is not installed ({exc}); install it with: pip install 'bayesvae[parquet]' (pyarrow)"
        ) from exc
    if len(frame) == 0:
        raise ValueError(
            f"{path} has a header ({len(frame.columns)} columns: {[str(c) for c in frame.columns][:10]}) but no rows; a data file needs at least one row of numbers."
        )
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        col = non_numeric[0]
        values = frame[col].dropna()
        example = f", e.g. {values.iloc[0]!r}" if len(values) else ""
        raise TypeError(
            f"Column {str(col)!r} of {path} is not numeric (dtype {frame[col].dtype}{example}); encode it as numbers (e.g. one-hot with pandas.get_dummies) or drop it before loading. Non-numeric columns: {[str(c) for c in non_numeric]}."
        )
    x = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = (~np.isfinite(x)).sum(axis=0)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"Column {str(frame.columns[j])!r} of {path} has {int(bad[j])} missing or non-finite values; impute them or drop those rows before loading."
        )
    return Dataset(
        x=x,
        columns=tuple(str(c) for c in frame.columns),
        name=file_stem(path),
        description=f"Table read from {path} ({x.shape[0]} rows, {x.shape[1]} numeric columns).",
    )


def load_npy(path: Path, *, mmap_mode: str | None = None) -> np.ndarray:
    """One array from a ``.npy`` file, never unpickling; ``mmap_mode="r"`` maps it read-only.

    Raises ``ValueError`` for an ``.npz`` archive, a file without the NumPy header, a corrupt
    header, or an object array (which only a pickle could hold).
    """
    check_exists(path)
    with open(path, "rb") as handle:
        head = handle.read(len(_NPY_MAGIC))
        if head.startswith(_ZIP_MAGIC):
            raise ValueError(f"{path} is an .npz archive, not a single .npy array; save one array with np.save.")
        if head != _NPY_MAGIC:
            raise ValueError(
                f"{path} is not a valid .npy file: it does not start with the NumPy magic bytes (\\x93NUMPY); write it with numpy.save. bayesvae never loads pickled data."
            )
        handle.seek(0)
        try:  # the header alone (a Python-literal dict, parsed safely by numpy)
            version = np.lib.format.read_magic(handle)
            reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            dtype = reader(handle)[2] if reader is not None else None  # version 3: np.load checks
        except (ValueError, OSError, EOFError, SyntaxError) as exc:
            raise ValueError(f"{path} is not a valid .npy file (corrupt header: {exc})") from exc
    if dtype is not None and dtype.hasobject:
        raise ValueError(
            f"{path} holds an object array (pickled Python objects, dtype {dtype}), not numbers; bayesvae never loads pickled data. Save a numeric array with numpy.save."
        )
    try:
        array = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        if "allow_pickle" in str(exc):
            raise ValueError(f"{path} holds an object array (pickled Python objects), not numbers; bayesvae never loads pickled data.") from exc
        raise ValueError(f"{path} is not a valid .npy file (truncated or corrupt: {exc})") from exc
    return array


def read_npy(path: Path) -> Dataset:
    """A numeric ``.npy`` array as a Dataset; images (ndim >= 3) are flattened.

    The file is memory-mapped (read-only), not loaded: a C-ordered float32 array stays on
    disk and is checked for NaN/inf in chunks, so a file larger than memory can be read
    (other dtypes are converted to float32 in memory by :class:`Dataset`).
    """
    from bayesvae.streaming import count_nonfinite

    array = load_npy(path, mmap_mode="r")
    if array.dtype.kind == "c":
        raise TypeError(
            f"{path} holds a complex array (dtype {array.dtype}); expected real numbers (bool, integer or float). Split real and imaginary parts into columns if both matter."
        )
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{path} holds an array of dtype {array.dtype}; expected numbers (bool, integer or float)."
        )
    if array.ndim < 2:
        raise ValueError(
            f"{path} holds an array of shape {array.shape}; expected (n, d), or (n, *image_shape) for images."
        )
    if array.shape[0] == 0:
        raise ValueError(f"{path} holds an array of shape {array.shape} with no rows; a data file needs at least one row.")
    image_shape = tuple(int(s) for s in array.shape[1:]) if array.ndim >= 3 else None
    x = array.reshape(array.shape[0], -1)
    n_bad = count_nonfinite(x) if x.dtype.kind == "f" else 0
    if n_bad:
        raise ValueError(
            f"{path} holds {n_bad} NaN or infinite values; impute them or drop those rows before loading."
        )
    return Dataset(
        x=x,
        image_shape=image_shape,
        name=file_stem(path),
        description=f"Array read from {path} (shape {array.shape}, dtype {array.dtype}; values as stored).",
    )
