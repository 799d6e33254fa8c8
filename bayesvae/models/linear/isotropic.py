"""The isotropic Gaussian likelihood of probabilistic PCA."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from bayesvae._registry import register
from bayesvae.models.likelihoods import Likelihood
from bayesvae.models.linear._kernels import inv_softplus

__all__ = ["IsotropicGaussian"]


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
        self.raw_scale = nn.Parameter(torch.tensor(inv_softplus(init_scale - min_scale)))

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
        return {
            "type": "IsotropicGaussian",
            "init_scale": self.init_scale,
            "min_scale": self.min_scale,
        }
