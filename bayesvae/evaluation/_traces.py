r"""The shared kernel of evaluation and diagnostics: per-point log importance weights from traces.

Every density an estimator needs -- :math:`\log p(x_n \mid z_n, g)`, :math:`\log p(z_n \mid g)`,
:math:`\log q(z_n \mid x_n, g)`, :math:`\log p(g)`, :math:`\log q(g)` -- is read from Pyro traces
of the *same* model and guide that were fitted: the guide is traced, the model is replayed on
the guide's values, and each site contributes its *unscaled* ``fn.log_prob(value)`` (not the
trace's ``log_prob_sum``, which carries the minibatch scale ``N / batch``), summed over event
dimensions and over every batch dimension except the data plate's. Nothing is re-typed, so a
user's hand-written Pyro model and guide work unchanged.

Sites are classified by the plate they sit in:

* **local** -- inside the plate named ``"data"`` (:data:`DATA_PLATE`); one value per data
  point. Latent local sites form :math:`z_n`; observed sites (which must be local) form
  :math:`x_n`.
* **global** -- every latent site outside that plate (IBP sticks, ARD scales, group effects):
  :math:`g`.

The estimator with global latents
---------------------------------
With global latents :math:`g` the joint :math:`\log p(x_{1:N})` does not factorize over data
points, so "the log-likelihood of one point" needs a convention. This module uses the bound

.. math::

    \log p(x_{1:N}) \;\ge\; \mathbb E_{q(g)}\Big[\log \frac{p(g)}{q(g)}
        + \sum_{n=1}^N \log \frac1K \sum_{k=1}^K
          \frac{p(x_n, z_{nk} \mid g)}{q(z_{nk} \mid x_n, g)}\Big],
    \qquad z_{nk} \sim q(z \mid x_n, g),

which is a valid lower bound for the *data set* (Jensen's inequality over :math:`g`, then the
IWAE bound of Burda et al. [1]_ for each :math:`\log p(x_n \mid g)`, the points being
conditionally independent given :math:`g`). One draw :math:`g \sim q(g)` is taken per estimate
(``globals_once=True``) and shared by all :math:`K` samples and all points; its log weight
:math:`\log p(g) - \log q(g)` (minus the global KL, in expectation) is reported separately and
its per-point share :math:`\frac1N (\log p(g) - \log q(g))` is added to every point's log weight,
so that the per-point terms sum to the data-set bound and are what model comparisons use.
Dropping the share gives :math:`\log p(x_n \mid g)` conditional on the draw, a plug-in estimate
of the posterior predictive :math:`\log p(x_n \mid x_{\text{train}})` when :math:`q(g)`
approximates the posterior of :math:`g` given the training data.

.. warning::

    Pyro's ``RenyiELBO`` (whose :math:`\alpha = 0` case is the IWAE bound) is not a per-point
    estimate once a model has global latents or a subsampled data plate: it weights whole
    traces with the *scaled* log-probabilities (global terms added once per particle, local
    terms multiplied by ``N / batch``), so its "per point" value depends on the batch size and
    mixes the global KL into every sample's weight. Use the per-point log weights here.

Vectorization
-------------
The :math:`S` samples are drawn in one call by wrapping model and guide in
``pyro.plate("_bayesvae_particles", S, dim=-(M + 1))`` (:math:`M` the model's plate nesting,
read from a first trace; 1 for the package's models), in chunks of at most ``chunk_size``
(sample, point) pairs so that memory stays bounded whatever :math:`S` and :math:`N` are.
Functions that do not broadcast over a leading particle dimension (e.g. ones that reshape by
``x.shape[0]``) are detected on the first chunk and evaluated one sample at a time instead.

What is scored
--------------
The estimators run under ``torch.no_grad()`` with modules in eval mode, and a model whose
prior has a ``discrete()`` context (the IBP prior's relaxed indicators) is scored inside it:
log-densities are those of the discrete model (:func:`evaluation_mode`). Pyro's and torch's
argument validation follow the caller's setting for the first row and the first block, and
are off for the rest (the data were validated once at the boundary).

References
----------
.. [1] Y. Burda, R. Grosse and R. Salakhutdinov, "Importance Weighted Autoencoders",
   ICLR 2016, arXiv:1509.00519.
.. [2] E. Bingham et al., "Pyro: Deep Universal Probabilistic Programming", JMLR 20, 2019,
   arXiv:1810.09538.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
from torch import nn

from bayesvae.infer import _Call

__all__ = [
    "DATA_PLATE",
    "PARTICLES",
    "DEFAULT_ELEMENTS",
    "GlobalDraw",
    "ImportanceChunk",
    "ImportanceSamples",
    "TraceScorer",
    "importance_log_weights",
    "iter_importance_chunks",
    "default_chunk_size",
    "evaluation_mode",
    "seeded",
]

logger = logging.getLogger(__name__)

#: Name of the plate whose sites are local (one value per data point).
DATA_PLATE = "data"
#: Name of the plate that vectorizes importance samples.
PARTICLES = "_bayesvae_particles"
#: Default budget, in tensor elements of the data's width, of one chunk (about 32 MiB per
#: float32 tensor of that width; a chunk's peak is a small multiple of it).
DEFAULT_ELEMENTS = 2**23

# Errors a user's function raises when it does not broadcast over a leading particle dim.
_SHAPE_ERRORS = (RuntimeError, ValueError, IndexError, TypeError)


def default_chunk_size(data_dim: int) -> int:
    """(sample, point) pairs per chunk: :data:`DEFAULT_ELEMENTS` over ``max(data_dim, 512)``."""
    return max(1, DEFAULT_ELEMENTS // max(int(data_dim), 512))


@contextlib.contextmanager
def evaluation_mode(*parts: Any) -> Iterator[None]:
    """Score the model that was meant, not the one that was trained.

    Modules among ``parts`` go to eval mode (dropout off), and a model whose prior has a
    ``discrete()`` context (a relaxed training mode, e.g. :class:`~bayesvae.models.IBPPrior`)
    is evaluated inside it, so that every log-density is a proper one of the discrete model.
    Both are restored afterwards.
    """
    modules = [m for p in parts if isinstance(p, nn.Module) for m in p.modules()]
    flags = [m.training for m in modules]
    with contextlib.ExitStack() as stack:
        for part in parts:
            discrete = getattr(getattr(part, "prior", None), "discrete", None)
            if callable(discrete):
                stack.enter_context(discrete())
        try:
            for m in modules:
                m.training = False
            yield
        finally:
            for m, f in zip(modules, flags):
                m.training = f


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Run with torch's RNG seeded to ``seed`` and restore the caller's RNG state afterwards.

    ``seed=None`` draws from the caller's current RNG stream instead.
    """
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class GlobalDraw:
    """One draw :math:`g \\sim q(g)` of the global sites, replayed into every chunk.

    Attributes
    ----------
    values : dict of str to Tensor
        The sampled value of each global site, by name (its event shape; no batch dims).
    log_prior : Tensor, scalar
        :math:`\\log p(g)`: the model's global sites' unscaled log-densities at ``values``.
    log_q : Tensor, scalar
        :math:`\\log q(g)`: the guide's global sites' log-densities at ``values``.
    trace : pyro.poutine.Trace
        A trace holding only the guide's global sample sites (what ``poutine.replay`` needs).
    """

    values: dict[str, torch.Tensor]
    log_prior: torch.Tensor
    log_q: torch.Tensor
    trace: Trace = field(repr=False)

    @property
    def log_weight(self) -> torch.Tensor:
        """:math:`\\log p(g) - \\log q(g)` (0 for a model without global sites)."""
        return self.log_prior - self.log_q


