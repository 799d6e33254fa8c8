r"""A per-datapoint variational family built from a guide's own local sites.

:func:`local_guide` traces the fitted guide on a block of rows and, for every latent site
inside the data plate, builds a family with one set of parameters *per row*, initialized at
the amortized guide's output:

* an (independent) Normal site -> a per-point diagonal Normal (the same family);
* a MultivariateNormal site -> a per-point full-covariance Normal (the same family);
* a Bernoulli site (an IBP prior's indicators, scored as the discrete model) -> per-point
  Bernoulli logits (the same family; its gradient is the score-function one of Trace_ELBO);
* any other continuous site (relaxed indicators, positive or simplex-valued sites, flows) ->
  a per-point diagonal Normal on the unconstrained space pushed through
  ``biject_to(site.support)``, with mean and scale from draws of the amortized site.

Calling the :class:`LocalGuide` runs the original guide -- so its global sites are drawn
exactly as in the fit, from the guide's frozen global factors -- with every local site's
distribution replaced by its per-point family (an effect handler). Sites that the original
guide conditions on one another (``q(z_1 | x, z_2)``) become mean-field across sites.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from torch import nn
from torch.distributions import biject_to
from torch.nn import functional as F

from bayesvae.convention import Batch, Call
from bayesvae.scaling import UseRows

__all__ = ["LocalGuide", "local_guide", "reparameterized"]

_MIN_SCALE = 1e-5
_DRAWS = 256


def _inv_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


def _base(fn: Any) -> tuple[Any, int]:
    """Strip ``Independent`` wrappers: (base distribution, reinterpreted event dims)."""
    dims = 0
    while isinstance(fn, torch.distributions.Independent):
        dims += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    return fn, dims


class _Family(nn.Module):
    """Per-row parameters of one site's local family."""

    def __init__(self, fn: Any, rows: int) -> None:
        super().__init__()
        base, dims = _base(fn)
        self.event_shape = tuple(fn.event_shape)
        self.rows = rows
        if isinstance(base, torch.distributions.Normal) and not isinstance(fn, torch.distributions.TransformedDistribution):
            self.kind = "normal"
            loc = base.loc.expand(fn.batch_shape + fn.event_shape).reshape(rows, -1)
            scale = base.scale.expand(fn.batch_shape + fn.event_shape).reshape(rows, -1)
            self.loc = nn.Parameter(loc.detach().clone())
            self.raw = nn.Parameter(_inv_softplus((scale - _MIN_SCALE).clamp_min(1e-8)).detach().clone())
        elif isinstance(base, torch.distributions.Bernoulli):
            self.kind = "bernoulli"
            self.dims = dims
            logits = base.logits.expand(fn.batch_shape + fn.event_shape).reshape(rows, -1)
            self.loc = nn.Parameter(logits.detach().clone())
            self.raw = nn.Parameter(torch.zeros(rows, 0, dtype=logits.dtype, device=logits.device))
        elif isinstance(base, torch.distributions.MultivariateNormal) and dims == 0:
            self.kind = "mvn"
            self.loc = nn.Parameter(base.loc.reshape(rows, -1).detach().clone())
            tril = base.scale_tril.reshape(rows, *base.scale_tril.shape[-2:])
            diag = torch.diagonal(tril, dim1=-2, dim2=-1)
            self.raw = nn.Parameter(_inv_softplus((diag - _MIN_SCALE).clamp_min(1e-8)).detach().clone())
            self.offdiag = nn.Parameter(torch.tril(tril, -1).detach().clone())
        else:
            if fn.support.is_discrete:
                raise ValueError(
                    f"no per-point family for a discrete site with {type(base).__name__} distribution (only Bernoulli among discrete sites)"
                )
            self.kind = "unconstrained"
            self.support = fn.support
            transform = biject_to(fn.support)
            with torch.no_grad():
                draws = fn.sample((_DRAWS,))
                u = transform.inv(draws).reshape(_DRAWS, rows, -1)
            self.loc = nn.Parameter(u.mean(0).detach().clone())
            self.raw = nn.Parameter(_inv_softplus((u.std(0) - _MIN_SCALE).clamp_min(1e-3)).detach().clone())

    def distribution(self, index: torch.Tensor | None = None) -> Any:
        """The family of the rows ``index`` of the block (all rows when ``None``)."""
        loc, raw = (self.loc, self.raw) if index is None else (self.loc[index], self.raw[index])
        if self.kind == "bernoulli":
            return dist.Bernoulli(logits=loc.reshape(loc.shape[0], *self.event_shape)).to_event(len(self.event_shape))
        scale = F.softplus(raw) + _MIN_SCALE
        if self.kind == "mvn":
            off = self.offdiag if index is None else self.offdiag[index]
            tril = torch.tril(off, -1) + torch.diag_embed(scale)
            return dist.MultivariateNormal(loc, scale_tril=tril)
        shape = (loc.shape[0], *self.event_shape)
        base = dist.Normal(loc.reshape(shape), scale.reshape(shape)).to_event(len(self.event_shape))
        if self.kind == "normal":
            return base
        return dist.TransformedDistribution(base, [biject_to(self.support)])


