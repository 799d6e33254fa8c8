r"""Maximum-likelihood linear-Gaussian models: closed-form PPCA and factor analysis by EM.

Both estimators work from the sample mean and the (1/N) sample covariance, and return a
:class:`LinearGaussianEstimate` whose :meth:`~LinearGaussianEstimate.to_vae` gives the fit as
a VAE of this package.

References
----------
.. [1] M. E. Tipping and C. M. Bishop, "Probabilistic principal component analysis",
   J. R. Stat. Soc. B 61(3), 611-622, 1999. doi:10.1111/1467-9868.00196
.. [2] C. M. Bishop, "Pattern Recognition and Machine Learning", Springer, 2006, Section 12.2.4.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from bayesvae._checks import positive_int
from bayesvae.data import as_tensor
from bayesvae.models.likelihoods import Gaussian
from bayesvae.models.linear._kernels import LOG_2PI, capacitance, inv_softplus
from bayesvae.models.linear.exact import exact_log_likelihood
from bayesvae.models.linear.isotropic import IsotropicGaussian
from bayesvae.models.priors import GaussianPrior
from bayesvae.models.vae import VAE
from bayesvae.nn import MLP

__all__ = ["ConvergenceWarning", "LinearGaussianEstimate", "factor_analysis_em", "ppca_mle"]


class ConvergenceWarning(UserWarning):
    """An iterative estimator stopped at its iteration limit before meeting its tolerance."""


@dataclass(frozen=True)
class LinearGaussianEstimate:
    r"""A maximum-likelihood linear-Gaussian model (from :func:`ppca_mle` or :func:`factor_analysis_em`).

    Attributes
    ----------
    W : Tensor of shape (D, L), float64
        Loadings (identified only up to a rotation :math:`W R`, :math:`R R^\top = I`).
    mu : Tensor of shape (D,), float64
        Mean (the sample mean).
    psi : Tensor of shape (D,), float64
        Noise variances (all equal to ``sigma2`` for PPCA).
    sigma2 : float or None
        The isotropic noise variance of PPCA; None for factor analysis.
    log_likelihood : float
        Mean per-data-point log-likelihood of the fitting data at the estimate.
    trace : Tensor of shape (n_iter + 1,), float64
        Mean per-point log-likelihood at the initial values (``trace[0]``) and after each
        iteration; for the closed form, the single final value.
    n_iter : int
        Iterations run (0 for the closed form).
    converged : bool
        Whether the tolerance was met (always True for the closed form).
    method : str
        ``"ppca"`` or ``"factor_analysis"``.
    """

    W: torch.Tensor
    mu: torch.Tensor
    psi: torch.Tensor
    sigma2: float | None
    log_likelihood: float
    trace: torch.Tensor
    n_iter: int
    converged: bool
    method: str

    @property
    def latent_dim(self) -> int:
        """:math:`L`."""
        return int(self.W.shape[1])

    @property
    def data_dim(self) -> int:
        """:math:`D`."""
        return int(self.W.shape[0])

    def log_prob(self, x: Any) -> torch.Tensor:
        """Exact per-point log-likelihood ``(n,)`` (float64) of new data ``x`` of shape (n, D)."""
        xt, info = as_tensor(x, dtype=torch.float64)
        if info.data_dim != self.data_dim:
            raise ValueError(
                f"x has {info.data_dim} columns but the estimate has data_dim={self.data_dim}; pass data with matching columns"
            )
        return exact_log_likelihood(self.W, self.mu, self.psi, xt)

    def to_vae(self) -> VAE:
        """The estimate as a fitted (float32) VAE: :func:`ppca` or :func:`factor_analysis`.

        Its :func:`model_log_likelihood` equals :meth:`log_prob` up to float32 rounding of
        the parameters, and it can be used as an initialization for :func:`bayesvae.fit`.
        """
        scale = self.psi.sqrt()
        # min_scale must sit below the smallest noise scale for softplus to represent it.
        min_scale = min(1e-3, 0.5 * float(scale.min()))
        if self.sigma2 is not None:
            s = math.sqrt(self.sigma2)
            model = VAE(
                prior=GaussianPrior(self.latent_dim),
                likelihood=IsotropicGaussian(init_scale=max(1.0, 2 * s), min_scale=min_scale),
                decoder=MLP(self.latent_dim, self.data_dim, hidden=()),
            )
            raw = torch.tensor(inv_softplus(s - min_scale))
        else:
            model = VAE(
                prior=GaussianPrior(self.latent_dim),
                likelihood=Gaussian(data_dim=self.data_dim, min_scale=min_scale),
                decoder=MLP(self.latent_dim, self.data_dim, hidden=()),
            )
            raw = torch.log(torch.expm1(scale - min_scale))
        layer = model.decoder.net[0]
        with torch.no_grad():
            layer.weight.copy_(self.W)
            layer.bias.copy_(self.mu)
            model.likelihood.raw_scale.copy_(raw)
        return model


def _prepare(
    x: Any, latent_dim: Any, method: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated float64 data, its mean and its (1/N) covariance."""
    latent_dim = positive_int("latent_dim", latent_dim)
    xt, info = as_tensor(x, dtype=torch.float64, name=f"{method} data")
    n, d = xt.shape
    if latent_dim >= d:
        raise ValueError(
            f"latent_dim={latent_dim} must be smaller than the data dimension {d} for {method}: with latent_dim >= {d} the model is not identified. Choose latent_dim < {d}."
        )
    if n <= latent_dim:
        raise ValueError(
            f"{method} with latent_dim={latent_dim} needs more rows than latent_dim; the data have {n} rows. Use at least {latent_dim + 1} rows or a smaller latent_dim."
        )
    mean = xt.mean(0)
    r = xt - mean
    return xt, mean, (r.T @ r) / n


