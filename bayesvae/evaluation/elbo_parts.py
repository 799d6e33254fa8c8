r"""The ELBO and its parts: reconstruction, KL, and the "ELBO surgery" split of the KL."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch.distributions import kl_divergence

from bayesvae.scoring import (
    SHAPE_ERRORS,
    GlobalDraw,
    TraceScorer,
    block_shape,
    check_positive_int,
    default_chunk_size,
    plate_frame,
    prepare,
    reduce_log_prob,
    resolve,
    row_blocks,
    sample_sites,
    scoring_session,
    site_log_prob,
)

__all__ = [
    "ELBODecomposition",
    "elbo_decomposition",
    "elbo_decomposition_from_scorer",
    "aggregate_mutual_information",
]

ANALYTIC = "analytic"
MONTE_CARLO = "monte carlo"


@dataclass(frozen=True)
class ELBODecomposition:
    r"""The ELBO per data point and its parts.

    .. math::

        \text{elbo}_n = \text{reconstruction}_n - \text{kl}_n - \text{global\_kl} / N,
        \qquad \overline{\text{kl}} = \text{mutual\_information} + \text{marginal\_kl}.

    Attributes
    ----------
    elbo : Tensor of shape (N,)
        ELBO per point, ``reconstruction - kl - global_kl / N`` (exactly, by construction).
    reconstruction : Tensor of shape (N,)
        :math:`\mathbb E_{q(z \mid x_n)}[\log p(x_n \mid z)]`, Monte Carlo over ``num_samples``.
    kl : Tensor of shape (N,)
        :math:`\mathrm{KL}(q(z \mid x_n) \,\|\, p(z \mid g))`, summed over local sites: analytic
        where torch registers the KL of the site's two distributions, else Monte Carlo
        :math:`\log q - \log p` at the draws (``kl_method`` says which).
    global_kl : float
        :math:`\log q(g) - \log p(g)` at the one global draw (a one-sample estimate of
        :math:`\mathrm{KL}(q(g) \,\|\, p(g))`); 0 without global sites. It is shared by the
        data set: each point carries ``global_kl / N``.
    mutual_information : float
        :math:`I_q(n; z)`, the index-code mutual information of Hoffman & Johnson [1]_:
        ``mutual_information_per_point.mean()``. Between 0 and :math:`\log N`.
    marginal_kl : float
        :math:`\mathrm{KL}(q(z) \,\|\, p(z))` of the aggregate posterior
        :math:`q(z) = \frac1N \sum_n q(z \mid x_n)`, computed by difference,
        ``kl.mean() - mutual_information``, so the two add up to the average KL exactly (it
        carries the Monte Carlo error of the MI estimate and can be slightly negative when
        the true value is ~0).
    mutual_information_per_point : Tensor of shape (N,)
        :math:`\mathbb E_{q(z \mid x_n)}[\log q(z \mid x_n) - \log q(z)]`, each at most
        :math:`\log N`.
    kl_method : dict of str to str
        For each local site, ``"analytic"`` or ``"monte carlo"``.
    num_samples : int
        Draws per point for the reconstruction (and Monte Carlo KL terms).
    mi_samples : int
        Draws per point for the mutual information.
    """

    elbo: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    global_kl: float
    mutual_information: float
    marginal_kl: float
    mutual_information_per_point: torch.Tensor
    kl_method: dict[str, str]
    num_samples: int
    mi_samples: int

    def summary(self) -> dict[str, float]:
        """Averages per data point: ``elbo``, ``reconstruction``, ``kl``, ``global_kl_share``,
        ``mutual_information``, ``marginal_kl``."""
        n = self.elbo.shape[0]
        return {
            "elbo": float(self.elbo.double().mean()),
            "reconstruction": float(self.reconstruction.double().mean()),
            "kl": float(self.kl.double().mean()),
            "global_kl_share": self.global_kl / n,
            "mutual_information": self.mutual_information,
            "marginal_kl": self.marginal_kl,
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per point: ``elbo``, ``reconstruction``, ``kl``, ``mutual_information``."""
        return pd.DataFrame(
            {
                "elbo": self.elbo.double().cpu().numpy(),
                "reconstruction": self.reconstruction.double().cpu().numpy(),
                "kl": self.kl.double().cpu().numpy(),
                "mutual_information": self.mutual_information_per_point.double().cpu().numpy(),
            }
        )


