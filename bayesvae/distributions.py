r"""Distributions torch and Pyro lack (or get subtly wrong), with the KL divergences they need.

* :class:`LogitRelaxedBernoulli` -- the binary Concrete distribution in logit space, with
  ``has_rsample = True``. torch's class of the same name has an ``rsample`` but reports
  ``has_rsample = False``, so Pyro would score a site drawn from it with the
  score-function estimator (and, in ``Trace_ELBO``, no baseline) instead of the
  pathwise gradient; its ``log_prob`` also overflows for large ``|logits - T y|``.
* :class:`BernoulliSurrogate` -- the same relaxed samples, scored with the *Bernoulli*
  log-mass function at the soft indicator :math:`\sigma(y)`; the KL divergence between two
  of them is registered as the Bernoulli KL. It implements the common (biased) "relaxed
  reconstruction + analytic Bernoulli KL" estimator; it is not a density.

Values live in logit space (:math:`y \in \mathbb R`, the indicator is :math:`\sigma(y)`):
the relaxed Bernoulli in probability space saturates to exactly 0 or 1 in floating point
at low temperature, where its ``log_prob`` is infinite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from torch.distributions import register_kl
from torch.distributions.utils import broadcast_all

__all__ = [
    "LogitRelaxedBernoulli",
    "BernoulliSurrogate",
    "bernoulli_kl",
    "logistic_noise",
]


def logistic_noise(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """Standard logistic draws :math:`\\log u - \\log(1 - u)`, :math:`u \\sim U(0, 1)`, clamped away from 0 and 1."""
    tiny = torch.finfo(like.dtype).tiny
    eps = torch.finfo(like.dtype).eps
    u = torch.rand(shape, dtype=like.dtype, device=like.device).clamp(tiny, 1.0 - eps)
    return u.log() - torch.log1p(-u)


def bernoulli_kl(q_logits: torch.Tensor, p_logits: torch.Tensor) -> torch.Tensor:
    r"""Elementwise :math:`\mathrm{KL}(\mathrm{Bern}(\sigma(a)) \,\|\, \mathrm{Bern}(\sigma(c)))` from logits.

    .. math::

        \mathrm{KL} = \sigma(a)\,[\log\sigma(a) - \log\sigma(c)]
                    + \sigma(-a)\,[\log\sigma(-a) - \log\sigma(-c)],

    computed with ``logsigmoid`` so that it is finite for every finite pair of logits.
    """
    q = torch.sigmoid(q_logits)
    return q * (F.logsigmoid(q_logits) - F.logsigmoid(p_logits)) + (1 - q) * (
        F.logsigmoid(-q_logits) - F.logsigmoid(-p_logits)
    )


class LogitRelaxedBernoulli(TorchDistribution):
    r"""Binary Concrete (relaxed Bernoulli) distribution of a logit, reparameterized.

    With location :math:`a` (``logits``) and temperature :math:`T`,

    .. math::

        Y = (a + L) / T, \quad L \sim \mathrm{Logistic}(0, 1), \qquad
        \log p(y) = \log T + (a - T y) - 2\,\mathrm{softplus}(a - T y),

    and :math:`\sigma(Y)` is the binary Concrete variable of [1]_ (eq. 22 in logit form),
    which tends to :math:`\mathrm{Bernoulli}(\sigma(a))` as :math:`T \to 0`. The hard
    indicator :math:`\mathbb 1[Y > 0]` is exactly :math:`\mathrm{Bernoulli}(\sigma(a))`
    distributed at every temperature.

    Parameters
    ----------
    logits : Tensor
        Location :math:`a` (the log-odds of the limiting Bernoulli), any shape.
    temperature : Tensor or float
        :math:`T > 0`, broadcast against ``logits``.

    Notes
    -----
    ``has_rsample`` is ``True``: Pyro uses the pathwise gradient of :meth:`rsample`.
    ``mean`` is :math:`a / T` (the logistic noise has mean 0).

    References
    ----------
    .. [1] C. J. Maddison, A. Mnih and Y. W. Teh, "The Concrete Distribution: A Continuous
       Relaxation of Discrete Random Variables", ICLR 2017, arXiv:1611.00712.
    .. [2] E. Jang, S. Gu and B. Poole, "Categorical Reparameterization with
       Gumbel-Softmax", ICLR 2017, arXiv:1611.01144.
    """

    arg_constraints = {"logits": constraints.real, "temperature": constraints.positive}
    support = constraints.real
    has_rsample = True

    def __init__(
        self,
        logits: torch.Tensor,
        temperature: torch.Tensor | float,
        validate_args: bool | None = None,
    ) -> None:
        self.logits, self.temperature = broadcast_all(logits, temperature)
        super().__init__(self.logits.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        new.logits = self.logits.expand(batch_shape)
        new.temperature = self.temperature.expand(batch_shape)
        super(LogitRelaxedBernoulli, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def probs(self) -> torch.Tensor:
        """:math:`\\sigma(a)`, the success probability of the limiting Bernoulli."""
        return torch.sigmoid(self.logits)

    @property
    def mean(self) -> torch.Tensor:
        return self.logits / self.temperature

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        return (self.logits.expand(shape) + logistic_noise(shape, self.logits)) / self.temperature

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        diff = self.logits - self.temperature * value
        return self.temperature.log() + diff - 2 * F.softplus(diff)


class BernoulliSurrogate(LogitRelaxedBernoulli):
    r"""Relaxed Bernoulli samples scored with the Bernoulli log-mass at the soft indicator.

    Samples are those of :class:`LogitRelaxedBernoulli` (pathwise, ``has_rsample = True``);

    .. math::

        \texttt{log\_prob}(y) = s \log\sigma(a) + (1 - s)\log\sigma(-a),
        \qquad s = \sigma(y),

    the Bernoulli log-mass function extended linearly to :math:`s \in (0, 1)`, which is
    finite for every :math:`y` (it never takes :math:`\log s`). It is **not** a density
    of :math:`y`; it is the "relaxed reconstruction, Bernoulli KL" surrogate [1]_ [2]_:

    * ``kl_divergence(q, p)`` between two of them is registered as the analytic
      :math:`\mathrm{KL}(\mathrm{Bern}(\sigma(a_q)) \,\|\, \mathrm{Bern}(\sigma(a_p)))`, which
      ``TraceMeanField_ELBO`` uses;
    * a Monte Carlo estimate (``Trace_ELBO``) of
      :math:`\mathbb E_q[\texttt{log\_prob}_q(y) - \texttt{log\_prob}_p(y)]` equals
      :math:`m \log\frac{\sigma(a_q)}{\sigma(a_p)} + (1 - m)\log\frac{\sigma(-a_q)}{\sigma(-a_p)}`
      with :math:`m = \mathbb E_q[\sigma(Y)]`, which differs from :math:`\sigma(a_q)` (so
      from the Bernoulli KL) by :math:`O(T^2)`, and vanishes when the two logits agree.

    References
    ----------
    .. [1] R. Singh, J. Ling and F. Doshi-Velez, "Structured Variational Autoencoders for
       the Beta-Bernoulli Process", NIPS 2017 Workshop on Advances in Approximate Bayesian
       Inference.
    .. [2] C. J. Maddison, A. Mnih and Y. W. Teh, "The Concrete Distribution: A Continuous
       Relaxation of Discrete Random Variables", ICLR 2017, arXiv:1611.00712.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        s = torch.sigmoid(value)
        return s * F.logsigmoid(self.logits) + (1 - s) * F.logsigmoid(-self.logits)


@register_kl(BernoulliSurrogate, BernoulliSurrogate)
def _kl_surrogate_surrogate(q: BernoulliSurrogate, p: BernoulliSurrogate) -> torch.Tensor:
    return bernoulli_kl(q.logits, p.logits)