def _mean_log_likelihood(W: torch.Tensor, psi: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """Mean per-point log-likelihood at the sample mean, from the (1/N) covariance ``S``."""
    # -1/2 [D log 2 pi + log|C| + tr(C^-1 S)] (Tipping & Bishop eq. 4, per point), with
    # tr(C^-1 S) = tr(Psi^-1 S) - tr(M^-1 A^T S A) by Woodbury.
    A, chol = capacitance(W, psi)
    K = A.T @ S @ A
    trace = (S.diagonal() / psi).sum() - torch.cholesky_solve(K, chol).diagonal().sum()
    logdet = 2.0 * chol.diagonal().log().sum() + psi.log().sum()
    return -0.5 * (W.shape[0] * LOG_2PI + logdet + trace)


def ppca_mle(x: Any, latent_dim: int) -> LinearGaussianEstimate:
    r"""Closed-form maximum-likelihood probabilistic PCA.

    Parameters
    ----------
    x : Tensor, ndarray, DataFrame or Dataset of shape (n, D)
        Data (finite; more rows than ``latent_dim``).
    latent_dim : int
        :math:`L`, with :math:`1 \le L < D`.

    Returns
    -------
    LinearGaussianEstimate
        ``W``, ``mu``, ``psi`` (all :math:`\sigma^2`), ``sigma2``, ``log_likelihood``;
        ``n_iter=0``, ``converged=True``.

    Raises
    ------
    TypeError
        ``latent_dim`` not an int.
    ValueError
        NaN/inf in ``x``, ``latent_dim >= D``, ``n <= latent_dim``, or data whose covariance
        has rank :math:`\le L` (then :math:`\sigma^2 = 0` and the likelihood is unbounded).

    Notes
    -----
    With the sample covariance :math:`S = \frac1N \sum_n (x_n - \bar x)(x_n - \bar x)^\top`,
    eigenvalues :math:`\lambda_1 \ge \dots \ge \lambda_D` and leading eigenvectors
    :math:`U_L`, the maximum of the likelihood is at ([1]_, eqs. (7)-(8))

    .. math::

        \mu = \bar x, \qquad
        \sigma^2 = \frac{1}{D - L} \sum_{j = L + 1}^{D} \lambda_j, \qquad
        W = U_L (\Lambda_L - \sigma^2 I)^{1/2} R,

    with :math:`R = I` here (any rotation gives the same likelihood).

    References
    ----------
    .. [1] M. E. Tipping and C. M. Bishop, "Probabilistic principal component analysis",
       J. R. Stat. Soc. B 61(3), 611-622, 1999. doi:10.1111/1467-9868.00196

    Examples
    --------
    >>> from bayesvae.datasets import linear_gaussian
    >>> data, truth = linear_gaussian(500, 10, 2, noise=0.5, seed=0)
    >>> est = ppca_mle(data.x, 2)
    >>> round(est.sigma2, 2)  # the true noise variance is 0.5 ** 2
    0.25
    """
    _, mean, S = _prepare(x, latent_dim, "PPCA")
    L, D = int(latent_dim), S.shape[0]
    evals, evecs = torch.linalg.eigh(S)
    evals, evecs = evals.flip(0), evecs.flip(1)
    sigma2 = float(evals[L:].mean())  # eq. (8)
    if not sigma2 > 1e-12 * max(float(evals[0]), 1e-300):
        raise ValueError(
            f"PPCA: the data's covariance has rank <= latent_dim={L} (the discarded eigenvalues average {sigma2:g}), so the noise variance is 0 and the likelihood is unbounded. Use a smaller latent_dim or more varied data."
        )
    W = evecs[:, :L] * (evals[:L] - sigma2).clamp_min(0.0).sqrt()  # eq. (7), R = I
    psi = torch.full((D,), sigma2, dtype=torch.float64)
    ll = _mean_log_likelihood(W, psi, S)
    return LinearGaussianEstimate(
        W=W,
        mu=mean,
        psi=psi,
        sigma2=sigma2,
        log_likelihood=float(ll),
        trace=ll.reshape(1),
        n_iter=0,
        converged=True,
        method="ppca",
    )


def factor_analysis_em(
    x: Any,
    latent_dim: int,
    *,
    tol: float = 1e-6,
    max_iter: int = 1000,
    seed: int = 0,
) -> LinearGaussianEstimate:
    r"""Maximum-likelihood factor analysis by expectation-maximization.

    Parameters
    ----------
    x : Tensor, ndarray, DataFrame or Dataset of shape (n, D)
        Data (finite, no constant column, more rows than ``latent_dim``).
    latent_dim : int
        :math:`L`, with :math:`1 \le L < D`.
    tol : float, default 1e-6
        Stop when an iteration raises the mean per-point log-likelihood by less than ``tol``
        nats.
    max_iter : int, default 1000
        Iteration limit; reaching it issues a :class:`ConvergenceWarning`.
    seed : int, default 0
        Seed of the random initial loadings.

    Returns
    -------
    LinearGaussianEstimate
        ``W``, ``mu``, ``psi``, ``sigma2=None``, ``log_likelihood``, the per-iteration
        ``trace``, ``n_iter`` and ``converged``.

    Raises
    ------
    TypeError
        ``latent_dim`` or ``max_iter`` not an int.
    ValueError
        NaN/inf in ``x``, ``latent_dim >= D``, ``n <= latent_dim``, a constant column
        (zero variance: its :math:`\psi_d \to 0` and the likelihood is unbounded), or
        ``tol`` not a positive finite number, or ``max_iter < 1``.

    Warns
    -----
    ConvergenceWarning
        When ``max_iter`` iterations did not meet ``tol``.

    Notes
    -----
    With :math:`\mu = \bar x`, :math:`S` the (1/N) sample covariance and
    :math:`G = (I + W^\top \Psi^{-1} W)^{-1}` (12.68), the E-step ([1]_ eqs. (12.66)-(12.67))

    .. math::

        \mathbb E[z_n] = G W^\top \Psi^{-1} (x_n - \bar x), \qquad
        \mathbb E[z_n z_n^\top] = G + \mathbb E[z_n] \mathbb E[z_n]^\top

    and the M-step (12.69)-(12.70)

    .. math::

        W^{\rm new} = \Bigl[\sum_n (x_n - \bar x) \mathbb E[z_n]^\top\Bigr]
                      \Bigl[\sum_n \mathbb E[z_n z_n^\top]\Bigr]^{-1}, \qquad
        \Psi^{\rm new} = \mathrm{diag}\Bigl\{S - W^{\rm new} \frac1N \sum_n
                         \mathbb E[z_n] (x_n - \bar x)^\top\Bigr\}

    are written in terms of :math:`S` (:math:`O(D^2 L)` per iteration, independent of
    :math:`N`). Each iteration cannot lower the likelihood (the EM guarantee, [1]_ §9.4);
    ``trace`` records it. :math:`\psi_d` is floored at :math:`10^{-12} S_{dd}`.
    Initial values: :math:`\Psi = \mathrm{diag}(S)/2` and
    :math:`W_{dl} \sim \mathcal N(0, S_{dd} / (2L))`.

    References
    ----------
    .. [1] C. M. Bishop, "Pattern Recognition and Machine Learning", Springer, 2006,
       Section 12.2.4, eqs. (12.66)-(12.70).
    .. [2] D. B. Rubin and D. T. Thayer, "EM algorithms for ML factor analysis",
       Psychometrika 47, 69-76, 1982. doi:10.1007/BF02293851

    Examples
    --------
    >>> from bayesvae.datasets import linear_gaussian
    >>> data, truth = linear_gaussian(500, 10, 2, seed=0)
    >>> est = factor_analysis_em(data.x, 2)
    >>> est.converged, est.psi.shape
    (True, torch.Size([10]))
    """
    if not (isinstance(tol, (int, float)) and tol > 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    max_iter = positive_int("max_iter", max_iter)
    _, mean, S = _prepare(x, latent_dim, "factor analysis")
    W, psi, var = _em_init(S, int(latent_dim), seed)
    floor = 1e-12 * var
    trace = [_mean_log_likelihood(W, psi, S)]
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 (n_iter is reported)
        W, psi = _em_step(W, psi, S, var, floor)
        trace.append(_mean_log_likelihood(W, psi, S))
        if float(trace[-1] - trace[-2]) < tol:
            converged = True
            break
    if not converged:
        warnings.warn(
            f"factor_analysis_em did not converge in max_iter={max_iter} iterations (last log-likelihood change {float(trace[-1] - trace[-2]):.3g} nats per point >= tol={tol}); increase max_iter or tol.",
            ConvergenceWarning,
            stacklevel=2,
        )
    ll = torch.stack(trace)
    return LinearGaussianEstimate(
        W=W,
        mu=mean,
        psi=psi,
        sigma2=None,
        log_likelihood=float(ll[-1]),
        trace=ll,
        n_iter=n_iter,
        converged=converged,
        method="factor_analysis",
    )


def _em_step(
    W: torch.Tensor, psi: torch.Tensor, S: torch.Tensor, var: torch.Tensor, floor: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One EM iteration of factor analysis on the (1/N) covariance ``S``: new ``(W, psi)``."""
    # E-step: G (12.68); E[z_n] = B^T (x_n - xbar) with B = Psi^-1 W G (12.66).
    A, chol = capacitance(W, psi)
    G = torch.cholesky_inverse(chol)
    B = A @ G
    SB = S @ B  # (1/N) sum_n (x_n - xbar) E[z_n]^T
    Ezz = G + B.T @ SB  # (1/N) sum_n E[z_n z_n^T]  (12.67)
    # M-step (12.69)-(12.70).
    W = torch.linalg.solve(Ezz, SB.T).T
    psi = torch.maximum(var - (W * SB).sum(-1), floor)
    return W, psi


def _em_init(S: torch.Tensor, L: int, seed: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Initial ``(W, psi)`` of factor-analysis EM and the column variances (none constant)."""
    D = S.shape[0]
    var = S.diagonal().clone()
    constant = torch.nonzero(var <= 1e-12 * var.max().clamp_min(1e-300)).flatten().tolist()
    if constant:
        raise ValueError(
            f"factor analysis needs every column to vary, but column(s) {constant[:10]} are constant (zero variance): their noise variance psi would go to 0 and the likelihood is unbounded. Drop those columns, or use ppca_mle (one shared noise variance)."
        )
    gen = torch.Generator().manual_seed(int(seed))
    W = torch.randn(D, L, generator=gen, dtype=torch.float64) * (var / (2 * L)).sqrt().unsqueeze(-1)
    return W, var / 2, var
