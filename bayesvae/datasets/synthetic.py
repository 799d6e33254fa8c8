"""Simulated data sets whose generating parameters are returned alongside the data.

References
----------
.. [5] Tipping, M. E. and Bishop, C. M. (1999). Probabilistic principal component analysis.
   *J. R. Stat. Soc. B* 61(3), 611-622. doi:10.1111/1467-9868.00196
.. [6] Griffiths, T. L. and Ghahramani, Z. (2005). Infinite latent feature models and the
   Indian buffet process. *NIPS 18*; and (2011) The Indian buffet process: an introduction
   and review. *JMLR* 12, 1185-1224.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bayesvae._checks import positive_int, real_number
from bayesvae.datasets.record import Dataset

__all__ = ["bars", "linear_gaussian"]

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
    n = positive_int("n", n)
    data_dim = positive_int("data_dim", data_dim)
    latent_dim = positive_int("latent_dim", latent_dim)
    if latent_dim >= data_dim:
        raise ValueError(
            f"latent_dim must be smaller than data_dim; got latent_dim={latent_dim}, data_dim={data_dim}."
        )
    noise = real_number("noise", noise)
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
    n = positive_int("n", n)
    side = positive_int("side", side)
    if side % 6 != 0:
        raise ValueError(
            f"side must be a multiple of 6 (6, 12, 18, ...), because the four 6x6 features are enlarged by an integer factor; got side={side}."
        )
    noise = real_number("noise", noise)
    if not noise >= 0.0:
        raise ValueError(f"noise (the noise standard deviation) must be >= 0; got {noise}.")
    prob = real_number("prob", prob)
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
