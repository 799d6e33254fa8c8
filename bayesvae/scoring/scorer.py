r"""The trace scorer: traces of one model/guide pair on fixed data, block by block.

:class:`TraceScorer` classifies the sites of a first trace (local, global, observed), then
scores blocks of (samples x points): the guide is traced under a particle plate, the model
replayed on the guide's values, and each site's unscaled per-point log-density read with
:mod:`bayesvae.scoring.sites`. :func:`scoring_session` is the one way the estimators open a
scorer: gradients off, :func:`~bayesvae.scoring.modes.evaluation_mode`, a seeded RNG.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.trace_struct import Trace

from bayesvae.convention import DATA_PLATE, Call, Rows
from bayesvae.scaling import use_rows
from bayesvae.scoring.inputs import as_rows
from bayesvae.scoring.modes import evaluation_mode, seeded
from bayesvae.scoring.records import GlobalDraw, ImportanceChunk
from bayesvae.scoring.sites import (
    PARTICLES,
    SHAPE_ERRORS,
    plate_frame,
    reduce_log_prob,
    sample_sites,
    site_log_prob,
)

__all__ = ["TraceScorer", "scoring_session"]

logger = logging.getLogger(__name__)


def _own_wrappers(fn: Any) -> tuple:
    return fn.wrappers if isinstance(fn, Call) else ()


class TraceScorer:
    r"""Score blocks of (samples × points) of one model/guide pair on fixed data.

    On construction the guide is traced once on the first data row and the model replayed on
    it, to classify the sites (local, global, observed), read the plate nesting and check that
    every latent site of the model has a guide site. Then

    * :meth:`draw_globals` samples the global sites from the guide (a :class:`GlobalDraw`);
    * :meth:`score` returns the local terms of ``S`` samples for a block of rows, with the
      global sites replayed from a given draw.

    Parameters
    ----------
    model, guide : callable
        Pyro model and guide following the calling convention of
        :mod:`bayesvae.convention`, ``fn(x, *, index=..., num_data=..., **covariates)``
        (each receives only the keywords it accepts).
    data : Tensor of shape (N, d), or Rows
        Data, already validated; a :class:`~bayesvae.convention.Rows` carries its covariates.
    covariates : mapping of str to Tensor of shape (N, ...), optional
        Per-row side information (e.g. ``{"groups": labels}``); each block's rows of it are
        passed to both functions as keywords of the same names.
    vectorize : bool or None
        ``True``: always use the particle plate (errors propagate); ``False``: one sample at
        a time; ``None``: try the plate on the first block and fall back if it fails.
    data_plate : str
        Name of the plate that holds the per-point sites.

    Raises
    ------
    TypeError
        If ``data`` is not a 2-d tensor or ``Rows``.
    ValueError
        If an observed site is not inside the data plate, a latent site of the model has no
        guide site, the data plate is not vectorized, or a covariate's length is not ``N``.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        data: torch.Tensor | Rows,
        *,
        covariates: Mapping[str, Any] | None = None,
        vectorize: bool | None = None,
        data_plate: str = DATA_PLATE,
    ) -> None:
        self.rows = as_rows(data, covariates)
        # a plate that would draw its own subsample (subsample_size=) scores the given rows
        self.model = Call(model).with_wrappers(*_own_wrappers(model), use_rows)
        self.guide = Call(guide).with_wrappers(*_own_wrappers(guide), use_rows)
        self.x = self.rows.x
        self.num_data = self.rows.num_data
        self.data_plate = data_plate
        self.vectorize = vectorize
        self._calls = 0
        self._held: list[tuple[Trace, Trace, int]] = []
        self._first = self._classify()

    # -- structure --------------------------------------------------------------------------
    @property
    def covariates(self) -> Mapping[str, torch.Tensor]:
        """The per-row covariates passed to model and guide."""
        return self.rows.covariates

    def _validation(self) -> contextlib.AbstractContextManager:
        """The caller's validation setting for the first two calls (the first row, the first
        block), then off: the data were validated at the boundary, and Pyro's and torch's
        argument checks on every block would cost a third of the time."""
        self._calls += 1
        return contextlib.nullcontext() if self._calls <= 2 else pyro.validation_enabled(False)

    def _traces(self, rows: torch.Tensor, replay: Trace | None) -> tuple[Trace, Trace]:
        batch = self.rows.batch(rows)
        xb, kw = batch.x, batch.kwargs()
        guide = self.guide if replay is None else poutine.replay(self.guide, trace=replay)
        with self._validation():
            guide_trace = poutine.trace(guide).get_trace(xb, **kw)
            model_trace = poutine.trace(poutine.replay(self.model, trace=guide_trace)).get_trace(xb, **kw)
        return guide_trace, model_trace

    def _classify(self) -> GlobalDraw:
        rows = torch.arange(1, device=self.x.device)
        guide_trace, model_trace = self._traces(rows, None)
        plate = self.data_plate
        frames = [
            f for tr in (guide_trace, model_trace) for s in sample_sites(tr) for f in s["cond_indep_stack"]
        ]
        unvectorized = sorted({f.name for f in frames if f.dim is None})
        if plate in unvectorized:
            raise ValueError(
                f"the plate {plate!r} is sequential (used as an iterator); evaluation needs a vectorized data plate: use 'with pyro.plate({plate!r}, N):'"
            )
        self.nesting = max([-f.dim for f in frames if f.dim is not None], default=0)
        observed, local, global_ = [], [], []
        for s in sample_sites(model_trace):
            inside = plate_frame(s, plate) is not None
            if s["is_observed"]:
                if not inside:
                    raise ValueError(
                        f"observed site {s['name']!r} is not inside a plate named {plate!r}; evaluation scores data points one by one, so the model must observe x inside 'with pyro.plate({plate!r}, ...)' (or pass data_plate= with your plate's name)"
                    )
                observed.append(s["name"])
            elif s["name"] not in guide_trace.nodes:
                raise ValueError(
                    f"latent site {s['name']!r} of the model has no site in the guide; importance weights need q for every latent site, so add pyro.sample({s['name']!r}, ...) to the guide"
                )
        for s in sample_sites(guide_trace):
            if s["is_observed"]:
                continue
            (local if plate_frame(s, plate) is not None else global_).append(s["name"])
        if not observed:
            raise ValueError(
                f"the model has no observed site inside the plate {plate!r}; call it with obs=x inside 'with pyro.plate({plate!r}, ...)'"
            )
        self.observed_sites = tuple(observed)
        #: dtype of every returned log-density: the model's, promoted with the data's
        self.dtype = torch.promote_types(
            self.x.dtype, site_log_prob(model_trace.nodes[observed[0]]).dtype
        )
        self.local_sites = tuple(local)
        self.global_sites = tuple(global_)
        return self._global_draw(guide_trace, model_trace)

    def _global_draw(self, guide_trace: Trace, model_trace: Trace) -> GlobalDraw:
        zero = self.zeros(())
        log_q, log_p = zero, zero
        replay = Trace()
        values: dict[str, torch.Tensor] = {}
        for name in self.global_sites:
            site = guide_trace.nodes[name]
            replay.add_node(name, **site)
            values[name] = site["value"]
            log_q = log_q + site_log_prob(site).sum()
        for s in sample_sites(model_trace):
            if plate_frame(s, self.data_plate) is None:
                log_p = log_p + site_log_prob(s).sum()
        return GlobalDraw(values=values, log_prior=log_p, log_q=log_q, trace=replay)

    # -- public -----------------------------------------------------------------------------
    def zeros(self, shape: tuple[int, ...] | int) -> torch.Tensor:
        """Zeros of the scorer's dtype on the data's device."""
        return torch.zeros(shape, dtype=self.dtype, device=self.x.device)

    def full(self, shape: tuple[int, ...] | int, value: float) -> torch.Tensor:
        """A filled tensor of the scorer's dtype on the data's device."""
        return torch.full(shape if isinstance(shape, tuple) else (shape,), value, dtype=self.dtype, device=self.x.device)

    def draw_globals(self) -> GlobalDraw:
        """Sample :math:`g \\sim q(g)` once (a trace of the guide on the first row)."""
        if self._first is not None:
            first, self._first = self._first, None
            return first
        if not self.global_sites:
            zero = self.zeros(())
            return GlobalDraw(values={}, log_prior=zero, log_q=zero, trace=Trace())
        rows = torch.arange(1, device=self.x.device)
        return self._global_draw(*self._traces(rows, None))

    def traces(
        self, rows: torch.Tensor, num_samples: int, draw: GlobalDraw, *, replay: Trace | None = None
    ) -> list[tuple[Trace, Trace, int]]:
        """Traces of ``num_samples`` guide draws (and the replayed model) for the points ``rows``.

        Returns one ``(guide_trace, model_trace, num_samples)`` whose local sites carry a
        leading particle dimension of size ``num_samples`` when the functions vectorize, else
        ``num_samples`` triples ``(guide_trace, model_trace, 0)`` without one. The global
        sites are replayed from ``draw``; ``replay`` (a trace of local values) is replayed too.
        """
        fixed = draw.trace
        if replay is not None:
            fixed = Trace()
            for tr in (draw.trace, replay):
                for name, site in tr.nodes.items():
                    fixed.add_node(name, **site)
        if self.vectorize is not False and num_samples > 1:
            try:
                with pyro.plate(PARTICLES, num_samples, dim=-(self.nesting + 1)):
                    guide_trace, model_trace = self._traces(rows, fixed)
                self._check_vectorized(guide_trace, num_samples, rows.shape[0])
            except SHAPE_ERRORS as exc:
                if self.vectorize:
                    raise
                logger.info("model/guide do not vectorize over samples (%s); looping over samples", exc)
                self.vectorize = False
            else:
                self.vectorize = True
                return [(guide_trace, model_trace, num_samples)]
        return [(*self._traces(rows, fixed), 0) for _ in range(num_samples)]

    def _check_vectorized(self, guide_trace: Trace, num_samples: int, n: int) -> None:
        for name in self.local_sites:
            value = guide_trace.nodes[name]["value"]
            if tuple(value.shape[:2]) != (num_samples, n):
                raise ValueError(
                    f"site {name!r} has shape {tuple(value.shape)} under a particle plate of {num_samples}; expected ({num_samples}, {n}, ...)"
                )

    def guide_log_q(
        self, rows: torch.Tensor, values: dict[str, torch.Tensor], draw: GlobalDraw
    ) -> torch.Tensor:
        """:math:`\\log q(z_b \\mid x_m, g)` for every given value ``z_b`` and every row ``m``.

        ``values`` maps each local site to a tensor of shape (B, ...) (one value per
        ``b``); returns a (B, len(rows)) tensor. Used for the aggregate posterior
        :math:`q(z) = \\frac1N \\sum_m q(z \\mid x_m)`.
        """
        names = self.local_sites
        num = next(iter(values.values())).shape[0]
        n = rows.shape[0]
        batch = self.rows.batch(rows)
        xb, kw = batch.x, batch.kwargs()
        width = self.nesting + 1

        def replay_trace(vals: dict[str, torch.Tensor]) -> Trace:
            tr = Trace()
            for name, site in draw.trace.nodes.items():
                tr.add_node(name, **site)
            for name in names:
                tr.add_node(name, type="sample", name=name, is_observed=False, value=vals[name], infer={})
            return tr

        def log_q(guide_trace: Trace, particles: int) -> torch.Tensor:
            out = self.zeros((1, n))
            for name in names:
                site = guide_trace.nodes[name]
                frame = plate_frame(site, self.data_plate)
                out = out + reduce_log_prob(site_log_prob(site), width, frame.dim, name, particles)
            return out

        if self.vectorize is not False and num > 1:
            expanded = {
                k: v.unsqueeze(1).expand((num, n) + tuple(v.shape[1:])) for k, v in values.items()
            }
            try:
                with pyro.plate(PARTICLES, num, dim=-(self.nesting + 1)), self._validation():
                    trace = poutine.trace(poutine.replay(self.guide, trace=replay_trace(expanded))).get_trace(xb, **kw)
                out = log_q(trace, num)
                if tuple(out.shape) != (num, n):
                    raise ValueError(f"guide log-density has shape {tuple(out.shape)}; expected ({num}, {n})")
            except SHAPE_ERRORS as exc:
                if self.vectorize:
                    raise
                logger.info("guide does not vectorize over samples (%s); looping over samples", exc)
                self.vectorize = False
            else:
                return out
        rows_out = []
        for b in range(num):
            vals = {k: v[b].expand((n,) + tuple(v.shape[1:])) for k, v in values.items()}
            with self._validation():
                trace = poutine.trace(poutine.replay(self.guide, trace=replay_trace(vals))).get_trace(xb, **kw)
            rows_out.append(log_q(trace, 1).expand(1, n))
        return torch.cat(rows_out)

    def score(
        self,
        rows: torch.Tensor,
        num_samples: int,
        draw: GlobalDraw,
        *,
        return_samples: bool = False,
    ) -> ImportanceChunk:
        """Local terms of ``num_samples`` draws for the points ``rows``, given the global ``draw``.

        The block's traces are kept until the next block's have been made (as a plain loop
        that rebinds ``logits = decoder(z)`` does): freeing a block's decoder output only
        after the next one is allocated keeps glibc's heap at its working size, where freeing
        all of a block's buffers at once lets it return them to the OS and fault them in
        again on the next block (up to a third of the time for blocks of tens of MB).
        Memory: one block's traces more.
        """
        self._held = traces = self.traces(rows, num_samples, draw)
        parts = [self._collect(rows, g, m, return_samples, particle=p) for g, m, p in traces]
        if len(parts) == 1:
            return parts[0]
        samples = None
        if return_samples:
            samples = {k: torch.cat([p.samples[k] for p in parts]) for k in parts[0].samples}
        sites = None
        if parts[0].site_log_likelihood is not None:
            sites = {k: torch.cat([p.site_log_likelihood[k] for p in parts]) for k in parts[0].site_log_likelihood}
        return ImportanceChunk(
            rows=rows,
            log_likelihood=torch.cat([p.log_likelihood for p in parts]),
            log_prior=torch.cat([p.log_prior for p in parts]),
            log_q=torch.cat([p.log_q for p in parts]),
            samples=samples,
            site_log_likelihood=sites,
        )

    def _collect(
        self, rows, guide_trace, model_trace, return_samples, *, particle: int
    ) -> ImportanceChunk:
        n = rows.shape[0]
        width = self.nesting + 1
        zero = self.zeros((1, n))
        terms = {"lik": zero, "prior": zero, "q": zero}
        size = (particle or 1, n)
        per_site: dict[str, torch.Tensor] | None = {} if len(self.observed_sites) > 1 else None

        def add(key: str, site: dict) -> torch.Tensor:
            frame = plate_frame(site, self.data_plate)
            lp = reduce_log_prob(site_log_prob(site), width, frame.dim, site["name"], particle or 1)
            terms[key] = terms[key] + lp
            return lp

        for s in sample_sites(model_trace):
            if s["is_observed"]:
                lp = add("lik", s)
                if per_site is not None:
                    per_site[s["name"]] = lp.expand(size)
            elif s["name"] in self.local_sites:
                add("prior", s)
        samples: dict[str, torch.Tensor] | None = {} if return_samples else None
        for name in self.local_sites:
            site = guide_trace.nodes[name]
            add("q", site)
            if samples is not None:
                value = site["value"]
                samples[name] = value if particle else value.unsqueeze(0)
        return ImportanceChunk(
            rows=rows,
            log_likelihood=terms["lik"].expand(size),
            log_prior=terms["prior"].expand(size),
            log_q=terms["q"].expand(size),
            samples=samples,
            site_log_likelihood=per_site,
        )


