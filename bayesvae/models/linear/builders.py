r"""Factor analysis and probabilistic PCA built as VAEs, and their parameters read back.

:func:`ppca` and :func:`factor_analysis` return ordinary :class:`~bayesvae.models.VAE`
objects (standard normal prior, affine decoder, Gaussian noise); :func:`linear_parameters`
reads :math:`(W, \mu, \psi)` back from any VAE of that kind.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bayesvae._checks import positive_int
from bayesvae.models.likelihoods import Gaussian
from bayesvae.models.linear.isotropic import IsotropicGaussian
from bayesvae.models.priors import GaussianPrior
from bayesvae.models.vae import VAE
from bayesvae.nn import MLP

__all__ = ["check_linear_gaussian", "factor_analysis", "linear_parameters", "ppca"]


def _check_dims(data_dim: Any, latent_dim: Any) -> tuple[int, int]:
    """``(data_dim, latent_dim)`` as ints, each positive and ``latent_dim < data_dim``."""
    data_dim = positive_int("data_dim", data_dim)
    latent_dim = positive_int("latent_dim", latent_dim)
    if latent_dim >= data_dim:
        raise ValueError(
            f"latent_dim={latent_dim} must be smaller than the data dimension {data_dim}: with latent_dim >= data_dim the linear-Gaussian model is not identified (W W^T alone can fit any covariance). Choose latent_dim < {data_dim}."
        )
    return data_dim, latent_dim


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


def check_linear_gaussian(model: VAE) -> nn.Linear:
    r"""The affine decoder layer of a linear-Gaussian VAE; raises unless ``model`` is one.

    Reads only the types and structure of the model's parts, never a parameter value, so it
    works on a model built on the ``meta`` device.

    Parameters
    ----------
    model : VAE
        The model to check (see :func:`linear_parameters` for what qualifies).

    Returns
    -------
    nn.Linear
        The decoder's single affine layer (weight :math:`W`, bias :math:`\mu`).

    Raises
    ------
    TypeError
        If ``model`` is not a VAE.
    ValueError
        If its prior, decoder or likelihood is not of the linear-Gaussian kind.
    """
    if not isinstance(model, VAE):
        raise TypeError(
            f"expected a bayesvae VAE with a linear decoder, got {type(model).__name__}"
        )
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
    return layer


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
    layer = check_linear_gaussian(model)
    likelihood = model.likelihood
    weight = layer.weight
    mu = layer.bias if layer.bias is not None else weight.new_zeros(weight.shape[0])
    # The likelihood's own distribution gives its scale (the same code the model runs).
    scale = likelihood.distribution(mu.unsqueeze(0)).base_dist.scale[0]
    return weight, mu, scale.square()