@dataclass(frozen=True)
class ImportanceChunk:
    """Local terms for ``S`` samples of the points ``rows`` (one block of the (S, N) arrays).

    Attributes
    ----------
    rows : LongTensor of shape (n,)
        Row numbers of the points in the evaluated data.
    log_likelihood : Tensor of shape (S, n)
        :math:`\\log p(x_n \\mid z_n^s, g)`, observed sites summed.
    log_prior : Tensor of shape (S, n)
        :math:`\\log p(z_n^s \\mid g)`, latent local sites of the model summed.
    log_q : Tensor of shape (S, n)
        :math:`\\log q(z_n^s \\mid x_n, g)`, latent local sites of the guide summed.
    samples : dict of str to Tensor of shape (S, n, ...), or None
        The sampled local latent values by site, when requested.
    """

    rows: torch.Tensor
    log_likelihood: torch.Tensor
    log_prior: torch.Tensor
    log_q: torch.Tensor
    samples: dict[str, torch.Tensor] | None = None

    @property
    def local_log_weights(self) -> torch.Tensor:
        """:math:`\\log p(x_n, z_n^s \\mid g) - \\log q(z_n^s \\mid x_n, g)`, shape (S, n)."""
        return self.log_likelihood + self.log_prior - self.log_q


@dataclass(frozen=True)
class ImportanceSamples:
    r"""Per-point importance log weights of :math:`S` draws from the guide.

    For data point :math:`n` and sample :math:`s`, with :math:`z_n^s \sim q(z \mid x_n, g^s)`
    and :math:`g^s \sim q(g)` (one :math:`g` for all :math:`s` when ``globals_once``):

    .. math::

        \log w_n^s = \log p(x_n \mid z_n^s, g^s) + \log p(z_n^s \mid g^s)
            - \log q(z_n^s \mid x_n, g^s) + \tfrac1N\big(\log p(g^s) - \log q(g^s)\big).

    Attributes
    ----------
    log_weights : Tensor of shape (S, N)
        :math:`\log w_n^s` above: local log weight plus the per-point share of the global one.
        ``logsumexp(log_weights, 0) - log S`` is the IWAE estimate per point, whose sum over
        points is the data-set bound of :mod:`bayesvae.evaluation._traces`.
    log_likelihood : Tensor of shape (S, N)
        :math:`\log p(x_n \mid z_n^s, g^s)`: the observed sites' unscaled log-densities,
        summed over event dimensions.
    log_prior : Tensor of shape (S, N)
        :math:`\log p(z_n^s \mid g^s)`: the model's local latent sites.
    log_q : Tensor of shape (S, N)
        :math:`\log q(z_n^s \mid x_n, g^s)`: the guide's local latent sites.
    global_log_prior : Tensor of shape (S,)
        :math:`\log p(g^s)` (zeros without global sites; one value repeated if ``globals_once``).
    global_log_q : Tensor of shape (S,)
        :math:`\log q(g^s)`.
    samples : dict of str to Tensor, or None
        With ``return_samples=True``: each local latent site's values, shape (S, N, ...), and
        each global site's values, shape (S, ...) (repeated if ``globals_once``).
    local_sites : tuple of str
        Names of the local latent sites (in guide order).
    global_sites : tuple of str
        Names of the global latent sites.
    observed_sites : tuple of str
        Names of the observed sites.
    globals_once : bool
        Whether one global draw was shared by all samples.
    vectorized : bool
        Whether samples were drawn in a particle plate (else one at a time).
    """

    log_weights: torch.Tensor
    log_likelihood: torch.Tensor
    log_prior: torch.Tensor
    log_q: torch.Tensor
    global_log_prior: torch.Tensor
    global_log_q: torch.Tensor
    samples: dict[str, torch.Tensor] | None
    local_sites: tuple[str, ...]
    global_sites: tuple[str, ...]
    observed_sites: tuple[str, ...]
    globals_once: bool
    vectorized: bool

    @property
    def num_samples(self) -> int:
        """:math:`S`."""
        return int(self.log_weights.shape[0])

    @property
    def num_data(self) -> int:
        """:math:`N`."""
        return int(self.log_weights.shape[1])

    @property
    def local_log_weights(self) -> torch.Tensor:
        """:math:`\\log p(x_n, z_n^s \\mid g^s) - \\log q(z_n^s \\mid x_n, g^s)`, shape (S, N)."""
        return self.log_likelihood + self.log_prior - self.log_q

    @property
    def global_log_weights(self) -> torch.Tensor:
        """:math:`\\log p(g^s) - \\log q(g^s)`, shape (S,)."""
        return self.global_log_prior - self.global_log_q

    def iwae(self) -> torch.Tensor:
        """Per-point IWAE estimate :math:`\\log \\frac1S \\sum_s w_n^s`, shape (N,)."""
        return torch.logsumexp(self.log_weights, 0) - math.log(self.num_samples)


