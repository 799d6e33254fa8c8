"""Variational families shared by the guides: amortized local heads and the global guide."""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from bayesvae.models.priors import GlobalSite, LocalSite

__all__ = ["LocalHead", "NormalHead", "HEADS", "register_head", "GlobalGuide", "MIN_SCALE"]

#: Floor added to every softplus scale, so that q never collapses to a point mass.
MIN_SCALE = 1e-5


class LocalHead(nn.Module):
    """Maps encoder features (and conditioning values) to the distribution of one local site."""

    def __init__(self, site: LocalSite, in_features: int) -> None:
        super().__init__()
        self.site = site
        self.in_features = in_features

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} must define forward")


HEADS: dict[str, type[LocalHead]] = {}


def register_head(family: str) -> Callable[[type[LocalHead]], type[LocalHead]]:
    """Class decorator: use this head for local sites whose ``family`` is ``family``."""

    def deco(cls: type[LocalHead]) -> type[LocalHead]:
        HEADS[family] = cls
        return cls

    return deco


def make_head(site: LocalSite, in_features: int) -> LocalHead:
    """Build the registered head for ``site.family``."""
    if site.family not in HEADS:
        raise ValueError(
            f"no amortized variational family for local site {site.name!r} of family {site.family!r}; known families: {sorted(HEADS)}"
        )
    return HEADS[site.family](site, in_features)


class _Normal(dist.Normal):
    """``dist.Normal`` whose reparameterized draw is ``loc + randn * scale``.

    The same draws as torch's (eager ``_standard_normal`` is ``empty().normal_()``, which is
    ``randn``; under ``torch.jit.trace`` it becomes ``normal(zeros, ones)``, the same numbers
    after two allocations, two fills and a multiply-add). The traced step records ``randn``
    with its size, which :class:`~bayesvae.infer.jit.CompiledLoss` keys its graphs by.
    """

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + eps * self.scale


@register_head("normal")
class NormalHead(LocalHead):
    r"""Diagonal Gaussian :math:`q(z \mid h) = \mathcal N(\mu(h), \mathrm{diag}\,\sigma(h)^2)`.

    One linear layer gives ``(mu, raw)``; :math:`\sigma = \mathrm{softplus}(raw) + 10^{-5}`.
    """

    def __init__(self, site: LocalSite, in_features: int) -> None:
        super().__init__(site, in_features)
        self.linear = nn.Linear(in_features, 2 * site.dim)

    def forward(self, h):
        loc, raw = self.linear(h).chunk(2, dim=-1)
        return _Normal(loc, F.softplus(raw) + MIN_SCALE).to_event(1)


def _inv_softplus(y: float) -> float:
    return float(torch.log(torch.expm1(torch.tensor(float(y), device="cpu"))))  # CPU: also under torch.device('meta')


class GlobalGuide(nn.Module):
    r"""Mean-field, non-amortized guide for a prior's global sites.

    One independent factor per :class:`~bayesvae.models.GlobalSite`, by its ``family``:

    * ``"normal"``: :math:`\mathcal N(m, s^2)` elementwise (real support);
    * ``"lognormal"``: :math:`\mathrm{LogNormal}(m, s^2)` (positive support);
    * ``"beta"``: :math:`\mathrm{Beta}(a, b)` with :math:`a, b = \exp(\cdot)` (unit interval;
      torch registers the Beta--Beta KL, so ``TraceMeanField_ELBO`` is analytic there).

    Each site is one event (``to_event`` over its whole shape), sampled once per call.
    """

    def __init__(self, sites: tuple[GlobalSite, ...]) -> None:
        super().__init__()
        self.sites = tuple(sites)
        self.loc = nn.ParameterDict()
        self.raw = nn.ParameterDict()
        for s in self.sites:
            if s.family not in ("normal", "lognormal", "beta"):
                raise ValueError(
                    f"no variational family for global site {s.name!r} of family {s.family!r}; known: normal, lognormal, beta"
                )
            shape = tuple(s.shape)
            self.loc[s.name] = nn.Parameter(torch.full(shape, float(s.init_loc)))
            raw0 = float(s.init_loc) if s.family == "beta" else _inv_softplus(s.init_scale)
            self.raw[s.name] = nn.Parameter(torch.full(shape, raw0))

    def distribution(self, name: str) -> dist.TorchDistribution:
        """The variational factor q(site) of the global site ``name``."""
        site = next(s for s in self.sites if s.name == name)
        loc, raw = self.loc[name], self.raw[name]
        if site.family == "beta":
            d = dist.Beta(loc.exp(), raw.exp())
        else:
            scale = F.softplus(raw) + MIN_SCALE
            d = dist.Normal(loc, scale) if site.family == "normal" else dist.LogNormal(loc, scale)
        return d.to_event(len(site.shape))

    def forward(self) -> dict[str, torch.Tensor]:
        return {s.name: pyro.sample(s.name, self.distribution(s.name)) for s in self.sites}
