"""Compile a training step's loss with ``torch.jit.trace`` (``fit(..., jit=...)``)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from bayesvae.convention import Batch
from bayesvae.infer.params import ParamSet

__all__ = ["CompiledLoss"]

logger = logging.getLogger(__name__)

try:  # torch >= 2.0
    from torch.nn.utils.stateless import _reparametrize_module
except ImportError:  # pragma: no cover - very old torch
    _reparametrize_module = None


class CompiledLoss:
    r"""The objective's loss on one minibatch, traced once per shape and replayed.

    Pyro's per-step work -- effect handlers, traces, distribution objects -- is Python
    overhead of roughly half a millisecond per step on CPU, independent of the batch; a
    traced graph replays only the tensor operations (the random draws included: the trace
    records ``normal_`` calls, so every replay draws afresh from torch's generator, and the
    same seed gives the same numbers as the eager step). The module parameters, and the
    fit's own ``pyro.param`` tensors of hand-written functions, are inputs of the traced
    function (swapped in with ``torch.nn.utils.stateless``), so gradients reach them.

    A graph is traced for each distinct (batch shape, ``num_data``, covariate shapes) and
    retraced whenever a module *buffer* changes value (e.g. an annealed temperature that the
    model reads as a Python number). It is valid for models whose structure does not depend
    on data values. With ``check=True`` (used for functions that are not the package's own
    components, whose tracing is not tested here) each new graph is first compared with the
    eager step on the same random draws -- loss values and gradients -- and the step falls
    back to eager execution, with an INFO line, when they differ or tracing fails.
    """

    def __init__(
        self,
        loss: Callable[[Batch], Any],
        modules: Sequence[nn.Module],
        params: ParamSet | None = None,
        *,
        check: bool = False,
    ) -> None:
        if _reparametrize_module is None:  # pragma: no cover
            raise ValueError("jit=True needs torch >= 2.0")
        self.loss = loss
        self.modules = list(modules)
        self.names = [[name for name, _ in m.named_parameters()] for m in self.modules]
        module_params = [p for m in self.modules for _, p in m.named_parameters()]
        seen = {id(p) for p in module_params}
        self.param_set = params
        self.own = [] if params is None else [n for n, u in params.unconstrained.items() if id(u) not in seen]
        self.params = module_params + [params.unconstrained[n] for n in self.own] if params is not None else module_params
        self.check = check
        self.cache: dict[Any, Any] = {}
        self.failed = False
        self._buffer_dicts: list[dict] | None = None

    def _buffers_key(self) -> tuple:
        """The values of the small buffers (a graph bakes in what the model reads as numbers).

        The submodules' buffer dictionaries are listed once (walking the modules recursively
        every step costs more than a small network's update); each step reads those
        dictionaries afresh, so a buffer reassigned or registered on an existing submodule is
        seen. With no small buffers -- most models -- the key is empty and reading it costs
        no device synchronization.
        """
        if self._buffer_dicts is None:  # registering a buffer mutates its module's dictionary
            self._buffer_dicts = [sub._buffers for m in self.modules for sub in m.modules()]
        values = []
        for buffers in self._buffer_dicts:
            if buffers:
                for b in buffers.values():
                    if b is not None and b.numel() <= 64:
                        values.append(tuple(b.detach().cpu().flatten().tolist()))
        return tuple(values)

    @contextlib.contextmanager
    def _swap(self, flat: Sequence[torch.Tensor]):
        with contextlib.ExitStack() as stack:
            offset = 0
            for m, names in zip(self.modules, self.names):
                stack.enter_context(_reparametrize_module(m, dict(zip(names, flat[offset : offset + len(names)]))))
                offset += len(names)
            saved = {}
            if self.param_set is not None:
                for name, t in zip(self.own, flat[offset:]):
                    saved[name] = self.param_set.unconstrained[name]
                    self.param_set.unconstrained[name] = t
            try:
                yield
            finally:
                if self.param_set is not None:
                    self.param_set.unconstrained.update(saved)

    def __call__(self, batch: Batch, key_extra: Any = None) -> Any:
        fn = self.graph_for(batch, key_extra)
        if fn is None:
            return self.loss(batch)
        return self.replay(fn, batch)

    def key(self, batch: Batch, key_extra: Any = None) -> tuple:
        """What a graph is traced for: shapes, ``num_data``, small buffer values, ``key_extra``."""
        cov = tuple(sorted(batch.covariates))
        return (
            tuple(batch.x.shape),
            tuple((k, tuple(batch.covariates[k].shape)) for k in cov),
            batch.num_data,
            self._buffers_key(),
            key_extra,
        )

    def graph_for(self, batch: Batch, key_extra: Any = None):
        """The traced function for ``batch`` (traced now if new), or None: run this step eagerly."""
        if self.failed:
            return None
        key = self.key(batch, key_extra)
        fn = self.cache.get(key)
        if fn is None:
            if len(self.cache) > 16:  # e.g. a buffer that changes every step: stop caching
                self.cache.clear()
            cov = tuple(sorted(batch.covariates))
            try:
                fn = self._trace(batch, cov)
                if self.check and not self._agrees(fn, batch, cov):
                    logger.info("the traced training step differs from the eager one for this model; running it eagerly")
                    self.failed = True
                    return None
            except Exception as exc:  # noqa: BLE001 - any tracing failure means: run eagerly
                log = logger.info if self.check else logger.warning
                log("could not trace the training step (%s: %s); running it eagerly", type(exc).__name__, exc)
                self.failed = True
                return None
            self.cache[key] = fn
        return fn

    def replay(self, fn, batch: Batch) -> Any:
        """Run a traced function on ``batch`` with the current parameters as its inputs."""
        # Without the graph executor's optimization passes, a replay is the same arithmetic on
        # its first call as on its hundredth (the passes kick in after a few profiled runs and
        # may reassociate floating point), so a resumed fit stays bit-identical.
        cov = tuple(sorted(batch.covariates))
        with torch.jit.optimized_execution(False):
            return fn(batch.x, batch.index, *(batch.covariates[k] for k in cov), *self.params)

    def _trace(self, batch: Batch, cov: tuple[str, ...]):
        n_cov = len(cov)
        num_data = batch.num_data

        def step(x, index, *rest):
            b = Batch(x=x, index=index, num_data=num_data, covariates=dict(zip(cov, rest[:n_cov])))
            with self._swap(rest[n_cov:]):
                return self.loss(b)

        example = (batch.x, batch.index, *(batch.covariates[k] for k in cov), *self.params)
        # Replaying the same RNG stream: tracing runs the step once, so draw from a forked
        # generator state to leave the caller's stream as if tracing had not happened.
        with warnings.catch_warnings(), fork_rng_of(batch.x.device):
            warnings.simplefilter("ignore")
            return torch.jit.trace(step, example, check_trace=False)

    def _agrees(self, fn, batch: Batch, cov: tuple[str, ...]) -> bool:
        """One traced and one eager evaluation on the same draws: same loss and gradients."""
        state = torch.get_rng_state()

        def run(compute):
            torch.set_rng_state(state)
            out = compute()
            first = out[0] if isinstance(out, tuple) else out
            grads = torch.autograd.grad(first, self.params, allow_unused=True)
            return first.detach(), [None if g is None else g.detach() for g in grads]

        with fork_rng_of(batch.x.device):
            with torch.jit.optimized_execution(False):
                traced = run(lambda: fn(batch.x, batch.index, *(batch.covariates[k] for k in cov), *self.params))
            eager = run(lambda: self.loss(batch))
        if not torch.allclose(traced[0], eager[0], rtol=1e-5, atol=1e-6):
            return False
        for a, b in zip(traced[1], eager[1]):
            if (a is None) != (b is None) or (a is not None and not torch.allclose(a, b, rtol=1e-4, atol=1e-6)):
                return False
        return True


def fork_rng_of(device: torch.device):
    """Fork torch's generator (and the device's, for CUDA): draws inside leave the caller's stream alone."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
