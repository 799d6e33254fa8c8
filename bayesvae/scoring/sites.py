r"""Reading a site's per-point log-density from a trace.

Each site contributes its *unscaled* ``fn.log_prob(value)`` (masked, not multiplied by the
minibatch scale ``N / B`` a trace's ``log_prob_sum`` carries), summed over event dimensions
and over every batch dimension except the particle dimension and the data plate's:

.. math::

    \ell_{sn} = \sum_{j \notin \{\text{particle}, \text{data}\}} \log p(v_{s, \ldots, n, \ldots}),

a ``(S, N)`` array for a local site and an ``(S,)`` one for a global site.
"""

from __future__ import annotations

import torch
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample

from bayesvae.convention import DATA_PLATE

__all__ = [
    "DATA_PLATE",
    "PARTICLES",
    "SHAPE_ERRORS",
    "plate_frame",
    "site_log_prob",
    "reduce_log_prob",
    "sample_sites",
]

#: Name of the plate that vectorizes importance samples.
PARTICLES = "_bayesvae_particles"

#: Errors a user's function raises when it does not broadcast over a leading particle dim.
SHAPE_ERRORS = (RuntimeError, ValueError, IndexError, TypeError)


def plate_frame(site: dict, plate: str):
    """The ``CondIndepStackFrame`` of the plate named ``plate`` around ``site`` (``None`` if outside)."""
    return next((f for f in site["cond_indep_stack"] if f.name == plate), None)


def site_log_prob(site: dict) -> torch.Tensor:
    """Unscaled, masked ``fn.log_prob(value)`` with all batch dims kept."""
    lp = site["fn"].log_prob(site["value"])
    mask = site.get("mask")
    if mask is not None:
        if isinstance(mask, bool):
            lp = lp if mask else torch.zeros_like(lp)
        else:
            lp = torch.where(mask, lp, lp.new_zeros(()))
    return lp


def reduce_log_prob(
    lp: torch.Tensor, width: int, data_dim: int | None, name: str, particles: int = 1
) -> torch.Tensor:
    """Sum a site's log-density to (particles, points) -- or (particles,) when ``data_dim`` is None.

    Parameters
    ----------
    lp : Tensor
        The site's log-density with its batch dims (:func:`site_log_prob`).
    width : int
        The plate nesting plus one (the particle dim, leftmost).
    data_dim : int or None
        The negative dim of the data plate; ``None`` for a global site.
    name : str
        The site's name (for the error message).
    particles : int, default 1
        Size of the particle dim (1 without a particle plate).

    Returns
    -------
    Tensor of shape (particles or 1, n), or (particles or 1,) when ``data_dim`` is None

    Raises
    ------
    ValueError
        If the log-density has a batch dimension that no plate declares.
    """
    if lp.dim() > width or (lp.dim() == width and lp.shape[0] not in (1, particles)):
        raise ValueError(
            f"site {name!r} has log-density batch shape {tuple(lp.shape)}, with a dimension that none of the {width - 1} plate(s) around it declares; put each batch dimension of a site under a pyro.plate"
        )
    lp = lp.reshape((1,) * (width - lp.dim()) + tuple(lp.shape))
    if data_dim is None:
        return lp.reshape(lp.shape[0], -1).sum(-1)
    lp = lp.movedim(data_dim, -1)
    return lp.reshape(lp.shape[0], -1, lp.shape[-1]).sum(1)


def sample_sites(trace: Trace) -> list[dict]:
    """The sample sites of ``trace``, without plates' subsample sites."""
    return [
        s for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)
    ]
