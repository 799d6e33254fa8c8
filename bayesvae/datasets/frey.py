"""Reader of the Frey Face video frames (Roweis's ``frey_rawface.mat``).

References
----------
.. [4] Kingma, D. P. and Welling, M. (2014). Auto-encoding variational Bayes. *ICLR*.
   arXiv:1312.6114
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import scipy.io

from bayesvae.datasets._files import check_exists
from bayesvae.datasets.record import Dataset

__all__ = ["read_frey_face"]

_FREY_SHAPE = (28, 20)
_FREY_PIXELS = _FREY_SHAPE[0] * _FREY_SHAPE[1]


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
    check_exists(path)
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
