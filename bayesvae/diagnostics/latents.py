r"""Per-dimension view of the latent space: posterior means, KL per unit and unit activity.

For every local latent site the guide's factor :math:`q(z_n \mid x_n)` and the model's
:math:`p(z_n \mid g)` are read from traces of the same model and guide; when both factorize
over the site's elements (an ``Independent`` of an elementwise distribution, as for the
diagonal Gaussians and Bernoullis of this package) the KL splits over units,

.. math::

    \mathrm{KL}_u = \frac1N \sum_n \mathrm{KL}\big(q(z_{nu} \mid x_n) \,\|\, p(z_{nu})\big),
    \qquad A_u = \mathrm{Var}_n\big(\mathbb E_q[z_{nu} \mid x_n]\big),

analytic where torch registers the pair, else Monte Carlo :math:`\log q - \log p` at the
draws. :math:`A_u` is the activity of Burda et al. [1]_ (a unit is active when
:math:`A_u > 0.01`); units with :math:`\mathrm{KL}_u \approx 0` have collapsed to the prior.

References
----------
.. [1] Y. Burda, R. Grosse and R. Salakhutdinov, "Importance Weighted Autoencoders",
   ICLR 2016, arXiv:1509.00519, sec. 5.2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyro.distributions as dist
import torch
from torch.distributions import kl_divergence

from bayesvae.diagnostics._common import read_inputs
from bayesvae.scoring import check_positive_int, default_chunk_size, scoring_session

__all__ = ["LatentSummary", "latent_summary"]

ANALYTIC = "analytic"
MONTE_CARLO = "monte carlo"
NOT_ELEMENTWISE = "not elementwise"


@dataclass(frozen=True)
class LatentSummary:
    """Posterior means, KL per unit and activity of every local latent site.

    Attributes
    ----------
    means : dict of str to ndarray of shape (N, dim)
        :math:`\\mathbb E_q[z_n \\mid x_n]` per site (flattened event dims): the factor's
        ``mean`` where it has one, else the average of the draws.
    kl : dict of str to ndarray of shape (dim,)
        Average KL per unit; NaN for a site whose factors do not split over units.
    activity : dict of str to ndarray of shape (dim,)
        Variance over points of the posterior means.
    kl_method : dict of str to str
        ``"analytic"``, ``"monte carlo"`` or ``"not elementwise"`` per site.
    threshold : float
        Activity threshold.
    """

    means: dict[str, np.ndarray]
    kl: dict[str, np.ndarray]
    activity: dict[str, np.ndarray]
    kl_method: dict[str, str]
    threshold: float = 0.01

    def to_frame(self) -> pd.DataFrame:
        """One row per unit: ``site``, ``unit``, ``kl``, ``activity``, ``active``."""
        rows = [
            {"site": name, "unit": u, "kl": float(k), "activity": float(a), "active": bool(a > self.threshold)}
            for name in self.means
            for u, (k, a) in enumerate(zip(self.kl[name], self.activity[name]))
        ]
        return pd.DataFrame(rows, columns=["site", "unit", "kl", "activity", "active"])

    @property
    def num_active(self) -> int:
        """Active units over all sites."""
        return int(sum(int(np.sum(a > self.threshold)) for a in self.activity.values()))


def _elementwise(fn: Any) -> Any:
    """The elementwise base of ``Independent`` wrappers, or None if ``fn`` is not elementwise."""
    while isinstance(fn, dist.Independent):
        fn = fn.base_dist
    if isinstance(fn, dist.ExpandedDistribution):
        fn = fn.base_dist if not fn.base_dist.event_shape else None
    return fn if fn is not None and not fn.event_shape else None


def _units(t: torch.Tensor, m: int, event_ndim: int) -> torch.Tensor:
    """Reshape ``(..., m, *event)`` to ``(draws, m, units)``."""
    event = t.shape[t.dim() - event_ndim :] if event_ndim else ()
    return t.reshape(-1, m, int(np.prod(event)) if event_ndim else 1)


@torch.no_grad()
def latent_summary(
    fit: Any,
    x: Any,
    *,
    num_samples: int = 10,
    seed: int | None = 0,
    groups: Any = None,
    covariates: Mapping[str, Any] | None = None,
    threshold: float = 0.01,
    chunk_size: int | None = None,
) -> LatentSummary:
    r"""Posterior means, per-unit KL and activity of every local latent site.

    Parameters
    ----------
    fit : FitResult or (model, guide)
        A fitted model and guide.
    x : Tensor, ndarray, DataFrame of shape (N, d), or Rows
        Data.
    num_samples : int, default 10
        Draws per point for Monte Carlo KL terms and sample means.
    seed : int or None, default 0
        Seed for the draws.
    groups : array-like of int, optional
        Group labels, for priors that use them (shorthand for ``covariates={"groups": ...}``).
    covariates : mapping of str to array-like of shape (N, ...), optional
        Per-row side information passed to model and guide as keywords.
    threshold : float, default 0.01
        Activity threshold of an active unit.
    chunk_size : int, optional
        Largest number of (sample, point) pairs evaluated at once.

    Returns
    -------
    LatentSummary
        Per site: means ``(N, dim)``, KL per unit, activity per unit.
    """
    check_positive_int("num_samples", num_samples)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold < 0:
        raise ValueError(f"threshold must be a non-negative number, got {threshold!r}")
    inputs = read_inputs(fit, x, groups, covariates)
    xt = inputs.x
    n = xt.shape[0]
    chunk = chunk_size or default_chunk_size(xt.shape[1])
    n_block = max(1, min(n, chunk // num_samples))
    means: dict[str, list[torch.Tensor]] = {}
    kl_sum: dict[str, torch.Tensor] = {}
    method: dict[str, str] = {}
    with scoring_session(inputs.model, inputs.guide, inputs.rows, seed=seed) as scorer:
        draw = scorer.draw_globals()
        for start in range(0, n, n_block):
            rows = torch.arange(start, min(start + n_block, n), device=xt.device)
            m = rows.shape[0]
            block_means: dict[str, list[torch.Tensor]] = {}
            for guide_trace, model_trace, _ in scorer.traces(rows, num_samples, draw):
                for name in scorer.local_sites:
                    q_site, p_site = guide_trace.nodes[name], model_trace.nodes[name]
                    value = q_site["value"]
                    event_ndim = len(q_site["fn"].event_shape)
                    try:
                        mean = q_site["fn"].mean.expand(value.shape)
                    except (NotImplementedError, RuntimeError):
                        mean = value
                    block_means.setdefault(name, []).append(_units(mean, m, event_ndim).mean(0))
                    q, p = _elementwise(q_site["fn"]), _elementwise(p_site["fn"])
                    if q is None or p is None:
                        method[name] = NOT_ELEMENTWISE
                        continue
                    shape = torch.broadcast_shapes(q.batch_shape, p.batch_shape)
                    q, p = q.expand(shape), p.expand(shape)  # torch's Bernoulli KL needs equal shapes
                    try:
                        kl, how = kl_divergence(q, p), ANALYTIC
                    except NotImplementedError:
                        kl, how = q.log_prob(value) - p.log_prob(value), MONTE_CARLO
                    if method.get(name) not in (MONTE_CARLO, NOT_ELEMENTWISE):
                        method[name] = how
                    kl = _units(kl.expand(value.shape), m, event_ndim)
                    kl_sum[name] = kl_sum.get(name, 0) + kl.double().sum((0, 1))
            for name, parts in block_means.items():
                means.setdefault(name, []).append(torch.stack(parts).mean(0))
    out_means = {k: torch.cat(v).double().cpu().numpy() for k, v in means.items()}
    out_kl = {
        name: (
            (kl_sum[name] / (n * num_samples)).cpu().numpy()
            if method.get(name) != NOT_ELEMENTWISE and name in kl_sum
            else np.full(mu.shape[1], np.nan)
        )
        for name, mu in out_means.items()
    }
    activity = {k: v.var(0) for k, v in out_means.items()}
    methods = {k: method.get(k, NOT_ELEMENTWISE) for k in out_means}
    return LatentSummary(out_means, out_kl, activity, methods, float(threshold))
