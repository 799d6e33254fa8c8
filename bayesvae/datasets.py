"""Data sets: embedded, synthetic with a known truth, and readers for standard files.

Nothing here downloads. ``digits`` is embedded in scikit-learn; ``linear_gaussian`` and
``bars`` simulate data whose generating parameters are returned alongside; the readers parse
files the user already has (MNIST IDX, Larochelle's binarized MNIST, Frey Face) and check them
byte for byte against their declared format. ``load`` maps a CLI argument to one of these.

Every function returns a :class:`Dataset`: a float32 matrix with one observation per row, plus
optional labels, image shape and column names.

References
----------
.. [1] LeCun, Y., Bottou, L., Bengio, Y. and Haffner, P. (1998). Gradient-based learning
   applied to document recognition. *Proc. IEEE* 86(11), 2278-2324. doi:10.1109/5.726791
.. [2] Salakhutdinov, R. and Murray, I. (2008). On the quantitative analysis of deep belief
   networks. *ICML*. doi:10.1145/1390156.1390266
.. [3] Larochelle, H. and Murray, I. (2011). The neural autoregressive distribution
   estimator. *AISTATS*, PMLR 15, 29-37.
.. [4] Kingma, D. P. and Welling, M. (2014). Auto-encoding variational Bayes. *ICLR*.
   arXiv:1312.6114
.. [5] Tipping, M. E. and Bishop, C. M. (1999). Probabilistic principal component analysis.
   *J. R. Stat. Soc. B* 61(3), 611-622. doi:10.1111/1467-9868.00196
.. [6] Griffiths, T. L. and Ghahramani, Z. (2005). Infinite latent feature models and the
   Indian buffet process. *NIPS 18*; and (2011) The Indian buffet process: an introduction
   and review. *JMLR* 12, 1185-1224.
.. [7] Alpaydin, E. and Kaynak, C. (1998). Optical recognition of handwritten digits. UCI
   Machine Learning Repository. doi:10.24432/C50P49
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import numbers
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.io

# scikit-learn is imported where it is used (digits, Dataset.split): importing it costs about
# a second, which every CLI command would otherwise pay.

__all__ = [
    "Dataset",
    "bars",
    "digits",
    "linear_gaussian",
    "load",
    "read_binarized_mnist",
    "read_frey_face",
    "read_mnist_idx",
]

logger = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
_IDX3_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (images)
_IDX1_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (labels)
_MNIST_SIDE = 28
_AMAT_VALUES = _MNIST_SIDE * _MNIST_SIDE
_FREY_SHAPE = (28, 20)
_FREY_PIXELS = _FREY_SHAPE[0] * _FREY_SHAPE[1]

# The four features of the synthetic image example of Griffiths & Ghahramani [6]: one 3x3
# shape per quadrant of a 6x6 image, so no two features share a pixel.
_BARS_FEATURES = np.array(
    [
        # 0: plus sign, top-left quadrant
        [
            [0, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [0, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ],
        # 1: hollow square (ring), top-right quadrant
        [
            [0, 0, 0, 1, 1, 1],
            [0, 0, 0, 1, 0, 1],
            [0, 0, 0, 1, 1, 1],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ],
        # 2: lower triangle (staircase), bottom-left quadrant
        [
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
        ],
        # 3: letter T, bottom-right quadrant
        [
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 1, 1, 1],
            [0, 0, 0, 0, 1, 0],
            [0, 0, 0, 0, 1, 0],
        ],
    ],
    dtype=np.float64,
)
_BARS_FEATURES.flags.writeable = False


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data matrix with one observation per row and optional labels and metadata.

    Parameters
    ----------
    x : ndarray of shape (n, d)
        Observations; stored as C-contiguous float32 (converted if needed). Images are
        flattened row-major, so ``x[i].reshape(image_shape)`` is image ``i``.
    labels : ndarray of shape (n,), optional
        Integer class labels, stored as int64 (e.g. the digit of an MNIST image). They are
        for evaluation and stratified splits only; no model here is fitted to them.
    image_shape : tuple of int, optional
        Image shape whose product is ``d``, e.g. ``(28, 28)``; None for tabular data.
    columns : tuple of str, optional
        One name per column of ``x``.
    name : str
        Short identifier, e.g. ``"digits"`` or ``"t10k-images-idx3-ubyte"``.
    description : str
        Origin and preprocessing, in a sentence or two.

    Raises
    ------
    TypeError
        If ``x`` is not numeric or ``labels`` are not integers.
    ValueError
        If ``x`` is not 2-D with at least one row and column, or if ``labels``,
        ``image_shape`` or ``columns`` do not match the shape of ``x``.

    Notes
    -----
    The instance is frozen (fields cannot be rebound) but the arrays stay writeable, so that
    ``torch.from_numpy`` shares them without a warning; do not modify them in place. Equality
    is identity (``eq=False``), because elementwise array comparison has no single truth value.

    Examples
    --------
    >>> import numpy as np
    >>> ds = Dataset(np.zeros((4, 6)), labels=np.array([0, 1, 0, 1]), image_shape=(2, 3))
    >>> ds.n, ds.d, ds.x.dtype
    (4, 6, dtype('float32'))
    """

    x: np.ndarray
    labels: np.ndarray | None = None
    image_shape: tuple[int, ...] | None = None
    columns: tuple[str, ...] | None = None
    name: str = "data"
    description: str = ""

    def __post_init__(self) -> None:
        x = np.asarray(self.x)
        if x.dtype.kind not in "biuf":
            raise TypeError(
                f"Dataset.x must be numeric; got dtype {x.dtype}. Encode non-numeric values as numbers first."
            )
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(
                f"Dataset.x must be a non-empty 2-D array of shape (n, d); got shape {x.shape}. Flatten images with x.reshape(len(x), -1) and pass image_shape."
            )
        n, d = x.shape
        object.__setattr__(self, "x", np.ascontiguousarray(x, dtype=np.float32))
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.dtype.kind not in "iu":
                raise TypeError(
                    f"Dataset.labels must be integers; got dtype {labels.dtype}. Encode classes as 0, 1, 2, ..."
                )
            if labels.shape != (n,):
                raise ValueError(
                    f"Dataset.labels must have shape ({n},), one per row of x; got shape {labels.shape}."
                )
            object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))
        if self.image_shape is not None:
            shape = tuple(int(s) for s in self.image_shape)
            if not shape or min(shape) < 1 or int(np.prod(shape)) != d:
                raise ValueError(
                    f"Dataset.image_shape {shape} does not match the {d} columns of x; its product must equal d."
                )
            object.__setattr__(self, "image_shape", shape)
        if self.columns is not None:
            columns = tuple(str(c) for c in self.columns)
            if len(columns) != d:
                raise ValueError(
                    f"Dataset.columns has {len(columns)} names but x has {d} columns; give one name per column."
                )
            object.__setattr__(self, "columns", columns)

    @property
    def n(self) -> int:
        """Number of observations (rows of ``x``)."""
        return int(self.x.shape[0])

    @property
    def d(self) -> int:
        """Number of features (columns of ``x``)."""
        return int(self.x.shape[1])

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Split the rows at random into a training and a test set.

        Parameters
        ----------
        test_fraction : float
            Fraction of rows in the test set, in (0, 1); the test set has
            ``ceil(test_fraction * n)`` rows (scikit-learn's rounding).
        seed : int
            Seed of the permutation; the same seed gives the same split.

        Returns
        -------
        train : Dataset
            The remaining rows, in shuffled order, named ``f"{name}[train]"``.
        test : Dataset
            The held-out rows, in shuffled order, named ``f"{name}[test]"``.

        Raises
        ------
        ValueError
            If ``test_fraction`` is not in (0, 1), or (from scikit-learn) if stratification is
            impossible because a class has fewer than two members.

        Notes
        -----
        When ``labels`` exist the split is stratified: each class keeps its proportion in
        both parts (up to rounding), via :func:`sklearn.model_selection.train_test_split`.

        Examples
        --------
        >>> train, test = digits().split(0.25, seed=1)
        >>> train.n, test.n
        (1347, 450)
        """
        fraction = _check_real(test_fraction, "test_fraction")
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"test_fraction must lie in (0, 1); got {fraction}.")
        from sklearn.model_selection import train_test_split

        train, test = train_test_split(
            np.arange(self.n), test_size=fraction, random_state=seed, stratify=self.labels
        )
        return self._subset(train, "train"), self._subset(test, "test")

    def _subset(self, index: np.ndarray, part: str) -> Dataset:
        """Rows ``index`` as a new Dataset named after ``part``."""
        labels = None if self.labels is None else self.labels[index]
        description = f"{self.description} Rows: the {part} part of a random split ({len(index)} of {self.n}).".strip()
        return dataclasses.replace(
            self,
            x=self.x[index],
            labels=labels,
            name=f"{self.name}[{part}]",
            description=description,
        )


def digits(*, binarize: bool = False, threshold: float = 0.5) -> Dataset:
    """Load scikit-learn's embedded 8x8 handwritten digits (UCI optdigits test set).

    Parameters
    ----------
    binarize : bool
        If True, return ``x > threshold`` as {0, 1}, for a Bernoulli likelihood.
    threshold : float
        Threshold in (0, 1) on the scaled pixels; used only when ``binarize`` is True but
        checked always.

    Returns
    -------
    Dataset
        ``x`` of shape (1797, 64) with values ``k / 16`` for k in 0..16 (or {0, 1});
        ``labels`` the digits 0..9; ``image_shape`` (8, 8); ``columns`` ``"px_<row>_<col>"``
        (``"px_0_0"`` ... ``"px_7_7"``), row-major.

    Raises
    ------
    TypeError
        If ``threshold`` is not a real number.
    ValueError
        If ``threshold`` is not in (0, 1).

    Notes
    -----
    Each pixel counts the "on" pixels of a 4x4 block of a 32x32 bitmap, so raw values are
    integers 0..16 [7]_; dividing by 16 maps them onto [0, 1]. The data ship with
    scikit-learn, so nothing is downloaded.

    References
    ----------
    .. [7] Alpaydin, E. and Kaynak, C. (1998). Optical recognition of handwritten digits.
       UCI Machine Learning Repository. doi:10.24432/C50P49

    Examples
    --------
    >>> ds = digits(binarize=True)
    >>> ds.x.shape, ds.image_shape, sorted(set(ds.x.ravel().tolist()))
    ((1797, 64), (8, 8), [0.0, 1.0])
    """
    threshold = _check_real(threshold, "threshold")
    if not 0.0 < threshold < 1.0:
        raise ValueError(
            f"threshold must lie in (0, 1), because pixels are scaled to [0, 1]; got {threshold}."
        )
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    if binarize:
        x = (x > threshold).astype(np.float32)
    columns = tuple(f"px_{r}_{c}" for r in range(8) for c in range(8))
    preprocessing = (
        f"binarized as pixel > {threshold}" if binarize else "pixel counts / 16 in [0, 1]"
    )
    return Dataset(
        x=x,
        labels=bunch.target.astype(np.int64),
        image_shape=(8, 8),
        columns=columns,
        name="digits-binary" if binarize else "digits",
        description=f"scikit-learn's 8x8 handwritten digits (1797 images, UCI optdigits); {preprocessing}.",
    )


def linear_gaussian(
    n: int = 1000,
    data_dim: int = 20,
    latent_dim: int = 3,
    noise: float = 0.5,
    *,
    seed: int = 0,
) -> tuple[Dataset, dict[str, Any]]:
    r"""Simulate the linear-Gaussian (probabilistic PCA) model with a known truth.

    Parameters
    ----------
    n : int
        Number of observations, positive.
    data_dim : int
        Observed dimension D, positive.
    latent_dim : int
        Latent dimension L, with ``1 <= L < D``.
    noise : float
        Noise standard deviation sigma, positive.
    seed : int
        Seed of ``np.random.default_rng``.

    Returns
    -------
    dataset : Dataset
        ``x`` of shape (n, D), float32; no labels, image shape or column names.
    truth : dict
        ``"W"``: ndarray (D, L), the loadings; ``"mu"``: ndarray (D,), the mean;
        ``"noise"``: float, sigma; ``"z"``: ndarray (n, L), the latent draws. All float64.

    Raises
    ------
    TypeError
        If a size is not an integer or ``noise`` is not a real number.
    ValueError
        If a size is not positive, ``latent_dim >= data_dim``, or ``noise <= 0``.

    Notes
    -----
    The model of [5]_:

    .. math::

        z_i \sim \mathcal N(0, I_L), \qquad
        x_i = W z_i + \mu + \sigma \varepsilon_i, \quad \varepsilon_i \sim \mathcal N(0, I_D),

    with :math:`W_{dl} \sim \mathcal N(0, 1)` and :math:`\mu_d \sim \mathcal N(0, 1)`, so
    marginally :math:`x_i \sim \mathcal N(\mu, W W^\top + \sigma^2 I_D)`, which the exact
    PPCA/FA log-likelihood can be checked against. Draws are made in the order W, mu, z,
    epsilon from one generator, so the data can be replayed from the seed.

    References
    ----------
    .. [5] Tipping, M. E. and Bishop, C. M. (1999). Probabilistic principal component
       analysis. *J. R. Stat. Soc. B* 61(3), 611-622, eq. (2)-(6).
       doi:10.1111/1467-9868.00196

    Examples
    --------
    >>> ds, truth = linear_gaussian(n=100, data_dim=5, latent_dim=2, seed=1)
    >>> ds.x.shape, truth["W"].shape, truth["z"].shape
    ((100, 5), (5, 2), (100, 2))
    """
    n = _check_positive_int(n, "n")
    data_dim = _check_positive_int(data_dim, "data_dim")
    latent_dim = _check_positive_int(latent_dim, "latent_dim")
    if latent_dim >= data_dim:
        raise ValueError(
            f"latent_dim must be smaller than data_dim; got latent_dim={latent_dim}, data_dim={data_dim}."
        )
    noise = _check_real(noise, "noise")
    if not noise > 0.0:
        raise ValueError(f"noise (the noise standard deviation) must be positive; got {noise}.")
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((data_dim, latent_dim))
    mu = rng.standard_normal(data_dim)
    z = rng.standard_normal((n, latent_dim))
    eps = rng.standard_normal((n, data_dim))
    x = z @ w.T + mu + noise * eps
    dataset = Dataset(
        x=x,
        name="linear_gaussian",
        description=f"Simulated PPCA data: x = W z + mu + {noise} eps with D={data_dim}, L={latent_dim}, n={n}, seed={seed}.",
    )
    return dataset, {"W": w, "mu": mu, "noise": noise, "z": z}


def bars(
    n: int = 1000,
    *,
    side: int = 6,
    noise: float = 0.5,
    prob: float = 0.5,
    seed: int = 0,
) -> tuple[Dataset, dict[str, Any]]:
    r"""Simulate the binary-latent-feature images of Griffiths & Ghahramani (2005).

    Parameters
    ----------
    n : int
        Number of images, positive.
    side : int
        Image side length, a multiple of 6; for ``side = 6 s`` each pixel of the 6x6
        features becomes an s x s block.
    noise : float
        Standard deviation of the additive Gaussian noise, ``>= 0`` (0 gives exact {0, 1}
        images).
    prob : float
        Probability that an image contains a feature, in (0, 1).
    seed : int
        Seed of ``np.random.default_rng``.

    Returns
    -------
    dataset : Dataset
        ``x`` of shape (n, side * side), float32; ``image_shape`` (side, side).
    truth : dict
        ``"A"``: ndarray (4, side * side), float64 {0, 1}, the features as rows;
        ``"Z"``: ndarray (n, 4), int64 {0, 1}, which features each image contains.

    Raises
    ------
    TypeError
        If ``n`` or ``side`` is not an integer, or ``noise`` or ``prob`` not a real number.
    ValueError
        If ``n < 1``, ``side`` is not a positive multiple of 6, ``noise < 0``, or ``prob``
        is not in (0, 1).

    Notes
    -----
    The linear-Gaussian binary latent feature model of [6]_:

    .. math::

        Z_{nk} \sim \mathrm{Bernoulli}(p), \qquad
        X = Z A + E, \quad E_{nd} \sim \mathcal N(0, \sigma^2),

    with K = 4 fixed features, the ones of the synthetic example in [6]_, each a 3x3 shape in
    its own quadrant of the 6x6 image, so no two features share a pixel:

    - feature 0: a plus sign, top-left;
    - feature 1: a hollow 3x3 square (ring), top-right;
    - feature 2: a lower triangle (staircase), bottom-left;
    - feature 3: a letter T, bottom-right.

    ``Z`` is drawn before the noise, from one generator. A finite Bernoulli(p) matrix is
    what an IBP prior should recover as K+ = 4 active features.

    References
    ----------
    .. [6] Griffiths, T. L. and Ghahramani, Z. (2005). Infinite latent feature models and the
       Indian buffet process. *NIPS 18*; and (2011) The Indian buffet process: an
       introduction and review. *JMLR* 12, 1185-1224.

    Examples
    --------
    >>> ds, truth = bars(n=50, seed=3)
    >>> ds.x.shape, ds.image_shape, truth["A"].shape, truth["Z"].shape
    ((50, 36), (6, 6), (4, 36), (50, 4))
    """
    n = _check_positive_int(n, "n")
    side = _check_positive_int(side, "side")
    if side % 6 != 0:
        raise ValueError(
            f"side must be a multiple of 6 (6, 12, 18, ...), because the four 6x6 features are enlarged by an integer factor; got side={side}."
        )
    noise = _check_real(noise, "noise")
    if not noise >= 0.0:
        raise ValueError(f"noise (the noise standard deviation) must be >= 0; got {noise}.")
    prob = _check_real(prob, "prob")
    if not 0.0 < prob < 1.0:
        raise ValueError(
            f"prob must lie in (0, 1), so that every feature is neither always off nor always on; got {prob}."
        )
    scale = side // 6
    block = np.ones((scale, scale))
    a = np.stack([np.kron(f, block).ravel() for f in _BARS_FEATURES])
    rng = np.random.default_rng(seed)
    z = (rng.random((n, a.shape[0])) < prob).astype(np.int64)
    x = z @ a + noise * rng.standard_normal((n, side * side))
    dataset = Dataset(
        x=x,
        image_shape=(side, side),
        name="bars",
        description=f"Simulated Griffiths-Ghahramani feature images: X = Z A + N(0, {noise}^2), {side}x{side}, Z ~ Bernoulli({prob}), n={n}, seed={seed}.",
    )
    return dataset, {"A": a, "Z": z}


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
    images = _parse_idx(_read_bytes(images_path), images_path, ndim=3)
    n, rows, cols = images.shape
    x = images.reshape(n, rows * cols).astype(np.float32) / np.float32(255.0)
    labels = None
    if labels_path is not None:
        labels_path = Path(labels_path)
        raw_labels = _parse_idx(_read_bytes(labels_path), labels_path, ndim=1)
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
        name=_stem(images_path),
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
    x = _parse_amat(_read_bytes(path), path)
    return Dataset(
        x=x,
        image_shape=(_MNIST_SIDE, _MNIST_SIDE),
        name=_stem(path),
        description=f"Statically binarized MNIST (Larochelle) read from {path} ({len(x)} images, values in {{0, 1}}).",
    )


def read_frey_face(path: str | os.PathLike[str]) -> Dataset:
    """Read the Frey Face video frames from Roweis's ``frey_rawface.mat``.

    Parameters
    ----------
    path : str or path
        MATLAB v5 file holding the variable ``ff``: uint8 of shape (560, n_frames), one
        28x20 frame per column (1965 frames in the original).

    Returns
    -------
    Dataset
        ``x`` of shape (n_frames, 560), float32, pixel / 255 in [0, 1], frames in video
        order; ``labels`` None; ``image_shape`` (28, 20).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file cannot be read as a .mat file, has no variable ``ff``, or ``ff`` is not
        a (560, n) array of values in [0, 255].

    Notes
    -----
    Frame i is ``ff[:, i].reshape(28, 20)`` in row-major order, face upright. Used as a
    continuous-data example by [4]_. Common splits (e.g. the first 1500 frames for
    training) are conventions, not part of the file; consecutive frames are strongly
    correlated, so a random split overstates held-out performance.

    References
    ----------
    .. [4] Kingma, D. P. and Welling, M. (2014). Auto-encoding variational Bayes. *ICLR*.
       arXiv:1312.6114

    Examples
    --------
    >>> ds = read_frey_face("frey_face/frey_rawface.mat")  # doctest: +SKIP
    >>> ds.x.shape, ds.image_shape  # doctest: +SKIP
    ((1965, 560), (28, 20))
    """
    path = Path(path)
    _check_exists(path)
    try:
        contents = scipy.io.loadmat(path)
    except NotImplementedError as err:
        raise ValueError(
            f"{path} is a MATLAB v7.3 (HDF5) file, which scipy cannot read; save it again in MATLAB with save(..., 'ff', '-v7')."
        ) from err
    except (
        scipy.io.matlab.MatReadError,
        ValueError,
        TypeError,
        OSError,
        IndexError,
        zlib.error,
    ) as err:
        raise ValueError(
            f"{path} could not be read as a MATLAB .mat file ({type(err).__name__}: {err}); it is truncated or not a .mat file."
        ) from err
    if "ff" not in contents:
        found = sorted(k for k in contents if not k.startswith("__"))
        raise ValueError(
            f"{path} has no variable 'ff' (variables found: {found}); expected Roweis's frey_rawface.mat with ff of shape (560, n_frames)."
        )
    ff = np.asarray(contents["ff"])
    if ff.ndim != 2 or ff.shape[0] != _FREY_PIXELS:
        hint = (
            " It looks transposed: store one frame per column."
            if ff.ndim == 2 and ff.shape[1] == _FREY_PIXELS
            else ""
        )
        raise ValueError(
            f"Variable 'ff' in {path} has shape {ff.shape}; expected ({_FREY_PIXELS}, n_frames), one 28x20 frame per column.{hint}"
        )
    if ff.dtype.kind not in "iuf" or ff.size == 0 or ff.min() < 0 or ff.max() > 255:
        raise ValueError(
            f"Variable 'ff' in {path} must hold pixel values in [0, 255] (uint8); got dtype {ff.dtype}."
        )
    x = ff.T.astype(np.float32) / np.float32(255.0)
    return Dataset(
        x=x,
        image_shape=_FREY_SHAPE,
        name="frey_face",
        description=f"Frey Face frames read from {path} ({x.shape[0]} frames of 28x20, video order); pixel / 255 in [0, 1].",
    )


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
            return _read_npy(path)
        return _read_table(path, pd.read_csv if tabular == ".csv" else pd.read_parquet)
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


def _read_table(path: Path, reader: Any) -> Dataset:
    """A numeric CSV/Parquet table as a Dataset with its column names."""
    _check_exists(path)
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
        name=_stem(path),
        description=f"Table read from {path} ({x.shape[0]} rows, {x.shape[1]} numeric columns).",
    )


def _read_npy(path: Path) -> Dataset:
    """A numeric ``.npy`` array as a Dataset; images (ndim >= 3) are flattened."""
    _check_exists(path)
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
        name=_stem(path),
        description=f"Array read from {path} (shape {array.shape}, dtype {array.dtype}; values as stored).",
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


def _read_bytes(path: Path) -> bytes:
    """The contents of ``path``, gunzipped if they start with the gzip magic bytes."""
    _check_exists(path)
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(
            f"{path} starts with the gzip magic bytes 1f 8b but cannot be decompressed ({err}); it is truncated or corrupt, so copy it again."
        ) from err


def _check_exists(path: Path) -> None:
    """Raise FileNotFoundError with the path when it does not exist."""
    if not path.exists():
        raise FileNotFoundError(f"No such file: {os.fspath(path)!r}.")


def _stem(path: Path) -> str:
    """File name without a trailing ``.gz`` and without the format suffix."""
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    return (
        Path(name).stem
        if Path(name).suffix.lower() in (".csv", ".parquet", ".npy", ".amat", ".mat")
        else name
    )


def _check_positive_int(value: Any, name: str) -> int:
    """``value`` as an int, if it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r} of type {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value}.")
    return int(value)


def _check_real(value: Any, name: str) -> float:
    """``value`` as a float, if it is a real number (not bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a real number; got {value!r} of type {type(value).__name__}."
        )
    return float(value)
