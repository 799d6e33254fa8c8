"""``load``: a data set name or file path (a CLI argument) mapped to the reader for it."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from bayesvae.datasets.embedded import digits
from bayesvae.datasets.frey import read_frey_face
from bayesvae.datasets.mnist import read_binarized_mnist, read_mnist_idx
from bayesvae.datasets.record import Dataset
from bayesvae.datasets.tables import read_npy, read_table

__all__ = ["load"]

logger = logging.getLogger(__name__)

_BUILTIN_NAMES = ("digits", "digits-binary")
_LOAD_SUFFIXES = (
    ".csv",
    ".parquet",
    ".npy",
    ".amat",
    ".amat.gz",
    "-idx3-ubyte",
    "-idx3-ubyte.gz",
    ".mat",
)
_IDX3_NAME = re.compile(
    r"(?P<prefix>.*?)(?P<images>images)?(?P<sep>[-.])idx3-ubyte(?P<gz>\.gz)?", re.IGNORECASE
)


def load(name_or_path: str | os.PathLike[str], **kw: Any) -> Dataset:
    """Load a data set by name or from a file, choosing the reader from the name.

    Parameters
    ----------
    name_or_path : str or path
        ``"digits"`` (:func:`digits`), ``"digits-binary"`` (:func:`digits` with
        ``binarize=True``), or a path ending in

        - ``.csv`` / ``.parquet``: a table read with pandas; every column must be numeric
          (bool counts as 0/1) and finite; column names are kept;
        - ``.npy``: a numeric array (``allow_pickle=False``); 2-D is (n, d), 3-D or more is
          (n, *image_shape) and is flattened with ``image_shape`` kept; values are not
          rescaled;
        - ``.amat`` / ``.amat.gz``: :func:`read_binarized_mnist`;
        - ``-idx3-ubyte`` / ``-idx3-ubyte.gz`` (or ``.idx3-ubyte``): :func:`read_mnist_idx`,
          with labels from ``...-labels-idx1-ubyte[.gz]`` next to it if present;
        - ``.mat``: :func:`read_frey_face`.
    **kw
        Keyword arguments of the chosen reader, e.g. ``binarize=True, seed=1`` for IDX files
        or ``threshold=0.3`` for digits (the tabular readers take none).

    Returns
    -------
    Dataset
        What the chosen reader returns.

    Raises
    ------
    ValueError
        If ``name_or_path`` is neither a known name nor a path with a known suffix, or the
        file is malformed (see the readers).
    FileNotFoundError
        If the path has a known suffix but does not exist.
    TypeError
        If a table has a non-numeric column (named in the message), a ``.npy`` array is not
        numeric, or ``kw`` holds an argument the reader does not take.

    Examples
    --------
    >>> load("digits-binary").name
    'digits-binary'
    """
    if isinstance(name_or_path, str) and name_or_path in _BUILTIN_NAMES:
        if name_or_path == "digits-binary":
            return digits(binarize=True, **kw)
        return digits(**kw)
    path = Path(name_or_path)
    lower = path.name.lower()
    tabular = next((s for s in (".csv", ".parquet", ".npy") if lower.endswith(s)), None)
    if tabular is not None:
        if kw:
            raise TypeError(
                f"load() got keyword arguments {sorted(kw)}, but the {tabular} reader takes none."
            )
        if tabular == ".npy":
            return read_npy(path)
        return read_table(path, pd.read_csv if tabular == ".csv" else pd.read_parquet)
    if lower.endswith((".amat", ".amat.gz")):
        return read_binarized_mnist(path, **kw)
    if lower.endswith(".mat"):
        return read_frey_face(path, **kw)
    match = _IDX3_NAME.fullmatch(path.name)
    if match is not None:
        if "labels_path" not in kw:
            kw = {**kw, "labels_path": _find_idx_labels(path, match)}
        return read_mnist_idx(path, **kw)
    raise ValueError(
        f"Unknown data set {os.fspath(name_or_path)!r}: give one of the names {list(_BUILTIN_NAMES)} or a path ending in one of {list(_LOAD_SUFFIXES)}."
    )


def _find_idx_labels(images_path: Path, match: re.Match[str]) -> Path | None:
    """The ``labels-idx1-ubyte`` file next to an ``images-idx3-ubyte`` file, if any."""
    if match["images"] is None:
        return None
    gz = match["gz"] is not None
    for suffix in (".gz", "") if gz else ("", ".gz"):
        candidate = images_path.with_name(
            f"{match['prefix']}labels{match['sep']}idx1-ubyte{suffix}"
        )
        if candidate.is_file():
            return candidate
    logger.info("No labels file found next to %s; loading images without labels.", images_path)
    return None
