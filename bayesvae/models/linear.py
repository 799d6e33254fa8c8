r"""Linear-Gaussian latent-variable models: factor analysis and probabilistic PCA.

Both are VAEs of this package with a standard normal prior, an *affine* decoder and a
Gaussian likelihood,

.. math::

    z_n \sim \mathcal N(0, I_L), \qquad
    x_n \mid z_n \sim \mathcal N(W z_n + \mu, \Psi),

with :math:`\Psi = \mathrm{diag}(\psi_1, \dots, \psi_D)` learned per feature (factor
analysis, :func:`factor_analysis`) or :math:`\Psi = \sigma^2 I_D` (probabilistic PCA,
:func:`ppca`). Because they *are* :class:`~bayesvae.models.VAE` objects, :func:`bayesvae.fit`,
the amortized guide (``AmortizedGuide(model, hidden=())`` is the linear encoder),
evaluation and diagnostics apply unchanged. What a linear model adds is an exact answer:

* :func:`exact_log_likelihood` -- :math:`\log \mathcal N(x \mid \mu, W W^\top + \Psi)` per data
  point, in :math:`O(D L^2)` via the :math:`L \times L` capacitance matrix;
* :func:`exact_posterior` -- :math:`p(z \mid x)`, Gaussian with a shared covariance;
* :func:`ppca_mle` -- the closed-form maximum-likelihood PPCA [1]_;
* :func:`factor_analysis_em` -- maximum-likelihood factor analysis by EM [2]_.

The estimators return a :class:`LinearGaussianEstimate`, whose :meth:`~LinearGaussianEstimate.to_vae`
gives the fitted model as a VAE, so the exact answer and the variational one can be compared
on the same footing.

References
----------
.. [1] M. E. Tipping and C. M. Bishop, "Probabilistic principal component analysis",
   J. R. Stat. Soc. B 61(3), 611-622, 1999. doi:10.1111/1467-9868.00196
.. [2] C. M. Bishop, "Pattern Recognition and Machine Learning", Springer, 2006, Section 12.2.4.
.. [3] J. Lucas, G. Tucker, R. Grosse and M. Norouzi, "Don't Blame the ELBO! A Linear VAE
   Perspective on Posterior Collapse", NeurIPS 2019, arXiv:1911.02469.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from bayesvae._registry import register
from bayesvae.data import as_tensor
from bayesvae.models.likelihoods import Gaussian, Likelihood
from bayesvae.models.priors import GaussianPrior
from bayesvae.models.vae import VAE
from bayesvae.nn import MLP

__all__ = [
    "IsotropicGaussian",
    "ppca",
    "factor_analysis",
    "linear_parameters",
    "exact_log_likelihood",
    "model_log_likelihood",
    "exact_posterior",
    "ppca_mle",
    "factor_analysis_em",
    "LinearGaussianEstimate",
    "ConvergenceWarning",
]

_LOG_2PI = math.log(2.0 * math.pi)


class ConvergenceWarning(UserWarning):
    """An iterative estimator stopped at its iteration limit before meeting its tolerance."""


# ---------------------------------------------------------------------------------------------
# The isotropic likelihood of PPCA


def _inv_softplus(y: float) -> float:
    return float(torch.log(torch.expm1(torch.tensor(float(y), dtype=torch.float64))))


@register
class IsotropicGaussian(Likelihood):
    r"""Gaussian likelihood with one learned noise scale for all features,
    :math:`x_{nd} \sim \mathcal N(f_d(z_n), \sigma^2)`.

    The likelihood of probabilistic PCA [1]_. :math:`\sigma = \mathrm{softplus}(r) +
    \sigma_{\min}` with a single learned scalar :math:`r`; ``min_scale`` keeps the density
    bounded. For one learned scale *per feature* (factor analysis) use
    ``Gaussian(data_dim=D)``.

    Parameters
    ----------
    init_scale : float, default 1.0
        Initial :math:`\sigma`; must exceed ``min_scale``.
    min_scale : float, default 1e-3
        Lower bound of :math:`\sigma`.

    References
    ----------
    .. [1] M. E. Tipping and C. M. Bishop, "Probabilistic principal component analysis",
       J. R. Stat. Soc. B 61(3), 611-622, 1999. doi:10.1111/1467-9868.00196
    """

    def __init__(self, *, init_scale: float = 1.0, min_scale: float = 1e-3) -> None:
        super().__init__()
        if not (0 < min_scale < init_scale < math.inf):
            raise ValueError(
                f"IsotropicGaussian needs 0 < min_scale < init_scale < inf, got min_scale={min_scale!r}, init_scale={init_scale!r}"
            )
        self.init_scale = float(init_scale)
        self.min_scale = float(min_scale)
        self.raw_scale = nn.Parameter(torch.tensor(_inv_softplus(init_scale - min_scale)))

    def noise_scale(self) -> torch.Tensor:
        r"""The noise standard deviation :math:`\sigma` (a differentiable scalar tensor)."""
        return F.softplus(self.raw_scale) + self.min_scale

    def feature_scale(self) -> torch.Tensor:
        """The noise scale, detached (a scalar shared by every feature)."""
        return self.noise_scale().detach()

    def distribution(self, out):
        return dist.Normal(out, self.noise_scale().to(out.dtype).expand_as(out)).to_event(1)

    def mean(self, out):
        return out

    def validate(self, x, columns=None):
        # Any finite real value is in the support; finiteness is checked at the data boundary.
        return None

    def to_config(self):
        return {"type": "IsotropicGaussian", "init_scale": self.init_scale, "min_scale": self.min_scale}


# ---------------------------------------------------------------------------------------------
# Linear models as VAEs


def _check_dims(data_dim: Any, latent_dim: Any) -> tuple[int, int]:
    for name, value in (("data_dim", data_dim), ("latent_dim", latent_dim)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be a positive int, got {value}")
    if latent_dim >= data_dim:
        raise ValueError(
            f"latent_dim={latent_dim} must be smaller than the data dimension {data_dim}: with latent_dim >= data_dim the linear-Gaussian model is not identified (W W^T alone can fit any covariance). Choose latent_dim < {data_dim}."
        )
    return int(data_dim), int(latent_dim)


def ppca(data_dim: int, latent_dim: int, *, init_scale: float = 1.0) -> VAE:
    r"""Probabilistic PCA as a VAE: ``GaussianPrior(L)``, affine decoder, isotropic noise.

    .. math::

        z_n \sim \mathcal N(0, I_L), \qquad x_n \mid z_n \sim \mathcal N(W z_n + \mu, \sigma^2 I_D)

    Parameters
    ----------
    data_dim : int
        :math:`D`.
    latent_dim : int
        :math:`L < D`.
    init_scale : float, default 1.0
        Initial noise standard deviation :math:`\sigma`.

    Returns
    -------
    VAE
        With ``decoder = MLP(L, D, hidden=())`` (weight :math:`W`, bias :math:`\mu`) and
        likelihood :class:`IsotropicGaussian`; saved and loaded like any VAE.

    References
    ----------
    .. [1] M. E. Tipping and C. M. Bishop, "Probabilistic principal component analysis",
       J. R. Stat. Soc. B 61(3), 611-622, 1999. doi:10.1111/1467-9868.00196

    Examples
    --------
    >>> model = ppca(20, 3)
    >>> tuple(linear_parameters(model)[0].shape)
    (20, 3)
    """
    data_dim, latent_dim = _check_dims(data_dim, latent_dim)
    return VAE(
        prior=GaussianPrior(latent_dim),
        likelihood=IsotropicGaussian(init_scale=init_scale),
        decoder=MLP(latent_dim, data_dim, hidden=()),
    )


def factor_analysis(data_dim: int, latent_dim: int, *, init_scale: float = 1.0) -> VAE:
    r"""Factor analysis as a VAE: ``GaussianPrior(L)``, affine decoder, diagonal noise.

    .. math::

        z_n \sim \mathcal N(0, I_L), \qquad x_n \mid z_n \sim \mathcal N(W z_n + \mu, \Psi),
        \quad \Psi = \mathrm{diag}(\psi_1, \dots, \psi_D)

    Parameters
    ----------
    data_dim : int
        :math:`D`.
    latent_dim : int
        :math:`L < D`.
    init_scale : float, default 1.0
        Initial noise standard deviation :math:`\sqrt{\psi_d}` of every feature.

    Returns
    -------
    VAE
        With ``decoder = MLP(L, D, hidden=())`` and likelihood ``Gaussian(data_dim=D)``.

    References
    ----------
    .. [1] C. M. Bishop, "Pattern Recognition and Machine Learning", Springer, 2006,
       Section 12.2.4, eqs. (12.64)-(12.65).

    Examples
    --------
    >>> model = factor_analysis(20, 3)
    >>> tuple(linear_parameters(model)[2].shape)
    (20,)
    """
    data_dim, latent_dim = _check_dims(data_dim, latent_dim)
    return VAE(
        prior=GaussianPrior(latent_dim),
        likelihood=Gaussian(data_dim=data_dim, init_scale=init_scale),
        decoder=MLP(latent_dim, data_dim, hidden=()),
    )


def _affine_layer(decoder: nn.Module) -> nn.Linear | None:
    """The single affine layer of a linear decoder, or None if the decoder is not one."""
    if isinstance(decoder, nn.Linear):
        return decoder
    if isinstance(decoder, MLP) and not decoder.hidden:
        return decoder.net[0]
    return None


def linear_parameters(model: VAE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The loadings :math:`W`, mean :math:`\mu` and noise variances :math:`\psi` of a linear VAE.

    Parameters
    ----------
    model : VAE
        A linear-Gaussian VAE: ``GaussianPrior``, a decoder ``MLP(L, D, hidden=())`` (or an
        ``nn.Linear``) and a ``Gaussian`` (fixed ``scale`` or per-feature ``data_dim``) or
        :class:`IsotropicGaussian` likelihood.

    Returns
    -------
    W : Tensor of shape (D, L)
        The decoder's weight (differentiable: gradients reach the model).
    mu : Tensor of shape (D,)
        The decoder's bias (zeros when it has none).
    psi : Tensor of shape (D,)
        Noise variances :math:`\psi_d = \sigma_d^2` (all equal for PPCA).

    Raises
    ------
    TypeError
        If ``model`` is not a VAE.
    ValueError
        If its prior, decoder or likelihood is not of the linear-Gaussian kind.
    """
    if not isinstance(model, VAE):
        raise TypeError(f"expected a bayesvae VAE with a linear decoder, got {type(model).__name__}")
    prior, likelihood = model.prior, model.likelihood
    if not isinstance(prior, GaussianPrior) or prior.global_sites():
        raise ValueError(
            f"a linear-Gaussian model needs a GaussianPrior (z ~ N(0, I)); this model's prior is {type(prior).__name__}. Build it with ppca(D, L) or factor_analysis(D, L)."
        )
    layer = _affine_layer(model.decoder)
    if layer is None:
        raise ValueError(
            f"a linear-Gaussian model needs an affine decoder (MLP(L, D, hidden=()) or nn.Linear); this model's decoder is {type(model.decoder).__name__} with hidden={getattr(model.decoder, 'hidden', '?')}. Exact log-likelihoods exist only for linear decoders; use importance sampling for non-linear ones."
        )
    gaussian = isinstance(likelihood, Gaussian) and not likelihood.heteroscedastic
    if not (gaussian or isinstance(likelihood, IsotropicGaussian)):
        raise ValueError(
            f"a linear-Gaussian model needs a homoscedastic Gaussian likelihood (Gaussian(scale=s), Gaussian(data_dim=D) or IsotropicGaussian()); this model's likelihood is {type(likelihood).__name__}{' (heteroscedastic)' if isinstance(likelihood, Gaussian) else ''}."
        )
    weight = layer.weight
    mu = layer.bias if layer.bias is not None else weight.new_zeros(weight.shape[0])
    # The likelihood's own distribution gives its scale (the same code the model runs).
    scale = likelihood.distribution(mu.unsqueeze(0)).base_dist.scale[0]
    return weight, mu, scale.square()


