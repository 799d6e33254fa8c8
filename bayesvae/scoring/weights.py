r"""Per-point importance log weights of the guide's draws: the arrays diagnostics need."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from bayesvae._checks import positive_int
from bayesvae.convention import DATA_PLATE, Rows
from bayesvae.scoring.chunks import iter_importance_chunks
from bayesvae.scoring.inputs import as_rows, merge_covariates
from bayesvae.scoring.records import GlobalDraw, ImportanceSamples
from bayesvae.scoring.scorer import TraceScorer, scoring_session

__all__ = ["importance_log_weights"]


def importance_log_weights(
    model: Callable,
    guide: Callable,
    x: torch.Tensor | Rows,
    *,
    num_samples: int,
    groups: torch.Tensor | None = None,
    covariates: Mapping[str, Any] | None = None,
    chunk_size: int | None = None,
    globals_once: bool = True,
    return_samples: bool = False,
    vectorize: bool | None = None,
    seed: int | None = None,
    data_plate: str = DATA_PLATE,
) -> ImportanceSamples:
    r"""Per-point importance log weights of ``num_samples`` draws from the guide.

    Draws :math:`z_n^s \sim q(z \mid x_n, g)` for every point and scores model and guide
    from their traces (see :mod:`bayesvae.scoring` for the estimator with global latents).

    Parameters
    ----------
    model, guide : callable
        Pyro model and guide with the calling convention ``fn(x, *, index=..., num_data=...,
        **covariates)``; the package's models and guides, or hand-written functions
        (``pyro.module`` / ``pyro.param`` inside are fine).
    x : Tensor of shape (N, d), or Rows
        Data, already validated (see :func:`bayesvae.scoring.inputs.prepare`), on the model's
        device and dtype; a :class:`~bayesvae.convention.Rows` carries its covariates.
    num_samples : int
        :math:`S`, draws per point.
    groups : LongTensor of shape (N,), optional
        Group labels, for priors that use them (shorthand for ``covariates={"groups": ...}``).
    covariates : mapping of str to Tensor of shape (N, ...), optional
        Per-row side information passed to model and guide as keywords.
    chunk_size : int, optional
        Largest number of (sample, point) pairs evaluated at once; bounds memory
        independently of :math:`S` and :math:`N`. Default
        :func:`~bayesvae.scoring.chunks.default_chunk_size` (about 10 000 pairs for 784
        features).
    globals_once : bool, default True
        ``True``: one draw :math:`g \sim q(g)` shared by every sample and point (the
        data-set bound). ``False``: a fresh :math:`g^s` per sample :math:`s`, shared by all
        points (samples are then evaluated one at a time); the per-point
        :math:`\log \frac1S\sum_s w_n^s` is then not a bound on anything, but the weights
        are what a per-sample diagnostic of the joint proposal needs.
    return_samples : bool, default False
        Also return the sampled latent values (memory :math:`S \times N \times` site size).
    vectorize : bool or None
        See :class:`~bayesvae.scoring.TraceScorer`.
    seed : int, optional
        Seed for the draws (the caller's RNG state is restored afterwards); ``None`` uses the
        current RNG stream.
    data_plate : str, default "data"
        Name of the plate that holds per-point sites.

    Returns
    -------
    ImportanceSamples
        The (S, N) arrays and the global terms; every field is documented there.

    Notes
    -----
    Runs in :func:`~bayesvae.scoring.scoring_session` (no gradients, modules in eval mode,
    the prior's scoring context; restored afterwards). Memory is
    :math:`O(\text{chunk\_size} \times \text{width})` for the computation plus the returned
    (S, N) arrays (4 of them, :math:`16 S N` bytes in float32); when only the per-point IWAE
    is needed, :func:`bayesvae.evaluation.log_marginal_likelihood` streams instead and keeps
    :math:`O(N)`.

    Examples
    --------
    >>> import torch, bayesvae
    >>> from bayesvae.evaluation import importance_log_weights
    >>> model = bayesvae.VAE(prior=bayesvae.GaussianPrior(2), likelihood=bayesvae.Gaussian(scale=1.0),
    ...                      decoder=bayesvae.MLP(2, 5))
    >>> guide = bayesvae.AmortizedGuide(model, hidden=(8,))
    >>> iw = importance_log_weights(model, guide, torch.randn(4, 5), num_samples=3, seed=0)
    >>> tuple(iw.log_weights.shape)
    (3, 4)
    """
    positive_int("num_samples", num_samples)
    if chunk_size is not None:
        positive_int("chunk_size", chunk_size)
    rows = as_rows(x, merge_covariates(groups, covariates))
    with scoring_session(
        model, guide, rows, seed=seed, vectorize=vectorize, data_plate=data_plate
    ) as scorer:
        if globals_once or not scorer.global_sites:
            draws = [scorer.draw_globals()]
        else:
            scorer.vectorize = False
            draws = [scorer.draw_globals() for _ in range(num_samples)]
        return _weights(scorer, draws, num_samples, chunk_size, return_samples, bool(globals_once))


def _weights(
    scorer: TraceScorer,
    draws: list[GlobalDraw],
    num_samples: int,
    chunk_size: int | None,
    return_samples: bool,
    globals_once: bool,
) -> ImportanceSamples:
    """The (S, N) arrays over ``draws`` (each covering ``S / len(draws)`` consecutive samples)."""
    n = scorer.num_data
    per_draw = num_samples // len(draws)
    shape = (num_samples, n)
    out = {k: scorer.zeros(shape) for k in ("lik", "prior", "q")}
    samples: dict[str, torch.Tensor] | None = {} if return_samples else None
    sites: dict[str, torch.Tensor] | None = {k: scorer.zeros(shape) for k in scorer.observed_sites} if len(scorer.observed_sites) > 1 else None
    for d, draw in enumerate(draws):
        offset = d * per_draw
        for sl, chunk in iter_importance_chunks(
            scorer, per_draw, draw, chunk_size=chunk_size, return_samples=return_samples
        ):
            s = slice(offset + sl.start, offset + sl.stop)
            out["lik"][s, chunk.rows] = chunk.log_likelihood
            out["prior"][s, chunk.rows] = chunk.log_prior
            out["q"][s, chunk.rows] = chunk.log_q
            if sites is not None and chunk.site_log_likelihood is not None:
                for name, value in chunk.site_log_likelihood.items():
                    sites[name][s, chunk.rows] = value
            if samples is not None:
                for name, value in chunk.samples.items():
                    if name not in samples:
                        samples[name] = value.new_empty(shape + tuple(value.shape[2:]))
                    samples[name][s, chunk.rows] = value
    g_prior = torch.stack([d.log_prior for d in draws]).repeat_interleave(per_draw)
    g_q = torch.stack([d.log_q for d in draws]).repeat_interleave(per_draw)
    if samples is not None:
        for name in scorer.global_sites:
            samples[name] = torch.stack([d.values[name] for d in draws]).repeat_interleave(per_draw, dim=0)
    log_weights = out["lik"] + out["prior"] - out["q"] + ((g_prior - g_q) / n)[:, None]
    return ImportanceSamples(
        log_weights=log_weights,
        log_likelihood=out["lik"],
        log_prior=out["prior"],
        log_q=out["q"],
        global_log_prior=g_prior,
        global_log_q=g_q,
        samples=samples,
        local_sites=scorer.local_sites,
        global_sites=scorer.global_sites,
        observed_sites=scorer.observed_sites,
        globals_once=globals_once,
        vectorized=bool(scorer.vectorize),
        site_log_likelihood=sites,
    )
