r"""Minibatch scaling read from traces, verified before any number is reported.

A minibatch ELBO is an unbiased estimate of the full-data ELBO only if every site inside
the data plate carries the scale :math:`N / B` and every global site carries 1 [1]_:

.. math::

    \hat{\mathcal L} = \mathbb E_q\Big[\log\frac{p(g)}{q(g)}\Big]
        + \frac NB \sum_{n \in \mathcal B} \mathbb E_q\Big[
          \log\frac{p(x_n, z_n \mid g)}{q(z_n \mid x_n, g)}\Big].

Whether a model does this is *read from the first step's traces* of model and guide --
each site's ``scale`` and ``cond_indep_stack`` -- never guessed from the keywords a function
accepts. :func:`verify_scales` finds the data plate (the plate around every observed site
whose subsample has the batch's ``B`` rows) and classifies the model:

* **scaled** -- ``pyro.plate("data", N, subsample=index)`` or
  ``pyro.plate("data", N, subsample_size=B)``: local sites carry ``N / B`` already. For
  ``subsample_size`` the plate is made to use the package's rows (:class:`UseRows`), not
  Pyro's own random draw, so that ``x`` and the plate's indices agree.
* **unscaled** -- ``pyro.plate("data", x.shape[0])``, the way Pyro's tutorial VAE writes it:
  the package multiplies the sites of that plate, and only those, by ``N / B``
  (:class:`ScalePlate`), and logs so once at INFO.
* anything else (a global site with a scale, a local site with a scale that is neither,
  a latent site inside the data plate in the model but outside it in the guide, a data plate
  whose full size is neither ``N`` nor ``B``) is refused with a ``ValueError`` naming the
  sites and their scales.

References
----------
.. [1] M. D. Hoffman, D. M. Blei, C. Wang and J. Paisley, "Stochastic Variational
   Inference", JMLR 14, 2013.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample  # noqa: PLC2701 - the plate's own draw
from pyro.poutine.util import site_is_subsample

from bayesvae.convention import DATA_PLATE, Batch, Call

__all__ = ["ScalePlan", "UseRows", "ScalePlate", "use_rows", "verify_scales"]

logger = logging.getLogger(__name__)

_REL_TOL = 1e-6


class UseRows(Messenger):
    """Make a plate of full size ``num_data`` that would draw its own subsample use ``index``."""

    def __init__(self, index: torch.Tensor, num_data: int) -> None:
        super().__init__()
        self.index = index
        self.num_data = int(num_data)
        self.forced: list[str] = []

    def _process_message(self, msg: Any) -> None:
        fn = msg.get("fn")
        if msg["type"] == "sample" and isinstance(fn, _Subsample) and msg["value"] is None:
            if int(fn.size) == self.num_data and fn.subsample_size is not None and int(fn.subsample_size) == int(self.index.shape[0]):
                msg["value"] = self.index.to(fn.device) if fn.device is not None else self.index
                self.forced.append(msg["name"])


class ScalePlate(Messenger):
    """Multiply the scale of every sample site inside plate ``plate`` by ``factor``."""

    def __init__(self, plate: str, factor: float) -> None:
        super().__init__()
        self.plate = plate
        self.factor = float(factor)

    def _process_message(self, msg: Any) -> None:
        if msg["type"] == "sample" and any(f.name == self.plate for f in msg["cond_indep_stack"]):
            msg["scale"] = self.factor * msg["scale"]


@dataclass(frozen=True)
class ScalePlan:
    """What :func:`verify_scales` found, and what the package does about it.

    Attributes
    ----------
    plate : str or None
        Name of the data plate (``None``: no plate around the observed sites; only a full
        batch can then be scored).
    rescale : bool
        The data plate is unscaled (``pyro.plate(name, x.shape[0])``): the package scales its
        sites by ``N / B``.
    force_rows : bool
        The data plate draws its own subsample (``subsample_size=``): the package makes it use
        the batch's rows.
    """

    plate: str | None
    rescale: bool = False
    force_rows: bool = False

    def wrappers(self) -> tuple[Callable, ...]:
        """Effect handlers for :class:`~bayesvae.convention.Call` that carry out the plan."""
        out: list[Callable] = []
        if self.force_rows:
            out.append(use_rows)
        if self.rescale:
            out.append(_scale_plate(self.plate))
        return tuple(out)

    def check(self, batch_size: int, num_data: int) -> None:
        """Refuse a call that this plan cannot scale correctly."""
        if self.plate is None and batch_size != num_data:
            raise ValueError(
                f"cannot score a minibatch of {batch_size} of {num_data} rows: the model's observed sites are not inside a pyro.plate over the data, so the package cannot scale them by N/B; wrap the per-point sites in `with pyro.plate('data', x.shape[0]):` or use batch_size=None"
            )


def use_rows(fn, x, kwargs):
    """A :class:`~bayesvae.convention.Call` wrapper: :class:`UseRows` with the call's ``index``."""
    index, n = kwargs.get("index"), kwargs.get("num_data")
    if index is None or n is None:
        return fn
    return UseRows(index, n)(fn)


def _scale_plate(plate: str):
    def wrap(fn, x, kwargs):
        n = kwargs.get("num_data")
        b = None if x is None else int(x.shape[0])
        if n is None or b is None or n == b:
            return fn
        return ScalePlate(plate, n / b)(fn)

    return wrap