@contextlib.contextmanager
def scoring_session(
    model: Callable,
    guide: Callable,
    data: torch.Tensor | Rows,
    *,
    seed: int | None,
    covariates: Mapping[str, Any] | None = None,
    vectorize: bool | None = None,
    data_plate: str = DATA_PLATE,
) -> Iterator[TraceScorer]:
    """A :class:`TraceScorer` opened in the one scoring mode.

    Gradients off, :func:`~bayesvae.scoring.modes.evaluation_mode` (eval-mode modules, the
    prior's scoring context) and torch's RNG seeded to ``seed`` (restored afterwards), in
    that order; the scorer's first trace is the first draw of the seeded stream, so two
    sessions with one seed draw the same numbers.

    Parameters
    ----------
    model, guide : callable
        The pair to score (see :class:`TraceScorer`).
    data : Tensor of shape (N, d), or Rows
        Validated data; a :class:`~bayesvae.convention.Rows` carries its covariates.
    seed : int or None
        Seed of the session's draws; ``None`` draws from the caller's RNG stream.
    covariates : mapping of str to Tensor of shape (N, ...), optional
        Per-row side information, when ``data`` is a tensor.
    vectorize : bool or None
        See :class:`TraceScorer`.
    data_plate : str, default "data"
        Name of the plate that holds the per-point sites.

    Yields
    ------
    TraceScorer

    Examples
    --------
    >>> import torch, bayesvae
    >>> from bayesvae.scoring import scoring_session
    >>> model = bayesvae.VAE(prior=bayesvae.GaussianPrior(2), likelihood=bayesvae.Gaussian(scale=1.0),
    ...                      decoder=bayesvae.MLP(2, 5))
    >>> guide = bayesvae.AmortizedGuide(model, hidden=(8,))
    >>> with scoring_session(model, guide, torch.randn(4, 5), seed=0) as scorer:
    ...     chunk = scorer.score(torch.arange(4), 3, scorer.draw_globals())
    >>> tuple(chunk.local_log_weights.shape)
    (3, 4)
    """
    x = data.x if isinstance(data, Rows) else data
    device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    with torch.no_grad(), evaluation_mode(model, guide), seeded(seed, device):
        yield TraceScorer(
            model, guide, data, covariates=covariates, vectorize=vectorize, data_plate=data_plate
        )
