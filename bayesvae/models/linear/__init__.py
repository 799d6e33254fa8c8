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

Modules: :mod:`~bayesvae.models.linear.isotropic` (the PPCA likelihood),
:mod:`~bayesvae.models.linear.builders` (the models as VAEs),
:mod:`~bayesvae.models.linear.exact` (exact likelihood and posterior) and
:mod:`~bayesvae.models.linear.estimators` (maximum likelihood).
"""

from __future__ import annotations

from bayesvae.models.linear.builders import factor_analysis, linear_parameters, ppca
from bayesvae.models.linear.estimators import (
    ConvergenceWarning,
    LinearGaussianEstimate,
    factor_analysis_em,
    ppca_mle,
)
from bayesvae.models.linear.exact import (
    exact_log_likelihood,
    exact_posterior,
    model_log_likelihood,
)
from bayesvae.models.linear.isotropic import IsotropicGaussian

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
