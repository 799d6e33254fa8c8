r"""The ELBO per data point on a data set, in chunks, with verified scaling."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pyro
import torch

from bayesvae.convention import Call, Rows, prepare_rows
from bayesvae.data import resolve_device
from bayesvae.infer.params import owned_modules
from bayesvae.scaling import verify_scales

__all__ = ["elbo_per_point", "evaluate_elbo", "CHUNK"]

#: Rows per chunk when a data set is scored in pieces.
CHUNK = 2048


def _with_plan(fn: Callable, plan: Any) -> Call:
    c = fn if isinstance(fn, Call) else Call(fn)
    return c.with_wrappers(*c.wrappers, *plan.wrappers())


@contextlib.contextmanager
def _unit_kl_weight(objective: Any):
    """Score at kl weight 1 whatever weight training uses."""
    old = getattr(objective, "kl_weight", None)
    if old is None:
        yield
        return
    objective.kl_weight = 1.0
    try:
        yield
    finally:
        objective.kl_weight = old


@torch.no_grad()
def elbo_per_point(objective: Any, model: Callable, guide: Callable, rows: Rows, chunk: int = CHUNK) -> float:
    r"""The ELBO per point, :math:`\frac1N \sum_n \mathbb E_q[\log p(x_n, z_n) - \log q(z_n \mid x_n)]`.

    The data are scored in chunks of at most ``chunk`` rows, each called with
    ``num_data = N`` so that it estimates the full-data loss; the chunks are weighted by
    their share of the rows. That weighting is right only if every chunk's data plate is
    scaled by ``N / B``, which is verified from the first chunk's traces (and supplied by
    the package for an unscaled plate): :func:`bayesvae.scaling.verify_scales`.
    """
    chunks = rows.chunks(chunk)
    first = chunks[0]
    with torch.random.fork_rng(devices=[first.x.device] if first.x.device.type == "cuda" else []):
        plan = verify_scales(model, guide, first)
    model_call, guide_call = _with_plan(model, plan), _with_plan(guide, plan)
    n = rows.num_data
    total = 0.0
    with pyro.validation_enabled(False), _unit_kl_weight(objective):
        for batch in chunks:
            plan.check(batch.size, n)
            loss = objective.differentiable_loss(model_call, guide_call, batch.x, **batch.kwargs())
            total += float(loss) * batch.size / n
    return -total / n


def evaluate_elbo(
    model: Callable,
    guide: Callable,
    data: Any,
    *,
    elbo: str = "trace",
    num_particles: int = 1,
    seed: int = 0,
    groups: Any = None,
    covariates: Any = None,
    device: str | None = None,
) -> float:
    r"""The ELBO per data point, :math:`\frac1N \sum_n \mathbb E_q[\log p(x_n, z_n) - \log q(z_n \mid x_n)]`.

    Estimated with ``num_particles`` samples per point under a fixed ``seed`` (so the same
    parameters give the same number), in chunks whose scaling is verified from the traces
    (:func:`elbo_per_point`).

    Parameters
    ----------
    model, guide : callable
        Pyro model and guide (e.g. ``fit.model, fit.guide``).
    data : Tensor, ndarray, DataFrame, Dataset or Rows of shape (N, d)
        The data to score.
    elbo : {"trace", "meanfield", "iwae"}
        The estimator.
    groups, covariates : optional
        Per-row side information passed to model and guide.
    device : str, optional
        Defaults to where the model's parameters are.
    """
    from bayesvae.objectives import make_elbo

    objective = make_elbo(elbo, num_particles=num_particles, model=model)
    dev = None if device is None else resolve_device(device)
    if dev is None:
        ref = next((p for m in owned_modules(model, guide) for p in m.parameters()), None)
        dev = ref.device if ref is not None else torch.device("cpu")
    rows = prepare_rows(model, guide, data, groups=groups, covariates=covariates, device=dev)
    pyro.set_rng_seed(seed)
    return elbo_per_point(objective, model, guide, rows)
