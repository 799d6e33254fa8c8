"""Guides (variational families): amortized encoders and per-datapoint mean-field guides."""

from bayesvae.guides._parts import HEADS, GlobalGuide, LocalHead, NormalHead, register_head
from bayesvae.guides.amortized import AmortizedGuide
from bayesvae.guides.meanfield import MeanFieldGuide

__all__ = [
    "AmortizedGuide",
    "MeanFieldGuide",
    "GlobalGuide",
    "LocalHead",
    "NormalHead",
    "HEADS",
    "register_head",
]

from bayesvae.guides.linear import ExactPosteriorGuide  # noqa: E402

__all__ += ["ExactPosteriorGuide"]

from bayesvae.guides.ibp import IndicatorHead  # noqa: E402  (registers the IBP indicator head)

__all__ += ["IndicatorHead"]
