r"""Priors by name: what each name at a boundary (the command line) builds.

The one place that maps a short name such as ``"ard"`` to a prior object; the decoder a
prior needs comes from the prior itself (:meth:`~bayesvae.models.Prior.make_decoder`), so a
caller that builds models from names (``bayesvae fit --prior NAME``) names no prior class::

    prior = build_prior("ard", PriorRequest(latent_dim=8, out_features=64, hidden=(128,)))
    decoder = prior.make_decoder(64, hidden=(128,))

Group priors need per-row labels and are built with the Python API. ``"vamp"`` needs the
data's width (``data_dim``) and, once the guide is built, ``prior.init_from(training rows)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bayesvae.models.hierarchical import ARDPrior, HierarchicalLatentPrior, MixturePrior
from bayesvae.models.ibp import IBPPrior
from bayesvae.models.priors import GaussianPrior, Prior
from bayesvae.models.vamp import VampPrior

__all__ = ["PriorRequest", "PRIORS", "build_prior"]


@dataclass(frozen=True)
class PriorRequest:
    """What a named prior may be built from.

    Attributes
    ----------
    latent_dim : int
        Latent dimension (IBP: the truncation level; ARD: the number of factors;
        two-level: the bottom layer, the top has half).
    out_features : int
        Width of the decoder's output.
    hidden : tuple of int, default ()
        The decoder's hidden widths, latent side first (ARD's first-layer width is
        ``hidden[0]``, or ``out_features`` without hidden layers).
    alpha : float, default 2.0
        IBP concentration :math:`\alpha`.
    components : int, default 10
        Components of the mixture prior; pseudo-inputs of the VampPrior.
    data_dim : int or None, default None
        Width of a data row (the VampPrior's pseudo-inputs; required for ``"vamp"``).
    unit_interval : bool, default False
        VampPrior pseudo-inputs constrained to (0, 1) (data in [0, 1]).
    """

    latent_dim: int
    out_features: int
    hidden: tuple[int, ...] = ()
    alpha: float = 2.0
    components: int = 10
    data_dim: int | None = None
    unit_interval: bool = False


def _ard(r: PriorRequest) -> Prior:
    # the relevance sits on the decoder's first-layer weights, which the prior holds
    return ARDPrior(r.latent_dim, width=r.hidden[0] if r.hidden else r.out_features)


def _vamp(r: PriorRequest) -> Prior:
    if r.data_dim is None:
        raise ValueError("the 'vamp' prior needs PriorRequest(data_dim=...), the width of a data row (its pseudo-inputs live in data space)")
    return VampPrior(r.latent_dim, r.data_dim, components=r.components, unit_interval=r.unit_interval)


#: Builders of the named priors.
PRIORS: dict[str, Callable[[PriorRequest], Prior]] = {
    "gaussian": lambda r: GaussianPrior(r.latent_dim),
    "ibp": lambda r: IBPPrior(r.alpha, truncation=r.latent_dim),
    "ibp-weighted": lambda r: IBPPrior(r.alpha, truncation=r.latent_dim, weighted=True),
    "ard": _ard,
    "two-level": lambda r: HierarchicalLatentPrior(dims=(max(1, r.latent_dim // 2), r.latent_dim)),
    "mixture": lambda r: MixturePrior(r.latent_dim, components=r.components),
    "vamp": _vamp,
}


def build_prior(name: str, request: PriorRequest) -> Prior:
    """The prior called ``name`` (a key of :data:`PRIORS`), built from ``request``.

    Raises
    ------
    ValueError
        An unknown name; the message lists the known ones.
    """
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}; choose one of {sorted(PRIORS)}")
    return PRIORS[name](request)
