"""Compile a training step's loss with ``torch.jit.trace`` (opt-in: ``fit(..., jit=True)``)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

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
    same seed gives the same numbers as the eager step). The module parameters are inputs
    of the traced function (swapped in with ``torch.nn.utils.stateless``), so gradients
    reach them.

    A graph is traced for each distinct (batch shape, ``num_data``) and retraced whenever a
    module *buffer* changes value (e.g. an annealed temperature that the model reads as a
    Python number). It is valid for models whose structure does not depend on data values
    (no data-dependent Python branching inside model or guide) -- the package's models --
    and it cannot capture ``pyro.param`` sites of hand-written functions.
    """

    def __init__(self, loss: Callable[..., torch.Tensor], modules: Sequence[nn.Module]) -> None:
        if _reparametrize_module is None:  # pragma: no cover
            raise ValueError("jit=True needs torch >= 2.0")
        self.loss = loss
        self.modules = list(modules)
        self.names = [[name for name, _ in m.named_parameters()] for m in self.modules]
        self.params = [p for m in self.modules for _, p in m.named_parameters()]
        self.cache: dict[Any, Any] = {}
        self.failed = False

    def _buffers_key(self) -> tuple:
        values = []
        for m in self.modules:
            for b in m.buffers():
                if b.numel() <= 64:
                    values.append(tuple(b.detach().cpu().flatten().tolist()))
        return tuple(values)

    def _swap(self, flat: Sequence[torch.Tensor]) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        offset = 0
        for m, names in zip(self.modules, self.names):
            stack.enter_context(_reparametrize_module(m, dict(zip(names, flat[offset : offset + len(names)]))))
            offset += len(names)
        return stack

    def __call__(self, x: torch.Tensor, index: torch.Tensor, groups: torch.Tensor | None, num_data: int) -> torch.Tensor:
        key = (tuple(x.shape), None if groups is None else tuple(groups.shape), num_data, self._buffers_key())
        if self.failed:
            return self.loss(x, index, groups, num_data)
        fn = self.cache.get(key)
        if fn is None:
            if len(self.cache) > 16:  # e.g. a buffer that changes every step: stop caching
                self.cache.clear()
            try:
                fn = self._trace(x, index, groups, num_data)
            except Exception as exc:  # noqa: BLE001 - any tracing failure means: run eagerly
                logger.warning("could not trace the training step (%s); running it eagerly", exc)
                self.failed = True
                return self.loss(x, index, groups, num_data)
            self.cache[key] = fn
        extra = () if groups is None else (groups,)
        # Without the graph executor's optimization passes, a replay is the same arithmetic on
        # its first call as on its hundredth (the passes kick in after a few profiled runs and
        # may reassociate floating point), so a resumed fit stays bit-identical.
        with torch.jit.optimized_execution(False):
            return fn(x, index, *extra, *self.params)

    def _trace(self, x, index, groups, num_data):
        has_groups = groups is not None
        n_extra = 1 if has_groups else 0

        def step(x, index, *rest):
            g = rest[0] if has_groups else None
            with self._swap(rest[n_extra:]):
                return self.loss(x, index, g, num_data)

        example = (x, index, *((groups,) if has_groups else ()), *self.params)
        # Replaying the same RNG stream: tracing runs the step once, so draw from a forked
        # generator state to leave the caller's stream as if tracing had not happened.
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            warnings.simplefilter("ignore")
            return torch.jit.trace(step, example, check_trace=False)
