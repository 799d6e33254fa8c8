"""Hierarchical priors: ARD, multilevel groups, a two-level latent hierarchy, a learned mixture.

Each drops into :class:`~bayesvae.models.VAE` in place of
:class:`~bayesvae.models.GaussianPrior`. Global latent variables (relevance scales and
first-layer weights, group means and variance components) are declared as global sites and
inferred by a guide's non-amortized mean-field part; local ones by the encoder.

* :class:`ARDPrior` -- global ``ard_scale``, ``ard_weight``; local ``z``.
* :class:`GroupPrior` -- global ``sigma_within``, ``sigma_between``, ``group_loc``,
  ``group_mean``; local ``z``.
* :class:`HierarchicalLatentPrior` -- local ``z2``, then ``z1`` given ``z2``.
* :class:`MixturePrior` -- local ``z`` (its KL is always Monte Carlo).
"""

from bayesvae.models.hierarchical._common import SCALE_FAMILIES, ScalePrior
from bayesvae.models.hierarchical.ard import ARD_SCALE, ARD_WEIGHT, ARDDecoder, ARDPrior
from bayesvae.models.hierarchical.groups import (
    GROUP_LOC,
    GROUP_MEAN,
    SIGMA_BETWEEN,
    SIGMA_WITHIN,
    GroupPrior,
    group_codes,
)
from bayesvae.models.hierarchical.mixture import MixturePrior
from bayesvae.models.hierarchical.two_level import Z1, Z2, HierarchicalLatentPrior

__all__ = [
    "ScalePrior",
    "SCALE_FAMILIES",
    "ARDPrior",
    "ARDDecoder",
    "ARD_SCALE",
    "ARD_WEIGHT",
    "GroupPrior",
    "group_codes",
    "GROUP_MEAN",
    "GROUP_LOC",
    "SIGMA_WITHIN",
    "SIGMA_BETWEEN",
    "HierarchicalLatentPrior",
    "Z1",
    "Z2",
    "MixturePrior",
]
