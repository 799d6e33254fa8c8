"""The :class:`Dataset` record: a float32 data matrix with optional labels and metadata."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from bayesvae._checks import real_number

__all__ = ["Dataset"]


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
        >>> from bayesvae.datasets import digits
        >>> train, test = digits().split(0.25, seed=1)
        >>> train.n, test.n
        (1347, 450)
        """
        fraction = real_number("test_fraction", test_fraction)
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
