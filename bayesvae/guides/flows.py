r"""Normalizing flows on top of an amortized Gaussian: richer variational posteriors q(z | x).

An inverse autoregressive flow [1]_ transforms the encoder's diagonal Gaussian draw
:math:`\epsilon \sim \mathcal N(\mu(x), \mathrm{diag}\,\sigma(x)^2)` by :math:`T` invertible
affine autoregressive maps conditioned on the encoder's features :math:`h(x)`,

.. math::

    z = f_T \circ \dots \circ f_1(\epsilon), \qquad
    f_t(u)_i = m_{t,i}(u_{<i}, h) + s_{t,i}(u_{<i}, h)\, u_i,

    \log q(z \mid x) = \log \mathcal N(\epsilon; \mu, \sigma^2) - \sum_t \sum_i \log s_{t,i},

with the variables' order reversed between flows. Sampling and scoring one's own samples
are one network pass per flow; scoring an arbitrary ``z`` inverts the flow (``dim`` passes).
There is no closed-form KL, so ``TraceMeanField_ELBO`` falls back to the Monte Carlo
:math:`\log q - \log p` at such sites.

References
----------
.. [1] D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever and M. Welling,
   "Improved Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016,
   arXiv:1606.04934.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import Permute, conditional_affine_autoregressive
from torch import nn

from bayesvae._checks import positive_int

__all__ = ["ConditionalIAF", "FlowPosterior"]


class FlowPosterior(dist.TransformedDistribution):
    """A flow-transformed Gaussian with a Monte Carlo ``mean`` (there is no closed form).

    ``mean`` averages ``mean_samples`` draws without gradient; it is a summary for plots
    and active-unit counts, not part of any objective.
    """

    mean_samples = 64

    @property
    def mean(self) -> torch.Tensor:
        with torch.no_grad():
            return self.sample((self.mean_samples,)).mean(0)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(FlowPosterior, _instance)
        return super().expand(batch_shape, _instance=new)


class ConditionalIAF(nn.Module):
    """``num_flows`` conditional affine autoregressive maps (with order reversals) for one site.

    Parameters
    ----------
    dim : int
        Event size of the latent site.
    context_dim : int
        Width of the encoder features the maps condition on.
    num_flows : int
        Number of affine autoregressive maps.
    hidden : sequence of int
        Hidden widths of each map's autoregressive network (MADE).
    """

    def __init__(self, dim: int, context_dim: int, num_flows: int, hidden: Sequence[int]) -> None:
        super().__init__()
        num_flows = positive_int("num_flows", num_flows)
        self.maps = nn.ModuleList(
            [conditional_affine_autoregressive(dim, context_dim, hidden_dims=list(hidden)) for _ in range(num_flows)]
        )
        self.register_buffer("reverse", torch.arange(dim - 1, -1, -1), persistent=False)

    def forward(self, base: dist.TorchDistribution, context: torch.Tensor) -> FlowPosterior:
        transforms = []
        for i, m in enumerate(self.maps):
            if i:
                transforms.append(Permute(self.reverse))
            transforms.append(m.condition(context))
        return FlowPosterior(base, transforms)
