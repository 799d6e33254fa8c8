r"""Active units: latent dimensions whose posterior mean varies with the data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from bayesvae.scoring import (
    GlobalDraw,
    TraceScorer,
    block_shape,
    check_positive_int,
    default_chunk_size,
    prepare,
    resolve,
    row_blocks,
    scoring_session,
)

__all__ = ["ActiveUnits", "active_units", "posterior_means"]


@dataclass(frozen=True)
class ActiveUnits:
    r"""Per-dimension activity :math:`A_u = \mathrm{Var}_x(\mathbb E_q[z_u \mid x])`.

    Attributes
    ----------
    variance : dict of str to Tensor of shape (dim,)
        For each local latent site, the variance over the data points of the posterior mean
        of each unit (flattened event dims).
    active : dict of str to BoolTensor of shape (dim,)
        ``variance > threshold``.
    num_active : int
        Total number of active units over all local sites.
    threshold : float
        The activity threshold.
    method : dict of str to str
        ``"analytic mean"`` (the guide distribution's ``mean``) or ``"sample mean"`` (the
        average of the draws, for distributions without a closed-form mean), per site.
    """

    variance: dict[str, torch.Tensor]
    active: dict[str, torch.Tensor]
    num_active: int
    threshold: float
    method: dict[str, str]

    def to_frame(self) -> pd.DataFrame:
        """One row per unit: ``site``, ``unit``, ``variance``, ``active``."""
        rows = [
            {"site": name, "unit": u, "variance": float(v), "active": bool(a)}
            for name, var in self.variance.items()
            for u, (v, a) in enumerate(zip(var.tolist(), self.active[name].tolist()))
        ]
        return pd.DataFrame(rows, columns=["site", "unit", "variance", "active"])


def active_units(
    fit: Any,
    x: Any,
    threshold: float = 0.01,
    *,
    num_samples: int = 1,
    seed: int | None = 0,
    groups: Any = None,
    covariates: Mapping[str, Any] | None = None,
    chunk_size: int | None = None,
    vectorize: bool | None = None,
) -> ActiveUnits:
    r"""Count the active units of the guide's local latent sites (Burda et al. [1]_, sec. 5.2).

    .. math::

        A_u = \mathrm{Cov}_x\big(\mathbb E_{q(z \mid x)}[z_u]\big)
            = \frac1N \sum_n \big(\mu_{nu} - \bar\mu_u\big)^2,
        \qquad \mu_{nu} = \mathbb E_{q(z \mid x_n)}[z_u],

    and unit :math:`u` is *active* if :math:`A_u > \text{threshold}` (0.01 in [1]_). A unit
    whose posterior mean does not move with :math:`x` carries no information about the data
    (it has collapsed to the prior).

    Parameters
    ----------
    fit : FitResult or (model, guide)
        A fitted model and guide.
    x : Tensor, ndarray, DataFrame of shape (N, d), or Rows
        Data.
    threshold : float, default 0.01
        Activity threshold on :math:`A_u`.
    num_samples : int, default 1
        Draws per point over which each site's conditional mean is averaged. One is exact
        for sites whose guide does not condition on other latent draws (the amortized
        Gaussian encoder); a site whose head conditions on a sampled parent has
        :math:`\mathbb E[z_u \mid x] = \mathbb E_{\text{parent}}[\mathbb E[z_u \mid x, \text{parent}]]`,
        estimated by averaging over ``num_samples`` draws.
    seed : int or None, default 0
        Seed for the draws.
    groups : array-like of int, optional
        Group labels, for priors that use them (shorthand for ``covariates={"groups": ...}``).
    covariates : mapping of str to array-like of shape (N, ...), optional
        Per-row side information passed to model and guide as keywords.
    chunk_size : int, optional
        Largest number of (sample, point) pairs evaluated at once.
    vectorize : bool or None
        Draw samples in a particle plate (``None``: try, then fall back to a loop).

    Returns
    -------
    ActiveUnits

    Notes
    -----
    The variance is the population variance over the N points (divisor N). Global sites
    are drawn once from their guide; means are conditional on that draw.

    References
    ----------
    .. [1] Y. Burda, R. Grosse and R. Salakhutdinov, "Importance Weighted Autoencoders",
       ICLR 2016, arXiv:1509.00519, section 5.2.

    Examples
    --------
    >>> import torch, bayesvae
    >>> from bayesvae.evaluation import active_units
    >>> model = bayesvae.VAE(prior=bayesvae.GaussianPrior(3), likelihood=bayesvae.Gaussian(scale=1.0),
    ...                      decoder=bayesvae.MLP(3, 5))
    >>> guide = bayesvae.AmortizedGuide(model, hidden=(8,))
    >>> active_units((model, guide), torch.randn(20, 5)).variance["z"].shape
    torch.Size([3])
    """
    model, guide = resolve(fit)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0:
        raise ValueError(f"threshold must be a non-negative number, got {threshold!r}")
    check_positive_int("num_samples", num_samples)
    if chunk_size is not None:
        check_positive_int("chunk_size", chunk_size)
    rows = prepare(model, guide, x, groups=groups, covariates=covariates)
    with scoring_session(model, guide, rows, seed=seed, vectorize=vectorize) as scorer:
        draw = scorer.draw_globals()
        means, method = posterior_means(scorer, draw, num_samples, chunk_size)
    variance = {k: v.double().var(0, unbiased=False).to(v.dtype) for k, v in means.items()}
    active = {k: v > threshold for k, v in variance.items()}
    return ActiveUnits(
        variance=variance,
        active=active,
        num_active=int(sum(int(a.sum()) for a in active.values())),
        threshold=float(threshold),
        method=method,
    )


def posterior_means(
    scorer: TraceScorer, draw: GlobalDraw, num_samples: int, chunk_size: int | None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    r"""Per-point posterior means :math:`\mathbb E_q[z_n]` of each local site (the kernel of :func:`active_units`).

    Parameters
    ----------
    scorer : TraceScorer
        The model/guide pair on its data, opened by
        :func:`~bayesvae.scoring.scoring_session`.
    draw : GlobalDraw
        The global sites' draw the means are conditional on.
    num_samples : int
        Draws per point over which each site's conditional mean is averaged.
    chunk_size : int or None
        Largest number of (sample, point) pairs evaluated at once.

    Returns
    -------
    means : dict of str to Tensor of shape (N, dim)
        Each local site's mean, event dims flattened.
    method : dict of str to str
        ``"analytic mean"`` or ``"sample mean"`` per site.
    """
    x, n = scorer.x, scorer.num_data
    s_block, n_block = block_shape(num_samples, n, chunk_size or default_chunk_size(x.shape[1]))
    sums: dict[str, torch.Tensor] = {}
    method: dict[str, str] = {}
    for rows in row_blocks(n, n_block, x.device):
        for s0 in range(0, num_samples, s_block):
            size = min(s_block, num_samples - s0)
            for guide_trace, _, particle in scorer.traces(rows, size, draw):
                for name in scorer.local_sites:
                    site = guide_trace.nodes[name]
                    try:
                        mean = site["fn"].mean
                        how = "analytic mean"
                    except NotImplementedError:
                        mean = site["value"]
                        how = "sample mean"
                    if method.get(name) != "sample mean":
                        method[name] = how
                    mean = mean if particle else mean.unsqueeze(0)
                    mean = mean.expand(site["value"].shape if particle else (1,) + tuple(site["value"].shape))
                    flat = mean.reshape(mean.shape[0], rows.shape[0], -1).sum(0)
                    if name not in sums:
                        sums[name] = torch.zeros((n, flat.shape[-1]), dtype=flat.dtype, device=x.device)
                    sums[name][rows] += flat
    return {k: v / num_samples for k, v in sums.items()}, method
