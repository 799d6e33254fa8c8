r"""The exact posterior of a linear-Gaussian model, as a guide.

For factor analysis and probabilistic PCA the posterior :math:`p_\theta(z \mid x)` is Gaussian
and known in closed form (:func:`bayesvae.models.linear.exact_posterior`). Used as a guide it
is the perfect variational family: the ELBO equals :math:`\log p_\theta(x)` for every draw,
so SVI with it is exact maximum likelihood, and evaluation with it measures what an encoder
loses.

Neither torch nor Pyro 1.9.2 registers :math:`\mathrm{KL}(\text{MultivariateNormal} \,\|\,
\text{Independent(Normal)})`, so ``TraceMeanField_ELBO`` (``elbo="meanfield"``) falls back to
Monte Carlo at this guide's ``"z"`` site -- and that is the better choice here, not a gap to
fill: the Monte Carlo term :math:`\log p(x, z) - \log q(z \mid x)` is constant in :math:`z`
for the exact posterior, whereas an analytic KL would leave the reconstruction term
:math:`\mathbb E_q \log p(x \mid z)` sampled. This module deliberately registers nothing.
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from bayesvae._registry import register
from bayesvae.models.linear import exact_posterior, linear_parameters
from bayesvae.models.linear.builders import check_linear_gaussian
from bayesvae.models.priors import Z
from bayesvae.models.vae import VAE, data_plate

__all__ = ["ExactPosteriorGuide"]


@register
class ExactPosteriorGuide(nn.Module):
    r"""The exact posterior :math:`q(z_n \mid x_n) = p_\theta(z_n \mid x_n)` of a linear VAE.

    .. math::

        q(z_n \mid x_n) = \mathcal N\bigl(M^{-1} W^\top \Psi^{-1} (x_n - \mu),\; M^{-1}\bigr),
        \qquad M = I_L + W^\top \Psi^{-1} W,

    computed from the model's *current* :math:`W, \mu, \Psi` at every call (the guide has no
    parameters of its own). Site ``"z"`` is a ``MultivariateNormal`` with batch shape
    ``(batch,)`` inside the model's data plate.

    Parameters
    ----------
    model : VAE
        A linear-Gaussian VAE (:func:`~bayesvae.models.linear.ppca`,
        :func:`~bayesvae.models.linear.factor_analysis`); it is referenced, not copied.

    Notes
    -----
    Because :math:`\log p_\theta(x, z) - \log q(z \mid x) = \log p_\theta(x)` for every
    :math:`z`, ``Trace_ELBO`` with this guide is a zero-variance estimate of the exact
    log-likelihood, and its gradient -- which flows through :math:`q` into :math:`W` and
    :math:`\Psi` -- is :math:`\nabla_\theta \log p_\theta(x)`: SVI becomes exact maximum
    likelihood. ``TraceMeanField_ELBO`` gives the same exact value, because no analytic
    KL(MultivariateNormal || Normal.to_event(1)) is registered and it falls back to exactly
    this Monte Carlo term (see the module docstring).

    The model is held outside the module tree, so ``guide.parameters()`` is empty and a saved
    fit stores the weights once (with the model); ``bayesvae.load`` rebuilds the guide with
    ``build(config, model=model)``.

    References
    ----------
    .. [1] M. E. Tipping and C. M. Bishop, "Probabilistic principal component analysis",
       J. R. Stat. Soc. B 61(3), 611-622, 1999, eq. (6). doi:10.1111/1467-9868.00196
    .. [2] J. Lucas, G. Tucker, R. Grosse and M. Norouzi, "Don't Blame the ELBO! A Linear
       VAE Perspective on Posterior Collapse", NeurIPS 2019, arXiv:1911.02469.

    Examples
    --------
    >>> from bayesvae.models.linear import ppca
    >>> model = ppca(6, 2)
    >>> guide = ExactPosteriorGuide(model)
    >>> guide.posterior(torch.zeros(4, 6))["z"].batch_shape
    torch.Size([4])
    """

    def __init__(self, model: VAE) -> None:
        super().__init__()
        # A clear error unless the model is linear-Gaussian; reads no values, so a guide can
        # be built on the meta device (the shape check on load).
        check_linear_gaussian(model)
        # Bypass nn.Module.__setattr__: the model must not become a submodule of its guide.
        object.__setattr__(self, "model", model)

    def posterior(self, x: torch.Tensor) -> dict[str, dist.TorchDistribution]:
        """The exact posterior of ``"z"`` for a batch ``x`` of shape (batch, D)."""
        W, mu, psi = linear_parameters(self.model)
        mean, cov = exact_posterior(W, mu, psi, x.to(W.dtype))
        scale_tril = torch.linalg.cholesky(cov)
        return {Z: dist.MultivariateNormal(mean.to(x.dtype), scale_tril=scale_tril.to(x.dtype))}

    def forward(
        self,
        x: torch.Tensor,
        *,
        index: torch.Tensor | None = None,
        num_data: int | None = None,
        groups: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        q = self.posterior(x)[Z]
        with data_plate(x.shape[0], index, num_data):
            return {Z: pyro.sample(Z, q)}

    def to_config(self) -> dict[str, Any]:
        return {"type": "ExactPosteriorGuide"}
