"""Trace helpers shared by the objectives: site selection, detached guide densities, settings."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.distributions import Distribution, Independent, Transform

from bayesvae.distributions import BernoulliSurrogate

__all__ = ["GRADIENTS", "DATA_PLATE", "in_plate", "sample_sites", "detached", "check_gradient", "check_kl_weight", "check_plate_name"]

#: Gradient estimators by name (see :func:`bayesvae.objectives.make_elbo`).
GRADIENTS = ("reparam", "stl", "dreg")

#: Default name of the data plate (the package's models; a user's model may name its own).
DATA_PLATE = "data"


def in_plate(site: dict[str, Any], name: str) -> bool:
    """Whether ``site`` lies inside the plate called ``name``."""
    return any(frame.name == name for frame in site["cond_indep_stack"])


def sample_sites(trace: Trace):
    """``(name, site)`` for every sample site that is not a plate's subsample site."""
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and not site_is_subsample(site):
            yield name, site


class _Unstoppable(Exception):
    """A distribution whose parameters cannot be cut from the graph by detaching its tensors."""


def _detach_transform(t: Transform) -> Transform:
    """A copy of a parameter-tensor transform with its tensors detached; a cached or network-backed one is refused."""
    if getattr(t, "_cache_size", 0) != 0:
        # a cached inverse would hand back the live base draw instead of inverting z
        raise _Unstoppable(type(t).__name__)
    new = copy.copy(t)
    new._inv = None  # the copied weak reference would reach the live transform's inverse
    for key, value in list(vars(new).items()):
        if value is None:
            continue
        if torch.is_tensor(value):
            setattr(new, key, value.detach())
        elif isinstance(value, nn.Module) or callable(value):
            raise _Unstoppable(type(t).__name__)  # parameters inside a network
        elif isinstance(value, (list, tuple)) and any(isinstance(v, Transform) for v in value):
            setattr(new, key, type(value)(_detach_transform(v) for v in value))
    return new


def _detach_attributes(d: Distribution) -> Distribution:
    """A shallow copy of ``d`` whose tensor attributes (and those of nested distributions and transforms) are detached."""
    new = copy.copy(d)
    for key, value in list(vars(new).items()):
        if torch.is_tensor(value):
            setattr(new, key, value.detach())
        elif isinstance(value, Distribution):
            setattr(new, key, _detach_attributes(value))
        elif isinstance(value, (list, tuple)) and any(isinstance(v, Transform) for v in value):
            setattr(new, key, type(value)(_detach_transform(v) for v in value))
    return new


def detached(fn: Distribution, site: str, gradient: str) -> Distribution:
    r"""``fn`` with its parameters cut from the graph: :math:`q_{\bar\phi}`, for :math:`\log q_{\bar\phi}(z)` at a live :math:`z`.

    Every tensor attribute (parameters and cached lazy properties, recursively through
    ``Independent``, mixtures and the transforms of a ``TransformedDistribution`` such as
    ``LogNormal``) is replaced by its ``detach()``; the value the density is evaluated at
    keeps its graph. A normalizing flow is refused: its parameters live in its transforms'
    networks, and its cached inverse returns the un-stopped base draw, so detaching the
    tensors it holds would not stop them. So is the IBP's ``BernoulliSurrogate``, which is
    not a density of its draws (the score term dropped would not have mean zero).
    """
    if not fn.has_rsample:
        raise ValueError(
            f"gradient={gradient!r} needs reparameterized guide sites (z a differentiable function of the guide's parameters); site {site!r} ({type(fn).__name__}) is not. Use gradient='reparam', or a relaxed (reparameterized) family for this site."
        )
    base = fn
    while isinstance(base, Independent):
        base = base.base_dist
    if isinstance(base, BernoulliSurrogate):
        raise ValueError(
            f"gradient={gradient!r} drops the score term of log q, which has mean zero only when log q is the density of the draws; site {site!r} is scored by BernoulliSurrogate, which is not (the IBP's RelaxedBernoulliKL estimator). Use IBPPrior(estimator=ConcreteRelaxation()), a true Concrete density, or gradient='reparam'."
        )
    try:
        return _detach_attributes(fn)
    except _Unstoppable:
        raise ValueError(
            f"gradient={gradient!r} evaluates log q(z) at the sampled z with the guide's parameters stopped; site {site!r} is a normalizing flow ({type(base).__name__}), whose parameters live in its transforms' networks and whose cached inverse returns the un-stopped base draw, so they cannot be stopped here. Use gradient='reparam' with flows."
        ) from None


def check_gradient(gradient: Any) -> str:
    """Validate a gradient estimator's name."""
    if not isinstance(gradient, str):
        raise TypeError(f"gradient must be one of {list(GRADIENTS)} (a str), got {type(gradient).__name__}")
    if gradient not in GRADIENTS:
        raise ValueError(f"unknown gradient {gradient!r}; choose one of {list(GRADIENTS)}")
    return gradient


def check_kl_weight(value: Any) -> float:
    """Validate a KL weight: a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"kl_weight must be a float (a KL schedule is applied by fit, one value per step), got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"kl_weight must be a finite number >= 0, got {value!r}")
    return float(value)


def check_plate_name(name: Any) -> str:
    """Validate the data plate's name."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"data_plate must be the data plate's name (a non-empty str), got {name!r}")
    return name
