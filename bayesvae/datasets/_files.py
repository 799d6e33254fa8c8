"""File access shared by the readers: existence check, transparent gunzip, data set names."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

__all__ = ["GZIP_MAGIC", "check_exists", "file_stem", "read_bytes"]

GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: Path) -> bytes:
    """The contents of ``path``, gunzipped if they start with the gzip magic bytes."""
    check_exists(path)
    raw = path.read_bytes()
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(
            f"{path} starts with the gzip magic bytes 1f 8b but cannot be decompressed ({err}); it is truncated or corrupt, so copy it again."
        ) from err


def check_exists(path: Path) -> None:
    """Raise FileNotFoundError with the path when it does not exist."""
    if not path.exists():
        raise FileNotFoundError(f"No such file: {os.fspath(path)!r}.")


def file_stem(path: Path) -> str:
    """File name without a trailing ``.gz`` and without the format suffix."""
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    return (
        Path(name).stem
        if Path(name).suffix.lower() in (".csv", ".parquet", ".npy", ".amat", ".mat")
        else name
    )
