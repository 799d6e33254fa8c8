"""Shared pieces of the hierarchical priors: scale hyperpriors and posterior summaries."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import pyro.distributions as dist
import torch
from torch.distributions import transforms

from bayesvae._registry import register

__all__ = ["ScalePrior", "SCALE_FAMILIES", "as_scale_prior", "global_factor", "summarize"]

#: Names of the hyperpriors a positive scale can take.
SCALE_FAMILIES = ("half_cauchy", "half_normal", "inverse_gamma")


@register
@dataclass(frozen=True)
class ScalePrior:
    r"""A hyperprior on a positive scale :math:`\tau` (a standard deviation).

    Parameters
    ----------
    family : {"half_cauchy", "half_normal", "inverse_gamma"}
        * ``"half_cauchy"``: :math:`\tau \sim \mathrm{HalfCauchy}(s)` -- Gelman's default
          for hierarchical scales [1]_: finite density at 0, heavy tail.
        * ``"half_normal"``: :math:`\tau \sim \mathrm{HalfNormal}(s)`.
        * ``"inverse_gamma"``: :math:`\tau^2 \sim \mathrm{InvGamma}(a, b)`, i.e. a
          :math:`\mathrm{Gamma}(a, b)` prior on the precision :math:`\tau^{-2}` (Bishop's
          choice for Bayesian PCA [2]_, with small :math:`a, b`); the site's value is still
          :math:`\tau`, with density :math:`p(\tau) = 2\tau\, \mathrm{InvGamma}(\tau^2; a, b)`.
    scale : float, default 1.0
        :math:`s` of the half-Cauchy / half-normal families.
    concentration, rate : float, default 1e-3
        :math:`a, b` of the inverse-gamma family.

    Notes
    -----
    No KL divergence from a log-normal guide to any of these is registered in torch, so
    ``TraceMeanField_ELBO`` estimates the KL of a scale site by Monte Carlo (one draw per
    particle): :math:`\log q(\tau) - \log p(\tau)` at :math:`\tau \sim q`.

    References
    ----------
    .. [1] A. Gelman, "Prior distributions for variance parameters in hierarchical models",
       Bayesian Analysis 1(3), 515-534, 2006. doi:10.1214/06-BA117A
    .. [2] C. M. Bishop, "Bayesian PCA", NIPS 11, 382-388, 1999.
    """

    family: str = "half_cauchy"
    scale: float = 1.0
    concentration: float = 1e-3
    rate: float = 1e-3

    def __post_init__(self) -> None:
        if self.family not in SCALE_FAMILIES:
            raise ValueError(
                f"unknown hyperprior {self.family!r} for a scale; choose one of {', '.join(repr(f) for f in SCALE_FAMILIES)}"
            )
        for name in ("scale", "concentration", "rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                0 < value < math.inf
            ):
                raise ValueError(
                    f"ScalePrior {name} must be a positive finite number, got {value!r}"
                )

    def distribution(self, like: torch.Tensor, shape: tuple[int, ...]) -> dist.TorchDistribution:
        """The hyperprior with batch shape ``shape`` on ``like``'s device and dtype."""
        if self.family == "inverse_gamma":
            a = like.new_full(shape, float(self.concentration))
            b = like.new_full(shape, float(self.rate))
            half = transforms.PowerTransform(like.new_tensor(0.5))
            return dist.TransformedDistribution(dist.InverseGamma(a, b), [half])
        s = like.new_full(shape, float(self.scale))
        return dist.HalfCauchy(s) if self.family == "half_cauchy" else dist.HalfNormal(s)

    def init_log(self) -> float:
        r"""A starting value of :math:`\log\tau` for the guide: the log-median of the prior."""
        if self.family == "inverse_gamma":
            # mode of tau^2 under InvGamma(a, b) is b / (a + 1)
            return 0.5 * math.log(self.rate / (self.concentration + 1.0))
        # medians: HalfCauchy(s) -> s, HalfNormal(s) -> 0.674 s
        return math.log(self.scale * (1.0 if self.family == "half_cauchy" else 0.6745))

    def to_config(self) -> dict[str, Any]:
        return {"type": "ScalePrior", **asdict(self)}


def as_scale_prior(value: Any, name: str) -> ScalePrior:
    """Accept a :class:`ScalePrior` or a family name."""
    if isinstance(value, ScalePrior):
        return value
    if isinstance(value, str):
        return ScalePrior(value)
    raise TypeError(
        f"{name} must be a ScalePrior or one of the names {', '.join(repr(f) for f in SCALE_FAMILIES)}, got {type(value).__name__}"
    )


def global_factor(guide: Any, name: str) -> dist.TorchDistribution:
    """The variational factor q(site) of global site ``name`` held by ``guide``'s global part."""
    part = getattr(guide, "globals", None)
    if part is None or not hasattr(part, "distribution"):
        raise TypeError(
            f"reading the posterior of global site {name!r} needs a guide with a mean-field global part (guide.globals.distribution), such as AmortizedGuide or MeanFieldGuide; got {type(guide).__name__}"
        )
    with torch.no_grad():
        q = part.distribution(name)
    return q.base_dist if isinstance(q, dist.Independent) else q


@torch.no_grad()
def summarize(q: dist.TorchDistribution, level: float) -> dict[str, torch.Tensor]:
    """Posterior mean and central ``level`` interval of an elementwise factor ``q``."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    lo, hi = (1 - level) / 2, (1 + level) / 2
    mean = q.mean
    return {
        "mean": mean,
        "lower": q.icdf(torch.full_like(mean, lo)),
        "upper": q.icdf(torch.full_like(mean, hi)),
    }