def _local_value(value: torch.Tensor, particle: bool) -> torch.Tensor:
    return value if particle else value.unsqueeze(0)


def _site_kl(
    q_site: dict, p_site: dict, width: int, plate: str, particles: int
) -> tuple[torch.Tensor, str]:
    """Per-point KL of one local site, (S or 1, n), analytic if torch registers it."""
    frame = plate_frame(q_site, plate)
    name = q_site["name"]
    if q_site.get("mask") is None and p_site.get("mask") is None:
        q_fn, p_fn = q_site["fn"], p_site["fn"]
        try:
            # some registered KLs do not broadcast batch shapes themselves
            batch = torch.broadcast_shapes(q_fn.batch_shape, p_fn.batch_shape)
            kl = kl_divergence(q_fn.expand(batch), p_fn.expand(batch))
        except (NotImplementedError, *SHAPE_ERRORS):
            pass
        else:
            return reduce_log_prob(kl, width, frame.dim, name, particles), ANALYTIC
    lq = reduce_log_prob(site_log_prob(q_site), width, frame.dim, name, particles)
    lp = reduce_log_prob(site_log_prob(p_site), width, frame.dim, name, particles)
    return lq - lp, MONTE_CARLO


def aggregate_mutual_information(
    scorer: TraceScorer,
    values: dict[str, torch.Tensor],
    own_log_q: torch.Tensor,
    draw: GlobalDraw,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""Per-point :math:`\log q(z \mid x_n) - \log q(z)` at given draws, averaged over draws.

    ``values[site]`` has shape (M, N, ...): M draws for each of the N points, and
    ``own_log_q`` (M, N) their :math:`\log q(z \mid x_n)`. The aggregate posterior density
    :math:`\log q(z) = \operatorname{logsumexp}_m \log q(z \mid x_m) - \log N` is summed over
    *all* N points exactly (no subsampling of the mixture), in blocks of at most
    ``chunk_size`` (draw, point) pairs; the cost is :math:`O(M N^2)` density evaluations.
    Returns a (N,) tensor.
    """
    m_draws, n = own_log_q.shape
    flat = {k: v.reshape((m_draws * n,) + tuple(v.shape[2:])) for k, v in values.items()}
    total = m_draws * n
    chunk = chunk_size or default_chunk_size(scorer.x.shape[1])
    b_block, m_block = block_shape(total, n, chunk)
    lse = scorer.full(total, -math.inf)
    for rows in row_blocks(n, m_block, scorer.x.device):
        for b0 in range(0, total, b_block):
            b1 = min(b0 + b_block, total)
            block = {k: v[b0:b1] for k, v in flat.items()}
            lq = scorer.guide_log_q(rows, block, draw)
            lse[b0:b1] = torch.logaddexp(lse[b0:b1], torch.logsumexp(lq, 1))
    log_agg = (lse - math.log(n)).reshape(m_draws, n)
    return (own_log_q - log_agg).mean(0)


def elbo_decomposition(
    fit: Any,
    x: Any,
    *,
    num_samples: int = 100,
    mi_samples: int = 1,
    seed: int | None = 0,
    groups: Any = None,
    covariates: Mapping[str, Any] | None = None,
    chunk_size: int | None = None,
    vectorize: bool | None = None,
) -> ELBODecomposition:
    r"""The ELBO per data point and its decomposition.

    .. math::

        \mathcal L_n = \underbrace{\mathbb E_{q(z \mid x_n)}[\log p(x_n \mid z)]}_{\text{reconstruction}}
          - \underbrace{\mathrm{KL}(q(z \mid x_n) \,\|\, p(z))}_{\text{kl}}
          - \tfrac1N \mathrm{KL}(q(g) \,\|\, p(g)),

    and the "ELBO surgery" identity of Hoffman & Johnson [1]_ for the average KL, with
    :math:`q(n, z) = \frac1N q(z \mid x_n)` and the aggregate posterior
    :math:`q(z) = \frac1N \sum_n q(z \mid x_n)`:

    .. math::

        \frac1N \sum_n \mathrm{KL}(q(z \mid x_n) \,\|\, p(z))
          = \underbrace{I_q(n; z)}_{\text{mutual information}}
          + \underbrace{\mathrm{KL}(q(z) \,\|\, p(z))}_{\text{marginal KL}}.

    Estimators: the reconstruction term by Monte Carlo over ``num_samples`` draws per
    point; each local site's KL analytically when torch registers the pair of distributions
    (e.g. diagonal Gaussian guide, Gaussian prior) and otherwise by Monte Carlo on the same
    draws; the mutual information as

    .. math::

        \hat I = \frac{1}{NM} \sum_{n, m} \Big[\log q(z_{nm} \mid x_n)
            - \log \frac1N \sum_{n'} q(z_{nm} \mid x_{n'})\Big],
        \qquad z_{nm} \sim q(z \mid x_n),

    with ``mi_samples`` (:math:`M`) draws per point and the mixture density over all
    :math:`N` points computed exactly (cost :math:`O(M N^2)`). Each bracket is at most
    :math:`\log N`, so :math:`\hat I \le \log N` always. The marginal KL is the average KL
    minus :math:`\hat I`. Global sites are drawn once (see :mod:`bayesvae.scoring`) and
    the local terms are conditional on that draw.

    Parameters
    ----------
    fit : FitResult or (model, guide)
        A fitted model and guide.
    x : Tensor, ndarray, DataFrame of shape (N, d), or Rows
        Data; the mutual information is that of the index over *these* N points.
    num_samples : int, default 100
        Draws per point for the reconstruction term.
    mi_samples : int, default 1
        Draws per point for the mutual information (at most ``num_samples``).
    seed : int or None, default 0
        Seed for the draws (the global RNG state is restored).
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
    ELBODecomposition

    Notes
    -----
    The local sites must sit directly in the data plate (no further plates around them) for
    the mutual information, which needs each draw's value per point.

    References
    ----------
    .. [1] M. D. Hoffman and M. J. Johnson, "ELBO surgery: yet another way to carve up the
       variational evidence lower bound", NIPS Workshop on Advances in Approximate Bayesian
       Inference, 2016.
    .. [2] D. P. Kingma and M. Welling, "Auto-Encoding Variational Bayes", ICLR 2014,
       arXiv:1312.6114, eq. (7) and Appendix B.

    Examples
    --------
    >>> import torch, bayesvae
    >>> from bayesvae.evaluation import elbo_decomposition
    >>> model = bayesvae.VAE(prior=bayesvae.GaussianPrior(2), likelihood=bayesvae.Gaussian(scale=1.0),
    ...                      decoder=bayesvae.MLP(2, 5))
    >>> guide = bayesvae.AmortizedGuide(model, hidden=(8,))
    >>> parts = elbo_decomposition((model, guide), torch.randn(10, 5), num_samples=20)
    >>> parts.kl_method
    {'z': 'analytic'}
    """
    model, guide = resolve(fit)
    check_positive_int("num_samples", num_samples)
    check_positive_int("mi_samples", mi_samples)
    if mi_samples > num_samples:
        raise ValueError(
            f"mi_samples={mi_samples} exceeds num_samples={num_samples}; the mutual information reuses the first mi_samples draws, so pass mi_samples <= num_samples"
        )
    if chunk_size is not None:
        check_positive_int("chunk_size", chunk_size)
    rows = prepare(model, guide, x, groups=groups, covariates=covariates)
    with scoring_session(model, guide, rows, seed=seed, vectorize=vectorize) as scorer:
        draw = scorer.draw_globals()
        return elbo_decomposition_from_scorer(scorer, draw, num_samples, mi_samples, chunk_size)


def _trace_terms(
    scorer: TraceScorer, guide_trace, model_trace, n: int, particle: int, methods: dict[str, str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reconstruction, KL and log q of one (guide, model) trace pair, each (S or 1, n)."""
    width, plate, particles = scorer.nesting + 1, scorer.data_plate, particle or 1
    rec = scorer.zeros((1, n))
    for site in sample_sites(model_trace):
        if site["is_observed"]:
            frame = plate_frame(site, plate)
            rec = rec + reduce_log_prob(site_log_prob(site), width, frame.dim, site["name"], particles)
    k_sum = scorer.zeros((1, n))
    lq_sum = scorer.zeros((1, n))
    for name in scorer.local_sites:
        q_site, p_site = guide_trace.nodes[name], model_trace.nodes[name]
        k, method = _site_kl(q_site, p_site, width, plate, particles)
        if methods.get(name) != MONTE_CARLO:
            methods[name] = method
        k_sum = k_sum + k
        frame = plate_frame(q_site, plate)
        lq_sum = lq_sum + reduce_log_prob(site_log_prob(q_site), width, frame.dim, name, particles)
    return rec, k_sum, lq_sum


