"""Data sets that ship with an installed library, so nothing is downloaded."""

from __future__ import annotations

import numpy as np

from bayesvae._checks import real_number
from bayesvae.datasets.record import Dataset

# scikit-learn is imported inside digits: importing it costs about a second, which every CLI
# command would otherwise pay.

__all__ = ["digits"]


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
    threshold = real_number("threshold", threshold)
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
