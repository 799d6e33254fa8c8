"""Readers of the two MNIST file formats: LeCun's IDX files and Larochelle's binarized ``.amat``.

Each file is checked byte for byte against its declared format, so a truncated download or a
file of the wrong kind fails with a message that says which, instead of giving wrong pixels.

References
----------
.. [1] LeCun, Y., Bottou, L., Bengio, Y. and Haffner, P. (1998). Gradient-based learning
   applied to document recognition. *Proc. IEEE* 86(11), 2278-2324. doi:10.1109/5.726791
.. [2] Salakhutdinov, R. and Murray, I. (2008). On the quantitative analysis of deep belief
   networks. *ICML*. doi:10.1145/1390156.1390266
.. [3] Larochelle, H. and Murray, I. (2011). The neural autoregressive distribution
   estimator. *AISTATS*, PMLR 15, 29-37.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bayesvae.datasets._files import file_stem, read_bytes
from bayesvae.datasets.record import Dataset

__all__ = ["read_binarized_mnist", "read_mnist_idx"]

_IDX3_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (images)
_IDX1_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (labels)
_MNIST_SIDE = 28
_AMAT_VALUES = _MNIST_SIDE * _MNIST_SIDE


def read_mnist_idx(
    images_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str] | None = None,
    *,
    binarize: bool = False,
    seed: int | None = None,
) -> Dataset:
    """Read MNIST-format IDX files (images and, optionally, labels), gzipped or raw.

    Parameters
    ----------
    images_path : str or path
        IDX3 file of uint8 images (magic number 0x00000803), e.g.
        ``t10k-images-idx3-ubyte.gz``.
    labels_path : str or path, optional
        IDX1 file of uint8 labels (magic number 0x00000801) with one label per image.
    binarize : bool
        If True, draw each pixel once as Bernoulli(intensity) (stochastic binarization).
    seed : int, optional
        Seed of ``np.random.default_rng`` for the binarization; None means 0, so that a
        call is always reproducible. Ignored when ``binarize`` is False.

    Returns
    -------
    Dataset
        ``x`` of shape (n, rows * cols), float32, pixel / 255 in [0, 1] (or {0, 1});
        ``labels`` int64 of shape (n,) or None; ``image_shape`` (rows, cols) from the header,
        (28, 28) for MNIST.

    Raises
    ------
    FileNotFoundError
        If a file does not exist.
    ValueError
        If a file is a truncated or corrupt gzip stream, has the wrong magic number, a
        header whose dimensions do not match the number of bytes that follow, or if the
        label count differs from the image count.

    Notes
    -----
    Compression is detected from the gzip magic bytes ``1f 8b``, not from the file name.
    The IDX format [1]_ is a 4-byte big-endian magic number (two zero bytes, a type code,
    0x08 for unsigned bytes, and the number of dimensions), one big-endian 4-byte size per
    dimension, then the data in row-major order.

    .. warning::
       ``binarize=True`` draws one fixed binarization. The *dynamic* binarization of [2]_
       and later VAE papers redraws the pixels at every epoch: keep the grey levels
       (``binarize=False``) and sample a Bernoulli per minibatch for that, or call this
       function with a different ``seed`` per epoch.

    References
    ----------
    .. [1] LeCun, Y., Bottou, L., Bengio, Y. and Haffner, P. (1998). Gradient-based learning
       applied to document recognition. *Proc. IEEE* 86(11), 2278-2324.
       doi:10.1109/5.726791
    .. [2] Salakhutdinov, R. and Murray, I. (2008). On the quantitative analysis of deep
       belief networks. *ICML*. doi:10.1145/1390156.1390266

    Examples
    --------
    >>> ds = read_mnist_idx("mnist/t10k-images-idx3-ubyte.gz",
    ...                     "mnist/t10k-labels-idx1-ubyte.gz")  # doctest: +SKIP
    >>> ds.x.shape, ds.image_shape  # doctest: +SKIP
    ((10000, 784), (28, 28))
    """
    images_path = Path(images_path)
    images = _parse_idx(read_bytes(images_path), images_path, ndim=3)
    n, rows, cols = images.shape
    x = images.reshape(n, rows * cols).astype(np.float32) / np.float32(255.0)
    labels = None
    if labels_path is not None:
        labels_path = Path(labels_path)
        raw_labels = _parse_idx(read_bytes(labels_path), labels_path, ndim=1)
        if raw_labels.shape[0] != n:
            raise ValueError(
                f"{labels_path} holds {raw_labels.shape[0]} labels but {images_path} holds {n} images; pass the labels file that belongs to these images."
            )
        labels = raw_labels.astype(np.int64)
    preprocessing = "pixel / 255 in [0, 1]"
    if binarize:
        draw_seed = 0 if seed is None else seed
        rng = np.random.default_rng(draw_seed)
        # P(u < p) = p for u ~ U[0, 1): one Bernoulli(pixel intensity) draw per pixel.
        x = (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)
        preprocessing = f"binarized once as Bernoulli(pixel / 255) with seed {draw_seed}"
    return Dataset(
        x=x,
        labels=labels,
        image_shape=(rows, cols),
        name=file_stem(images_path),
        description=f"IDX images read from {images_path} ({n} images of {rows}x{cols}); {preprocessing}.",
    )


def read_binarized_mnist(path: str | os.PathLike[str]) -> Dataset:
    """Read Larochelle's statically binarized MNIST (``.amat`` text, gzipped or raw).

    Parameters
    ----------
    path : str or path
        ``binarized_mnist_{train,valid,test}.amat`` or the same file gzipped (detected from
        the gzip magic bytes, not the name).

    Returns
    -------
    Dataset
        ``x`` of shape (n, 784), float32 in {0, 1}; ``labels`` None (the files have none);
        ``image_shape`` (28, 28).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is empty, a corrupt gzip stream, or a row does not hold exactly 784
        values "0"/"1" separated by single spaces; the message names the row.

    Notes
    -----
    Each row is one image: 784 characters "0"/"1" separated by single spaces and ended by a
    newline, so the file parses as bytes with numpy (every even byte a digit). Windows line
    ends and a missing final newline are accepted. This fixed binarization of [2]_ was
    used by [3]_ and by most VAE papers reporting log-likelihoods on "binarized MNIST"
    (50 000 train, 10 000 valid, 10 000 test).

    .. warning::
       The test file is sorted by digit class (all 0s, then all 1s, ...). Never take a
       prefix of it as a subset; draw a random subset instead (e.g. ``Dataset.split``).

    References
    ----------
    .. [2] Salakhutdinov, R. and Murray, I. (2008). On the quantitative analysis of deep
       belief networks. *ICML*. doi:10.1145/1390156.1390266
    .. [3] Larochelle, H. and Murray, I. (2011). The neural autoregressive distribution
       estimator. *AISTATS*, PMLR 15, 29-37.

    Examples
    --------
    >>> ds = read_binarized_mnist("binarized_mnist/binarized_mnist_test.amat.gz")  # doctest: +SKIP
    >>> ds.x.shape  # doctest: +SKIP
    (10000, 784)
    """
    path = Path(path)
    x = _parse_amat(read_bytes(path), path)
    return Dataset(
        x=x,
        image_shape=(_MNIST_SIDE, _MNIST_SIDE),
        name=file_stem(path),
        description=f"Statically binarized MNIST (Larochelle) read from {path} ({len(x)} images, values in {{0, 1}}).",
    )


def _parse_idx(buf: bytes, path: Path, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX file with ``ndim`` dimensions, header checked against payload."""
    magic, kind = (_IDX3_MAGIC, "IDX3 images") if ndim == 3 else (_IDX1_MAGIC, "IDX1 labels")
    header = 4 + 4 * ndim
    if len(buf) < 4:
        raise ValueError(
            f"{path} is {len(buf)} bytes long, too short for the header of an {kind} file; the file is truncated."
        )
    found = int.from_bytes(buf[:4], "big")
    if found != magic:
        other = {
            _IDX3_MAGIC: " It is an IDX3 images file: pass it as images_path.",
            _IDX1_MAGIC: " It is an IDX1 labels file: pass it as labels_path.",
        }.get(found, "")
        raise ValueError(
            f"{path} is not an {kind} file: its magic number is 0x{found:08X}, expected 0x{magic:08X}.{other}"
        )
    if len(buf) < header:
        raise ValueError(
            f"{path} is truncated: an {kind} header needs {header} bytes, the file has {len(buf)}."
        )
    dims = tuple(int.from_bytes(buf[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    payload = len(buf) - header
    if payload != expected:
        problem = "is truncated" if payload < expected else "has extra bytes at the end"
        raise ValueError(
            f"{path} {problem}: its header declares shape {dims}, i.e. {expected} data bytes, but {payload} bytes follow the {header}-byte header. Copy the file again."
        )
    return np.frombuffer(buf, dtype=np.uint8, offset=header).reshape(dims)


def _parse_amat(buf: bytes, path: Path) -> np.ndarray:
    """The (n, 784) float32 {0, 1} matrix of a binarized-MNIST ``.amat`` file."""
    buf = buf.replace(b"\r\n", b"\n").rstrip(b"\n")
    if not buf:
        raise ValueError(
            f"{path} is empty; expected rows of {_AMAT_VALUES} values '0'/'1' separated by single spaces."
        )
    buf += b"\n"
    b = np.frombuffer(buf, dtype=np.uint8)
    row_bytes = 2 * _AMAT_VALUES  # 784 digits, 783 spaces and a newline
    ends = np.flatnonzero(b == ord("\n"))
    starts = np.concatenate(([0], ends[:-1] + 1))
    bad_rows = np.flatnonzero(ends - starts != row_bytes - 1)
    if bad_rows.size == 0:
        rows = b.reshape(-1, row_bytes)
        digits_ok = ((rows[:, 0::2] == ord("0")) | (rows[:, 0::2] == ord("1"))).all(axis=1)
        spaces_ok = (rows[:, 1:-1:2] == ord(" ")).all(axis=1)
        bad_rows = np.flatnonzero(~(digits_ok & spaces_ok))
        if bad_rows.size == 0:
            return (rows[:, 0::2] - ord("0")).astype(np.float32)
    i = int(bad_rows[0])
    tokens = buf[starts[i] : ends[i]].split()
    if len(tokens) != _AMAT_VALUES:
        raise ValueError(
            f"{path}: row {i + 1} has {len(tokens)} values; binarized MNIST rows have {_AMAT_VALUES} values '0'/'1' separated by single spaces. The file is truncated or not a binarized MNIST .amat file."
        )
    j = next((j for j, t in enumerate(tokens) if t not in (b"0", b"1")), None)
    if j is not None:
        raise ValueError(
            f"{path}: row {i + 1}, column {j + 1} is {tokens[j].decode(errors='replace')!r}; binarized MNIST values must be 0 or 1."
        )
    raise ValueError(
        f"{path}: row {i + 1} has 784 values but they are not separated by single spaces; expected the .amat layout '0 1 0 ...' with one space between values."
    )
