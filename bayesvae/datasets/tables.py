"""Readers of generic numeric files: CSV and Parquet tables (pandas) and ``.npy`` arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayesvae.datasets._files import check_exists, file_stem
from bayesvae.datasets.record import Dataset

__all__ = ["read_npy", "read_table"]


def read_table(path: Path, reader: Any) -> Dataset:
    """A numeric CSV/Parquet table as a Dataset with its column names."""
    check_exists(path)
    try:
        frame = reader(path)
    except ImportError as exc:
        raise ValueError(
            f"reading {path} needs a Parquet engine that is not installed ({exc}); install it with: pip install 'bayesvae[parquet]' (pyarrow)"
        ) from exc
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


def read_npy(path: Path) -> Dataset:
    """A numeric ``.npy`` array as a Dataset; images (ndim >= 3) are flattened."""
    check_exists(path)
    array = np.load(path, allow_pickle=False)
    if not isinstance(array, np.ndarray):
        raise ValueError(
            f"{path} is an .npz archive, not a single .npy array; save one array with np.save."
        )
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{path} holds an array of dtype {array.dtype}; expected numbers (bool, integer or float)."
        )
    if array.ndim < 2:
        raise ValueError(
            f"{path} holds an array of shape {array.shape}; expected (n, d), or (n, *image_shape) for images."
        )
    image_shape = tuple(int(s) for s in array.shape[1:]) if array.ndim >= 3 else None
    x = array.reshape(array.shape[0], -1)
    n_bad = int(np.count_nonzero(~np.isfinite(x))) if x.dtype.kind == "f" else 0
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