# ---------------------------------------------------------------------------------------------
# Exact kernels


def _tensors(
    W: Any, mu: Any, psi: Any, x: Any | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Inputs as tensors of one common floating dtype and device; shapes checked."""
    ts = [torch.as_tensor(v) for v in (W, mu, psi) + (() if x is None else (x,))]
    dtype = torch.float32
    for t in ts:
        if t.is_floating_point():
            dtype = torch.promote_types(dtype, t.dtype)
    device = ts[0].device
    ts = [t.to(device=device, dtype=dtype) for t in ts]
    W, mu, psi = ts[:3]
    if W.dim() != 2:
        raise ValueError(f"W must have shape (D, L), got shape {tuple(W.shape)}")
    D, L = W.shape
    if mu.shape != (D,):
        raise ValueError(f"mu must have shape ({D},) to match W of shape {tuple(W.shape)}, got {tuple(mu.shape)}")
    if psi.dim() == 0:
        psi = psi.expand(D)
    if psi.shape != (D,):
        raise ValueError(f"psi must be a scalar or have shape ({D},), got {tuple(psi.shape)}")
    if not bool((psi > 0).all()):
        raise ValueError(
            f"psi (the noise variances) must be positive; got minimum {float(psi.min()):g}. A zero noise variance makes the Gaussian degenerate."
        )
    xt = None
    if x is not None:
        xt = ts[3]
        if xt.dim() != 2 or xt.shape[1] != D:
            raise ValueError(f"x must have shape (n, {D}) to match W, got {tuple(xt.shape)}")
    return W, mu, psi, xt


def _capacitance(W: torch.Tensor, psi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``A = Psi^-1 W`` and the lower Cholesky factor of ``M = I + W^T Psi^-1 W``."""
    A = W / psi.unsqueeze(-1)
    M = W.T @ A
    M = M + torch.eye(W.shape[1], dtype=W.dtype, device=W.device)
    return A, torch.linalg.cholesky(M)


def exact_log_likelihood(W: Any, mu: Any, psi: Any, x: Any) -> torch.Tensor:
    r"""Exact log-likelihood of each data point under a linear-Gaussian model.

    .. math::

        \log p(x_n) = \log \mathcal N(x_n \mid \mu, C), \qquad C = W W^\top + \Psi .

    Parameters
    ----------
    W : Tensor of shape (D, L)
        Loadings.
    mu : Tensor of shape (D,)
        Mean.
    psi : Tensor of shape (D,) or scalar
        Noise variances, :math:`\Psi = \mathrm{diag}(\psi)` (a scalar :math:`\sigma^2` for PPCA).
    x : Tensor of shape (n, D)
        Data.

    Returns
    -------
    Tensor of shape (n,)
        :math:`\log p(x_n)`, in the widest floating dtype of the inputs (pass float64 for
        reference values); differentiable in ``W``, ``mu`` and ``psi``.

    Notes
    -----
    With the capacitance matrix :math:`M = I_L + W^\top \Psi^{-1} W = R R^\top` (Cholesky),
    the Woodbury identity and the matrix determinant lemma give

    .. math::

        r^\top C^{-1} r = r^\top \Psi^{-1} r - \lVert R^{-1} W^\top \Psi^{-1} r \rVert^2,
        \qquad \log |C| = \log |M| + \textstyle\sum_d \log \psi_d,

    with :math:`r = x_n - \mu`: :math:`O(n D L + D L^2 + L^3)` work, no :math:`D \times D`
    matrix is formed.

    References
    ----------
    .. [1] M. E. Tipping and C. M. Bishop, "Probabilistic principal component analysis",
       J. R. Stat. Soc. B 61(3), 611-622, 1999, eqs. (3)-(5). doi:10.1111/1467-9868.00196

    Examples
    --------
    >>> W, mu = torch.zeros(3, 1, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    >>> float(exact_log_likelihood(W, mu, 1.0, torch.zeros(1, 3, dtype=torch.float64))[0])  # doctest: +ELLIPSIS
    -2.7568...
    """
    W, mu, psi, x = _tensors(W, mu, psi, x)
    D = W.shape[0]
    A, chol = _capacitance(W, psi)
    r = x - mu
    u = torch.linalg.solve_triangular(chol, (r @ A).T, upper=False)
    maha = (r.square() / psi).sum(-1) - u.square().sum(0)
    logdet = 2.0 * chol.diagonal().log().sum() + psi.log().sum()
    return -0.5 * (D * _LOG_2PI + logdet + maha)


def exact_posterior(W: Any, mu: Any, psi: Any, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The exact posterior :math:`p(z_n \mid x_n)` of a linear-Gaussian model.

    .. math::

        p(z_n \mid x_n) = \mathcal N\bigl(M^{-1} W^\top \Psi^{-1} (x_n - \mu),\; M^{-1}\bigr),
        \qquad M = I_L + W^\top \Psi^{-1} W .

    Parameters
    ----------
    W : Tensor of shape (D, L)
    mu : Tensor of shape (D,)
    psi : Tensor of shape (D,) or scalar
    x : Tensor of shape (n, D)

    Returns
    -------
    mean : Tensor of shape (n, L)
        Posterior means.
    cov : Tensor of shape (L, L)
        The posterior covariance, shared by all data points. It is diagonal exactly when the
        columns of :math:`\Psi^{-1/2} W` are orthogonal, which is why a diagonal-Gaussian
        encoder can be exact at a suitably rotated maximum-likelihood :math:`W` [3]_.

    References
    ----------
    .. [1] C. M. Bishop, "Pattern Recognition and Machine Learning", Springer, 2006,
       eqs. (12.66) and (12.68).
    .. [2] M. E. Tipping and C. M. Bishop, "Probabilistic principal component analysis",
       J. R. Stat. Soc. B 61(3), 611-622, 1999, eq. (6). doi:10.1111/1467-9868.00196
    .. [3] J. Lucas, G. Tucker, R. Grosse and M. Norouzi, "Don't Blame the ELBO! A Linear
       VAE Perspective on Posterior Collapse", NeurIPS 2019, arXiv:1911.02469.
    """
    W, mu, psi, x = _tensors(W, mu, psi, x)
    A, chol = _capacitance(W, psi)
    mean = torch.cholesky_solve(((x - mu) @ A).T, chol).T
    return mean, torch.cholesky_inverse(chol)


def model_log_likelihood(model: VAE, x: Any) -> torch.Tensor:
    r"""Exact :math:`\log p_\theta(x_n)` of each row of ``x`` under a fitted linear VAE.

    Reads :math:`W, \mu, \psi` with :func:`linear_parameters` and evaluates
    :func:`exact_log_likelihood` in float64 on the model's device.

    Parameters
    ----------
    model : VAE
        A linear-Gaussian VAE (e.g. from :func:`ppca`, :func:`factor_analysis` or
        :meth:`LinearGaussianEstimate.to_vae`).
    x : Tensor, ndarray, DataFrame or Dataset of shape (n, D)
        Data; validated (finite, D columns).

    Returns
    -------
    Tensor of shape (n,), float64
        Per-point log-likelihoods (differentiable in the model's parameters).

    Examples
    --------
    >>> model = ppca(5, 2)
    >>> model_log_likelihood(model, torch.zeros(4, 5)).shape
    torch.Size([4])
    """
    W, mu, psi = linear_parameters(model)
    xt, info = as_tensor(x, dtype=torch.float64, device=W.device)
    if info.data_dim != W.shape[0]:
        raise ValueError(
            f"x has {info.data_dim} columns but the model has data_dim={W.shape[0]}; pass data with matching columns"
        )
    return exact_log_likelihood(W.double(), mu.double(), psi.double(), xt)


# ---------------------------------------------------------------------------------------------
# Maximum-likelihood estimators


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
            raw = torch.tensor(_inv_softplus(s - min_scale))
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


def _check_latent_dim(latent_dim: Any) -> int:
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, (int, np.integer)):
        raise TypeError(f"latent_dim must be an int, got {latent_dim!r} of type {type(latent_dim).__name__}")
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive int, got {latent_dim}")
    return int(latent_dim)


def _prepare(x: Any, latent_dim: Any, method: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated float64 data, its mean and its (1/N) covariance."""
    latent_dim = _check_latent_dim(latent_dim)
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
    A, chol = _capacitance(W, psi)
    K = A.T @ S @ A
    trace = (S.diagonal() / psi).sum() - torch.cholesky_solve(K, chol).diagonal().sum()
    logdet = 2.0 * chol.diagonal().log().sum() + psi.log().sum()
    return -0.5 * (W.shape[0] * _LOG_2PI + logdet + trace)


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
        W=W, mu=mean, psi=psi, sigma2=sigma2, log_likelihood=float(ll),
        trace=ll.reshape(1), n_iter=0, converged=True, method="ppca",
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
        ``latent_dim`` not an int.
    ValueError
        NaN/inf in ``x``, ``latent_dim >= D``, ``n <= latent_dim``, a constant column
        (zero variance: its :math:`\psi_d \to 0` and the likelihood is unbounded), or
        bad ``tol`` / ``max_iter``.

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
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    _, mean, S = _prepare(x, latent_dim, "factor analysis")
    L, D = int(latent_dim), S.shape[0]
    var = S.diagonal().clone()
    constant = torch.nonzero(var <= 1e-12 * var.max().clamp_min(1e-300)).flatten().tolist()
    if constant:
        raise ValueError(
            f"factor analysis needs every column to vary, but column(s) {constant[:10]} are constant (zero variance): their noise variance psi would go to 0 and the likelihood is unbounded. Drop those columns, or use ppca_mle (one shared noise variance)."
        )
    floor = 1e-12 * var
    gen = torch.Generator().manual_seed(int(seed))
    W = torch.randn(D, L, generator=gen, dtype=torch.float64) * (var / (2 * L)).sqrt().unsqueeze(-1)
    psi = var / 2
    trace = [_mean_log_likelihood(W, psi, S)]
    converged = False
    n_iter = 0
    for n_iter in range(1, int(max_iter) + 1):  # noqa: B007 (n_iter is reported)
        # E-step: G (12.68); E[z_n] = B^T (x_n - xbar) with B = Psi^-1 W G (12.66).
        A, chol = _capacitance(W, psi)
        G = torch.cholesky_inverse(chol)
        B = A @ G
        SB = S @ B  # (1/N) sum_n (x_n - xbar) E[z_n]^T
        Ezz = G + B.T @ SB  # (1/N) sum_n E[z_n z_n^T]  (12.67)
        # M-step (12.69)-(12.70).
        W = torch.linalg.solve(Ezz, SB.T).T
        psi = torch.maximum(var - (W * SB).sum(-1), floor)
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
        W=W, mu=mean, psi=psi, sigma2=None, log_likelihood=float(ll[-1]),
        trace=ll, n_iter=n_iter, converged=converged, method="factor_analysis",
    )
