r"""Exact log-likelihood and posterior of a linear-Gaussian model, by the Woodbury identity.

:func:`exact_log_likelihood` and :func:`exact_posterior` are tensor kernels in
:math:`(W, \mu, \psi)`; :func:`model_log_likelihood` is the same likelihood read off a
linear VAE.
"""

from __future__ import annotations

from typing import Any

import torch

from bayesvae.data import as_tensor
from bayesvae.models.linear._kernels import LOG_2PI, as_linear_tensors, capacitance
from bayesvae.models.linear.builders import linear_parameters
from bayesvae.models.vae import VAE

__all__ = ["exact_log_likelihood", "exact_posterior", "model_log_likelihood"]


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
    W, mu, psi, x = as_linear_tensors(W, mu, psi, x)
    D = W.shape[0]
    A, chol = capacitance(W, psi)
    r = x - mu
    u = torch.linalg.solve_triangular(chol, (r @ A).T, upper=False)
    maha = (r.square() / psi).sum(-1) - u.square().sum(0)
    logdet = 2.0 * chol.diagonal().log().sum() + psi.log().sum()
    return -0.5 * (D * LOG_2PI + logdet + maha)


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
    W, mu, psi, x = as_linear_tensors(W, mu, psi, x)
    A, chol = capacitance(W, psi)
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
    >>> from bayesvae.models.linear import ppca
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