class _Replace(Messenger):
    """Sample the listed local sites from their per-point families."""

    def __init__(self, families: dict[str, _Family], index: torch.Tensor | None) -> None:
        super().__init__()
        self.families = families
        self.index = index

    def _pyro_sample(self, msg: Any) -> None:
        family = self.families.get(msg["name"])
        if family is not None and not msg["is_observed"]:
            msg["fn"] = family.distribution(self.index)


class LocalGuide(nn.Module):
    """The original guide with each local site's family replaced by per-point parameters.

    Its parameters are the per-point families only; the original guide is held, not owned
    (its parameters stay frozen and are not the optimizer's).
    """

    def __init__(self, guide: Any, families: dict[str, _Family], plate: str) -> None:
        super().__init__()
        self.keys = {site: f"site{i}" for i, site in enumerate(families)}
        self.families = nn.ModuleDict({self.keys[site]: fam for site, fam in families.items()})
        object.__setattr__(self, "_inner", Call(guide))
        self.plate = plate

    def forward(self, x, **kwargs):
        index = kwargs.get("index")
        rows = next(iter(self.families.values())).rows
        if index is None and x is not None and x.shape[0] != rows:
            raise ValueError(f"the local guide has parameters for {rows} rows but got {x.shape[0]} rows without index=")
        with _Replace({site: self.families[key] for site, key in self.keys.items()}, index):
            return self._inner(x, **kwargs)


def local_guide(guide: Any, batch: Batch, *, plate: str = "data") -> LocalGuide:
    """Build the per-point family of every local latent site of ``guide`` on ``batch``.

    Raises
    ------
    ValueError
        If the guide has no latent site inside the data plate ``plate``.
    """
    call = Call(guide)
    with torch.no_grad(), pyro.validation_enabled(False), UseRows(batch.index, batch.num_data):
        trace = poutine.trace(call).get_trace(batch.x, **batch.kwargs())
    families = {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site["infer"].get("is_auxiliary"):
            continue
        if not any(f.name == plate for f in site["cond_indep_stack"]):
            continue
        if site["fn"].batch_shape and math.prod(site["fn"].batch_shape) != batch.size:
            raise ValueError(f"local site {name!r} has batch shape {tuple(site['fn'].batch_shape)}, not one entry per row of the {batch.size}-row block")
        families[name] = _Family(site["fn"], batch.size)
    if not families:
        raise ValueError(f"the guide has no latent site inside the data plate {plate!r}: there is no local posterior to optimize")
    return LocalGuide(guide, families, plate)


def reparameterized(local: LocalGuide) -> bool:
    """Whether every per-point family can be reparameterized (no Bernoulli sites)."""
    return all(f.kind != "bernoulli" for f in local.families.values())