# ---------------------------------------------------------------------------------------------
# Site bookkeeping


def _data_frame(site: dict, plate: str):
    return next((f for f in site["cond_indep_stack"] if f.name == plate), None)


def _site_log_prob(site: dict) -> torch.Tensor:
    """Unscaled, masked ``fn.log_prob(value)`` with all batch dims kept."""
    lp = site["fn"].log_prob(site["value"])
    mask = site.get("mask")
    if mask is not None:
        if isinstance(mask, bool):
            lp = lp if mask else torch.zeros_like(lp)
        else:
            lp = torch.where(mask, lp, lp.new_zeros(()))
    return lp


def _reduce(
    lp: torch.Tensor, width: int, data_dim: int | None, name: str, particles: int = 1
) -> torch.Tensor:
    """Sum a site's log-density to (particles, points) -- or (particles,) when ``data_dim`` is None.

    ``width`` is the plate nesting plus one (the particle dim, leftmost); ``data_dim`` the
    negative dim of the data plate; ``particles`` the size of the particle dim (1 without
    a particle plate). A batch dimension that no plate declares is an error.
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


def _sample_sites(trace: Trace) -> list[dict]:
    return [
        s for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)
    ]


# ---------------------------------------------------------------------------------------------
# The scorer


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
        Pyro model and guide following the calling convention ``fn(x, *, index=None,
        num_data=None, groups=None)`` (each receives only the keywords it accepts).
    x : Tensor of shape (N, d)
        Data, already validated.
    groups : LongTensor of shape (N,), optional
        Group labels passed to both functions.
    vectorize : bool or None
        ``True``: always use the particle plate (errors propagate); ``False``: one sample at
        a time; ``None``: try the plate on the first block and fall back if it fails.
    data_plate : str
        Name of the plate that holds the per-point sites.

    Raises
    ------
    ValueError
        If an observed site is not inside the data plate, a latent site of the model has no
        guide site, or the data plate is not vectorized.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        x: torch.Tensor,
        *,
        groups: torch.Tensor | None = None,
        vectorize: bool | None = None,
        data_plate: str = DATA_PLATE,
    ) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            raise TypeError(
                f"x must be a (N, d) torch.Tensor; got {type(x).__name__} {tuple(getattr(x, 'shape', ()))}"
            )
        if groups is not None and groups.shape[0] != x.shape[0]:
            raise ValueError(f"groups has {groups.shape[0]} labels but x has {x.shape[0]} rows")
        self.model = _Call(model)
        self.guide = _Call(guide)
        self.x = x
        self.groups = groups
        self.num_data = int(x.shape[0])
        self.data_plate = data_plate
        self.vectorize = vectorize
        self._calls = 0
        self._held: list[tuple[Trace, Trace, int]] = []
        self._first = self._classify()

    # -- structure --------------------------------------------------------------------------
    def _kwargs(self, rows: torch.Tensor) -> dict[str, Any]:
        kw: dict[str, Any] = {"index": rows, "num_data": self.num_data}
        if self.groups is not None:
            kw["groups"] = self.groups[rows]
        return kw

    def _validation(self) -> contextlib.AbstractContextManager:
        """The caller's validation setting for the first two calls (the first row, the first
        block), then off: the data were validated at the boundary, and Pyro's and torch's
        argument checks on every block would cost a third of the time."""
        self._calls += 1
        return contextlib.nullcontext() if self._calls <= 2 else pyro.validation_enabled(False)

    def _traces(self, rows: torch.Tensor, replay: Trace | None) -> tuple[Trace, Trace]:
        xb = self.x[rows]
        kw = self._kwargs(rows)
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
            f for tr in (guide_trace, model_trace) for s in _sample_sites(tr) for f in s["cond_indep_stack"]
        ]
        unvectorized = sorted({f.name for f in frames if f.dim is None})
        if plate in unvectorized:
            raise ValueError(
                f"the plate {plate!r} is sequential (used as an iterator); evaluation needs a vectorized data plate: use 'with pyro.plate({plate!r}, N):'"
            )
        self.nesting = max([-f.dim for f in frames if f.dim is not None], default=0)
        observed, local, global_ = [], [], []
        for s in _sample_sites(model_trace):
            inside = _data_frame(s, plate) is not None
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
        for s in _sample_sites(guide_trace):
            if s["is_observed"]:
                continue
            (local if _data_frame(s, plate) is not None else global_).append(s["name"])
        if not observed:
            raise ValueError(
                f"the model has no observed site inside the plate {plate!r}; call it with obs=x inside 'with pyro.plate({plate!r}, ...)'"
            )
        self.observed_sites = tuple(observed)
        #: dtype of every returned log-density: the model's, promoted with the data's
        self.dtype = torch.promote_types(
            self.x.dtype, _site_log_prob(model_trace.nodes[observed[0]]).dtype
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
            log_q = log_q + _site_log_prob(site).sum()
        for s in _sample_sites(model_trace):
            if _data_frame(s, self.data_plate) is None:
                log_p = log_p + _site_log_prob(s).sum()
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
            except _SHAPE_ERRORS as exc:
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
        xb, kw = self.x[rows], self._kwargs(rows)
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
                frame = _data_frame(site, self.data_plate)
                out = out + _reduce(_site_log_prob(site), width, frame.dim, name, particles)
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
            except _SHAPE_ERRORS as exc:
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
        return ImportanceChunk(
            rows=rows,
            log_likelihood=torch.cat([p.log_likelihood for p in parts]),
            log_prior=torch.cat([p.log_prior for p in parts]),
            log_q=torch.cat([p.log_q for p in parts]),
            samples=samples,
        )

    def _collect(
        self, rows, guide_trace, model_trace, return_samples, *, particle: int
    ) -> ImportanceChunk:
        n = rows.shape[0]
        width = self.nesting + 1
        zero = self.zeros((1, n))
        terms = {"lik": zero, "prior": zero, "q": zero}

        def add(key: str, site: dict) -> None:
            frame = _data_frame(site, self.data_plate)
            lp = _reduce(_site_log_prob(site), width, frame.dim, site["name"], particle or 1)
            terms[key] = terms[key] + lp

        for s in _sample_sites(model_trace):
            if s["is_observed"]:
                add("lik", s)
            elif s["name"] in self.local_sites:
                add("prior", s)
        samples: dict[str, torch.Tensor] | None = {} if return_samples else None
        for name in self.local_sites:
            site = guide_trace.nodes[name]
            add("q", site)
            if samples is not None:
                value = site["value"]
                samples[name] = value if particle else value.unsqueeze(0)
        size = (particle or 1, n)
        return ImportanceChunk(
            rows=rows,
            log_likelihood=terms["lik"].expand(size),
            log_prior=terms["prior"].expand(size),
            log_q=terms["q"].expand(size),
            samples=samples,
        )


# ---------------------------------------------------------------------------------------------
# Drivers


def _blocks(num_samples: int, num_data: int, chunk_size: int) -> tuple[int, int]:
    s = min(num_samples, chunk_size)
    n = min(num_data, max(1, chunk_size // s))
    return s, n


def iter_importance_chunks(
    scorer: TraceScorer,
    num_samples: int,
    draw: GlobalDraw,
    *,
    chunk_size: int | None = None,
    return_samples: bool = False,
) -> Iterator[tuple[slice, ImportanceChunk]]:
    """Yield ``(sample_slice, chunk)`` blocks covering all samples of every point.

    Points are visited in blocks of consecutive rows; within a block, the samples in blocks
    of at most ``chunk_size // rows`` (so a block holds at most ``chunk_size`` pairs). The
    order is fixed, so a seed fixes the result for a given ``chunk_size``.
    """
    chunk = chunk_size or default_chunk_size(scorer.x.shape[1])
    s_block, n_block = _blocks(num_samples, scorer.num_data, chunk)
    for start in range(0, scorer.num_data, n_block):
        rows = torch.arange(start, min(start + n_block, scorer.num_data), device=scorer.x.device)
        for s0 in range(0, num_samples, s_block):
            s1 = min(s0 + s_block, num_samples)
            yield slice(s0, s1), scorer.score(rows, s1 - s0, draw, return_samples=return_samples)


def _check_int(name: str, value: Any, low: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def importance_log_weights(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    num_samples: int,
    groups: torch.Tensor | None = None,
    chunk_size: int | None = None,
    globals_once: bool = True,
    return_samples: bool = False,
    vectorize: bool | None = None,
    seed: int | None = None,
    data_plate: str = DATA_PLATE,
) -> ImportanceSamples:
    r"""Per-point importance log weights of ``num_samples`` draws from the guide.

    Draws :math:`z_n^s \sim q(z \mid x_n, g)` for every point and scores model and guide
    from their traces (see the module notes for the estimator with global latents).

    Parameters
    ----------
    model, guide : callable
        Pyro model and guide with the calling convention ``fn(x, *, index=None,
        num_data=None, groups=None)``; the package's models and guides, or hand-written
        functions (``pyro.module`` / ``pyro.param`` inside are fine).
    x : Tensor of shape (N, d)
        Data, already validated (see :func:`bayesvae.data.as_tensor`), on the model's
        device and dtype.
    num_samples : int
        :math:`S`, draws per point.
    groups : LongTensor of shape (N,), optional
        Group labels, for priors that use them.
    chunk_size : int, optional
        Largest number of (sample, point) pairs evaluated at once; bounds memory
        independently of :math:`S` and :math:`N`. Default :func:`default_chunk_size`
        (about 10 000 pairs for 784 features).
    globals_once : bool, default True
        ``True``: one draw :math:`g \sim q(g)` shared by every sample and point (the
        data-set bound above). ``False``: a fresh :math:`g^s` per sample :math:`s`, shared
        by all points (samples are then evaluated one at a time); the per-point
        :math:`\log \frac1S\sum_s w_n^s` is then not a bound on anything, but the weights
        are what a per-sample diagnostic of the joint proposal needs.
    return_samples : bool, default False
        Also return the sampled latent values (memory :math:`S \times N \times` site size).
    vectorize : bool or None
        See :class:`TraceScorer`.
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
    Runs under ``torch.no_grad()`` with modules in eval mode (restored afterwards). Memory
    is :math:`O(\text{chunk\_size} \times \text{width})` for the computation plus the
    returned (S, N) arrays (4 of them, :math:`16 S N` bytes in float32); when only the
    per-point IWAE is needed, :func:`bayesvae.evaluation.log_marginal_likelihood` streams
    instead and keeps :math:`O(N)`.

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
    _check_int("num_samples", num_samples)
    if chunk_size is not None:
        _check_int("chunk_size", chunk_size)
    with torch.no_grad(), evaluation_mode(model, guide), seeded(seed, x.device):
        scorer = TraceScorer(model, guide, x, groups=groups, vectorize=vectorize, data_plate=data_plate)
        n = scorer.num_data
        if globals_once or not scorer.global_sites:
            draws = [scorer.draw_globals()]
            per_draw = num_samples
        else:
            scorer.vectorize = False
            draws = [scorer.draw_globals() for _ in range(num_samples)]
            per_draw = 1
        shape = (num_samples, n)
        out = {k: scorer.zeros(shape) for k in ("lik", "prior", "q")}
        samples: dict[str, torch.Tensor] | None = {} if return_samples else None
        for d, draw in enumerate(draws):
            offset = d * per_draw
            for sl, chunk in iter_importance_chunks(
                scorer, per_draw, draw, chunk_size=chunk_size, return_samples=return_samples
            ):
                s = slice(offset + sl.start, offset + sl.stop)
                out["lik"][s, chunk.rows] = chunk.log_likelihood
                out["prior"][s, chunk.rows] = chunk.log_prior
                out["q"][s, chunk.rows] = chunk.log_q
                if samples is not None:
                    for name, value in chunk.samples.items():
                        if name not in samples:
                            samples[name] = value.new_empty(shape + tuple(value.shape[2:]))
                        samples[name][s, chunk.rows] = value
        g_prior = torch.stack([d.log_prior for d in draws]).repeat_interleave(per_draw)
        g_q = torch.stack([d.log_q for d in draws]).repeat_interleave(per_draw)
        if samples is not None:
            for name in scorer.global_sites:
                samples[name] = torch.stack([d.values[name] for d in draws]).repeat_interleave(
                    per_draw, dim=0
                )
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
            globals_once=bool(globals_once),
            vectorized=bool(scorer.vectorize),
        )
