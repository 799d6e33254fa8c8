"""Amortized head for the indicator site of the Indian buffet process prior."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from bayesvae.guides._parts import LocalHead, register_head
from bayesvae.models.ibp import INDICATOR_FAMILY, IBPPrior, IndicatorSite
from bayesvae.models.priors import LocalSite

__all__ = ["IndicatorHead"]


@register_head(INDICATOR_FAMILY)
class IndicatorHead(LocalHead):
    r"""Encoder head for the IBP indicators: logits :math:`\ell(h) = W h + c` of :math:`q(b_n \mid x_n)`.

    The distribution built from the logits is the one the prior's estimator pairs with its
    model-side distribution (:meth:`~bayesvae.models.ibp.IBPPrior.indicator_posterior`): a
    reparameterized relaxed Bernoulli in logit space for the relaxed estimators, or
    ``Bernoulli(sigmoid(logits))`` for the discrete one and inside
    ``with prior.discrete():``. The head follows the prior's mode and temperature at call
    time; it holds a reference to the prior, not a copy (the prior is not one of its
    submodules, so its buffers are saved once, with the model).
    """

    def __init__(self, site: LocalSite, in_features: int) -> None:
        super().__init__(site, in_features)
        if not isinstance(site, IndicatorSite) or not isinstance(site.prior, IBPPrior):
            raise TypeError(
                f"the {INDICATOR_FAMILY!r} head needs the IndicatorSite declared by an IBPPrior, got {type(site).__name__} for site {site.name!r}"
            )
        self.linear = nn.Linear(in_features, site.dim)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """The logits of :math:`q(b_{nk} = 1 \\mid x_n)`, shape ``(batch, K)``."""
        return self.linear(h)

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        return self.site.prior.indicator_posterior(self.linear(h))