def _scale_of(site: dict[str, Any]) -> float:
    s = site["scale"]
    if isinstance(s, torch.Tensor):
        if s.numel() != 1:
            return float("nan")  # a per-element scale is not a minibatch scale
        return float(s.detach())
    return float(s)


def _sites(trace) -> dict[str, dict[str, Any]]:
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    }


def _find_plate(model_sites: dict, batch_size: int) -> Any | None:
    """The frame that every observed site sits in and whose subsample has ``batch_size`` rows."""
    observed = [s for s in model_sites.values() if s["is_observed"]]
    if not observed:
        raise ValueError(
            "the model has no observed site (pyro.sample(..., obs=x)); bayesvae fits models of data"
        )
    common = None
    for site in observed:
        frames = {f.name: f for f in site["cond_indep_stack"] if f.vectorized}
        common = frames if common is None else {k: v for k, v in common.items() if k in frames}
    candidates = [f for f in (common or {}).values() if int(f.size) == batch_size]
    if not candidates:
        return None
    named = [f for f in candidates if f.name == DATA_PLATE]
    if named:
        return named[0]
    if len({f.name for f in candidates}) > 1:
        raise ValueError(
            f"cannot tell the data plate: the observed sites sit in several plates of the batch's size {batch_size} ({sorted(f.name for f in candidates)}); name the per-point plate {DATA_PLATE!r}"
        )
    return candidates[0]


def _close(a: float, b: float) -> bool:
    return math.isfinite(a) and abs(a - b) <= _REL_TOL * max(1.0, abs(b))


def verify_scales(model: Callable, guide: Callable, batch: Batch) -> ScalePlan:
    """Trace model and guide on ``batch`` and verify (or plan) the scale of every site.

    Parameters
    ----------
    model, guide : callable
        Pyro model and guide (wrapped in :class:`~bayesvae.convention.Call` if not already).
    batch : Batch
        A minibatch of ``B`` of ``N`` rows.

    Returns
    -------
    ScalePlan
        The data plate's name and whether the package must rescale it or supply its rows.

    Raises
    ------
    ValueError
        A combination of scales that is not an unbiased minibatch estimate and cannot be
        made one, naming the sites and their scales.
    """
    model_call, guide_call = Call(model), Call(guide)
    b, n = batch.size, batch.num_data
    kw = batch.kwargs()
    rows = UseRows(batch.index, n)
    with pyro.validation_enabled(True), torch.no_grad():
        with poutine.trace() as guide_tr, rows:
            guide_call(batch.x, **kw)
        with poutine.trace() as model_tr, UseRows(batch.index, n):
            poutine.replay(model_call, trace=guide_tr.trace)(batch.x, **kw)
    msites, gsites = _sites(model_tr.trace), _sites(guide_tr.trace)
    frame = _find_plate(msites, b)
    force = bool(rows.forced)
    if frame is None:
        plan = ScalePlan(plate=None, force_rows=force)
        _check_unit(msites, gsites, None)
        plan.check(b, n)
        return plan
    full = int(frame.full_size if frame.full_size is not None else frame.size)
    if full == n and n != b:
        expected, rescale = n / b, False
    elif full == b:
        expected, rescale = 1.0, n != b
    else:
        raise ValueError(
            f"the data plate {frame.name!r} has full size {full}, but the data have {n} rows (and this batch {b}); give the plate the data's size, e.g. pyro.plate({frame.name!r}, num_data, subsample=index), or pyro.plate({frame.name!r}, x.shape[0]) and let bayesvae scale it"
        )
    _check_sites(msites, gsites, frame.name, expected)
    if rescale:
        logger.info(
            "the data plate %r of this model is not scaled by the minibatch (scale 1 with %d of %d rows); bayesvae scales its sites by N/B",
            frame.name,
            b,
            n,
        )
    return ScalePlan(plate=frame.name, rescale=rescale, force_rows=force)


def _in(site: dict, plate: str | None) -> bool:
    return plate is not None and any(f.name == plate for f in site["cond_indep_stack"])


def _check_unit(msites: dict, gsites: dict, plate: str | None) -> None:
    bad = [
        f"{where} site {name!r} (scale {_scale_of(s):g})"
        for where, sites in (("model", msites), ("guide", gsites))
        for name, s in sites.items()
        if not _close(_scale_of(s), 1.0)
    ]
    if bad:
        raise ValueError(
            f"cannot verify the minibatch scaling: {', '.join(bad)} carry a scale but are not inside a data plate around the observed sites; remove poutine.scale or put the per-point sites in pyro.plate('data', ...)"
        )


def _check_sites(msites: dict, gsites: dict, plate: str, expected: float) -> None:
    bad: list[str] = []
    for where, sites in (("model", msites), ("guide", gsites)):
        for name, s in sites.items():
            scale, local = _scale_of(s), _in(s, plate)
            want = expected if local else 1.0
            if not _close(scale, want):
                kind = f"inside the data plate {plate!r}" if local else "global (outside the data plate)"
                bad.append(f"{where} site {name!r} is {kind} with scale {scale:g}, expected {want:g}")
    for name, s in gsites.items():
        if name in msites and _in(s, plate) != _in(msites[name], plate):
            inside = "model" if _in(msites[name], plate) else "guide"
            bad.append(f"site {name!r} is inside the data plate {plate!r} only in the {inside}")
    if bad:
        raise ValueError(
            f"the model and guide are not an unbiased minibatch estimate and bayesvae cannot make them one: {'; '.join(bad)}"
        )