def elbo_decomposition_from_scorer(
    scorer: TraceScorer,
    draw: GlobalDraw,
    num_samples: int,
    mi_samples: int,
    chunk_size: int | None,
    *,
    with_mi: bool = True,
) -> ELBODecomposition:
    r""":func:`elbo_decomposition` on an open scorer and global draw (the labelled kernel).

    Parameters
    ----------
    scorer : TraceScorer
        The model/guide pair on its data, opened by
        :func:`~bayesvae.scoring.scoring_session`.
    draw : GlobalDraw
        The global sites' draw every local term is conditional on.
    num_samples, mi_samples : int
        Draws per point for the reconstruction and for the mutual information
        (``mi_samples <= num_samples``: the first draws of each point are reused).
    chunk_size : int or None
        Largest number of (sample, point) pairs evaluated at once.
    with_mi : bool, default True
        ``False`` skips the :math:`O(M N^2)` mutual information (then NaN).

    Returns
    -------
    ELBODecomposition
    """
    x, n = scorer.x, scorer.num_data
    chunk = chunk_size or default_chunk_size(x.shape[1])
    # every point block must hold its first mi_samples draws in one block
    s_block, n_block = block_shape(num_samples, n, max(chunk, mi_samples))
    recon = scorer.zeros(n)
    kl = scorer.zeros(n)
    methods: dict[str, str] = {}
    mi_values: dict[str, torch.Tensor] = {}
    mi_log_q = scorer.zeros((mi_samples, n))
    for rows in row_blocks(n, n_block, x.device):
        for s0 in range(0, num_samples, s_block):
            size = min(s_block, num_samples - s0)
            got = 0
            for guide_trace, model_trace, particle in scorer.traces(rows, size, draw):
                rec, k_sum, lq_sum = _trace_terms(scorer, guide_trace, model_trace, rows.shape[0], particle, methods)
                draws = size if particle else 1
                recon[rows] += rec.expand(draws, -1).sum(0)
                kl[rows] += k_sum.expand(draws, -1).sum(0)
                # keep the first mi_samples draws of each point for the mutual information
                lo, hi = s0 + got, s0 + got + draws
                take = min(hi, mi_samples) - lo if with_mi else 0
                if take > 0:
                    mi_log_q[lo : lo + take, rows] = lq_sum.expand(draws, -1)[:take]
                    for name in scorer.local_sites:
                        value = _local_value(guide_trace.nodes[name]["value"], particle)[:take]
                        if name not in mi_values:
                            mi_values[name] = value.new_empty((mi_samples, n) + tuple(value.shape[2:]))
                        mi_values[name][lo : lo + take, rows] = value
                got += draws
    recon = recon / num_samples
    kl = kl / num_samples
    global_kl = float(draw.log_q - draw.log_prior)
    elbo = recon - kl - global_kl / n
    if not with_mi:
        mi_pp = scorer.full(n, math.nan)
    elif scorer.local_sites:
        mi_pp = aggregate_mutual_information(scorer, mi_values, mi_log_q, draw, chunk_size=chunk_size)
    else:
        mi_pp = scorer.zeros(n)
    mi = float(mi_pp.double().mean())
    return ELBODecomposition(
        elbo=elbo,
        reconstruction=recon,
        kl=kl,
        global_kl=global_kl,
        mutual_information=mi,
        marginal_kl=float(kl.double().mean()) - mi,
        mutual_information_per_point=mi_pp,
        kl_method=methods,
        num_samples=num_samples,
        mi_samples=mi_samples,
    )
