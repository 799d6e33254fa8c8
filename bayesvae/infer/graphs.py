r"""A whole training step captured as one CUDA graph and replayed (``fit(..., cuda_graphs=True)``).

At small batches a GPU step is *launch-bound*: the Burda MNIST network's step is dozens of
kernels (forward, backward, gradient check, Adam), each a few microseconds of GPU work but
several microseconds of host-side launch, plus Pyro's Python per step. A CUDA graph [1]_
records the kernels of one step once and replays them with one launch.

What is captured, per batch shape, learning rate and Adam epsilon:

1. the traced loss of :class:`~bayesvae.infer.jit.CompiledLoss` -- tensor operations only:
   Pyro's effect handlers, and the host-side checks Pyro runs on every loss (``warn_if_nan``
   reads the loss on the host, which a capture forbids), ran once at tracing time;
2. ``loss.backward()``;
3. the non-finite check, on the device (:func:`~bayesvae.infer.step.nonfinite_flag`);
4. gradient clipping, if asked for;
5. torch's fused Adam with ``found_inf`` set to that flag: a step whose loss or gradient
   is not finite leaves the parameters, the moments and the step count as they were,
   *without* a host synchronization;
6. counters of skipped steps and of the longest run of consecutive skips.

Torch's CUDA generator is graph-safe: each replay draws fresh noise (the Philox offset
advances per replay), so a replayed step is a new Monte Carlo draw, not a repeat.

Because the host no longer looks at every step, the non-finite policy is applied once an
epoch, when :meth:`CapturedStep.drain` reads the counters (one synchronization an epoch):
``on_nonfinite="stop"`` then fails the fit (at the end of the epoch, not at the step) with
the parameters as they are: every update applied was finite, the offending ones were not
applied; ``"skip"`` counts the skipped updates and stops after ``max_skips`` in a row, as the
uncaptured step does. No update that was not finite is ever applied, captured or not.

The pieces that are not CUDA-specific -- static input buffers, the masked loss, the device
counters, re-capture when the learning rate changes -- run on any device with a
stand-in for the graph (``graph_factory``, used by the CPU tests); only the capture itself
needs CUDA.

Partial batches and the warm-up steps run uncaptured, with a per-step host check, as on a
CPU. ``cuda_graphs=True`` is refused, naming the reason, for a loss that is not traced, a
data-parallel fit (the all-reduce), a KL-weight schedule and an optimizer without torch's
fused Adam; a capture that fails at run time logs a warning and the fit goes on uncaptured.

Why capture by hand rather than ``torch.compile(mode="reduce-overhead")``: TorchDynamo does
not see one graph in a Pyro ELBO. ``torch._dynamo.explain`` on
``TraceMeanField_ELBO().differentiable_loss`` of the tutorial VAE (torch 2.13, pyro 1.9.2)
finds 15 graphs and 14 graph breaks (Pyro's messenger stack, ``pyro.param`` recompiling per
parameter name, ``Tensor.item()`` in ``torch_item``); on the package's VAE, 10 graphs and 9
breaks. "reduce-overhead" would capture the fragments, with Python between them. The
traced loss of :class:`~bayesvae.infer.jit.CompiledLoss` is one graph of tensor operations,
so capturing it (with backward and the fused optimizer) needs no change to Pyro.

Status: the CPU tests run all of the code above with :class:`StandInGraph`; the real
capture (:class:`CudaGraph`) is exercised only by the CUDA tests in
``tests/infer/test_graphs.py``, which skip without a GPU, and measured by
``benchmarks/epoch_time.py --device cuda``. That is why it is opt-in.

References
----------
.. [1] NVIDIA, "CUDA Graphs", CUDA C++ Programming Guide; PyTorch, "CUDA Graphs"
   (``torch.cuda.graph``; whole-network capture), https://pytorch.org/docs/stable/notes/cuda.html#cuda-graphs
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bayesvae.convention import Batch

__all__ = ["CapturedStep", "GraphSteps", "EpochCounts", "can_capture", "CudaGraph", "StandInGraph", "GRAPH_DEVICE_TYPES", "warmup_stream"]

logger = logging.getLogger(__name__)

#: Devices whose steps can be captured (the CPU tests add "cpu" with :class:`StandInGraph`).
GRAPH_DEVICE_TYPES: tuple[str, ...] = ("cuda",)

#: Eager steps on a side stream before the first capture (cuBLAS handles, allocator, autograd).
WARMUP_STEPS = 2


class CudaGraph:
    """``torch.cuda.CUDAGraph`` behind the two calls :class:`CapturedStep` makes."""

    def __init__(self) -> None:
        self.graph = torch.cuda.CUDAGraph()

    def capture(self, fn: Callable[[], None]) -> None:
        with torch.cuda.graph(self.graph):
            fn()

    def replay(self) -> None:
        self.graph.replay()


class StandInGraph:
    """Records the step's function at capture and calls it at every replay (any device).

    It runs the same tensor code as the captured graph does, with the same static buffers,
    masks and counters; what it does not test is the capture itself.
    """

    def __init__(self) -> None:
        self.fn: Callable[[], None] | None = None

    def capture(self, fn: Callable[[], None]) -> None:
        self.fn = fn

    def replay(self) -> None:
        assert self.fn is not None
        self.fn()


#: What :class:`CapturedStep` records steps with (the CPU tests swap in :class:`StandInGraph`).
GRAPH: Callable[[], Any] = CudaGraph


@contextlib.contextmanager
def _capturable(groups):
    """Adam's ``capturable`` flag on for the capture (fused Adam keeps its step counts on the device already)."""
    saved = [g.get("capturable", False) for g in groups]
    for g in groups:
        g["capturable"] = True
    try:
        yield
    finally:
        for g, c in zip(groups, saved):
            g["capturable"] = c


def can_capture(state: Any, device: torch.device) -> str | None:
    """Why this state's step cannot be captured, or None when it can."""
    if state.compiled is None or state.compiled.failed:
        return "the loss is not traced (jit=False, or tracing failed)"
    if state.replicas.active:
        return "a data-parallel fit all-reduces its gradients every step"
    if not all(g.get("fused") for g in state.optimizer.param_groups):
        return "the optimizer is not torch's fused Adam"
    if device.type not in GRAPH_DEVICE_TYPES:
        return f"CUDA graphs need a CUDA device, not {device.type}"
    return None


@dataclass
class EpochCounts:
    """What the captured steps of one epoch did, read by :meth:`CapturedStep.drain`."""

    replays: int
    skipped: int
    max_consecutive: int
    consecutive_at_end: int


class CapturedStep:
    """A training step captured once per (batch shape, lr, eps) and replayed.

    Parameters
    ----------
    state : TrainState
        The fit's state after its first (eager, verified) step: traced loss, fused Adam.
    graph_factory : callable, optional
        Makes a graph object with ``capture(fn)`` and ``replay()``; default
        :class:`CudaGraph`. :class:`StandInGraph` runs the same code uncaptured.
    """

    def __init__(self, state: Any, graph_factory: Callable[[], Any] | None = None) -> None:
        self.state = state
        self.factory = graph_factory or GRAPH
        self.graphs: dict[tuple, tuple[Any, dict[str, Any]]] = {}
        dev = state.params[0].device
        self.skipped = torch.zeros(1, device=dev)
        self.consecutive = torch.zeros(1, device=dev)
        self.max_consecutive = torch.zeros(1, device=dev)
        self.replays = 0
        self.failed = False

    def _key(self, batch: Batch) -> tuple:
        group = self.state.optimizer.param_groups[0]
        return (self.state.compiled.key(batch, 1.0), float(group["lr"]), float(group["eps"]))

    def __call__(self, batch: Batch) -> torch.Tensor | None:
        """Replay the step on ``batch``; the loss (0 where skipped), or None: step it uncaptured."""
        if self.failed:
            return None
        key = self._key(batch)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self._capture(batch, key)
            if entry is None:
                return None
        graph, static = entry
        static["x"].copy_(batch.x)
        static["index"].copy_(batch.index)
        for k, v in batch.covariates.items():
            static["covariates"][k].copy_(v)
        graph.replay()
        self.replays += 1
        return static["loss"]

    def _capture(self, batch: Batch, key: tuple):
        fn = self.state.compiled.graph_for(batch, 1.0)
        if fn is None:
            self.failed = True
            return None
        if len(self.graphs) > 16:  # e.g. an lr that changes every epoch: keep memory bounded
            self.graphs.clear()
        static: dict[str, Any] = {
            "x": batch.x.clone(),
            "index": batch.index.clone(),
            "covariates": {k: v.clone() for k, v in batch.covariates.items()},
        }
        sbatch = Batch(x=static["x"], index=static["index"], num_data=batch.num_data, covariates=static["covariates"])
        state, opt = self.state, self.state.optimizer
        from bayesvae.infer.step import nonfinite_flag

        def body() -> None:
            opt.zero_grad(set_to_none=True)  # at capture: backward allocates the graph's own gradients
            out = state.compiled.replay(fn, sbatch)
            loss, report = (out[0], out[1]) if isinstance(out, tuple) else (out, out)
            loss.backward()
            report = report.detach().reshape(())
            bad = nonfinite_flag(state.params, report)
            if state.clip_norm is not None:
                nn.utils.clip_grad_norm_(state.params, state.clip_norm)
            opt.found_inf = bad  # torch's fused Adam leaves everything as it was where this is 1
            try:
                opt.step()
            finally:
                del opt.found_inf
            static["loss"] = torch.where(bad.reshape(()) > 0, torch.zeros_like(report), report)
            self.skipped.add_(bad)
            self.consecutive.add_(bad).mul_(bad)  # +1 on a skip, back to 0 on an applied update
            torch.maximum(self.max_consecutive, self.consecutive, out=self.max_consecutive)

        graph = self.factory()
        try:
            with _capturable(opt.param_groups):
                graph.capture(body)
        except Exception as exc:  # noqa: BLE001 - a step that cannot be captured runs uncaptured
            logger.warning("could not capture the training step as a CUDA graph (%s: %s); running it uncaptured", type(exc).__name__, exc)
            opt.zero_grad(set_to_none=True)
            self.failed = True
            return None
        self.graphs[key] = (graph, static)
        return graph, static

    def drain(self) -> EpochCounts:
        """The epoch's counts (one host synchronization), and the counters reset for the next."""
        counts = torch.cat([self.skipped, self.max_consecutive, self.consecutive]).tolist()
        out = EpochCounts(self.replays, int(counts[0]), int(counts[1]), int(counts[2]))
        self.skipped.zero_()
        self.max_consecutive.copy_(self.consecutive)  # a run of skips may continue into the next epoch
        self.replays = 0
        return out


def warmup_stream(device: torch.device):
    """A side stream for the eager warm-up steps before a capture (the CUDA-graphs recipe)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))

    @contextlib.contextmanager
    def run():
        with torch.cuda.stream(side):
            yield
        torch.cuda.current_stream(device).wait_stream(side)

    return run()


class GraphSteps:
    """A fit's use of captured steps: warm-up, capture, replay and the epoch's accounting.

    ``fit`` asks :meth:`take` for every batch; None means "take an uncaptured step" (the
    warm-up steps, partial batches, or a capture that failed), run inside :meth:`warmup`.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.captured: CapturedStep | None = None
        self.eager_full = 0
        self.share = 0.0

    def check(self, state: Any) -> None:
        why = can_capture(state, self.device)
        if why is not None:
            raise ValueError(f"cuda_graphs=True, but the step cannot be captured: {why}")

    def take(self, state: Any, batch: Batch, share: float, full: bool) -> torch.Tensor | None:
        """The replayed step's loss (0 where its update was skipped), or None."""
        if not full:
            return None
        if self.captured is None:
            if self.eager_full < WARMUP_STEPS:
                return None
            self.check(state)
            self.captured = CapturedStep(state)
        loss = self.captured(batch)
        if loss is not None:
            self.share = share
        return loss

    def warmup(self):
        """The context of an uncaptured step: a side stream until the first capture."""
        return warmup_stream(self.device) if self.captured is None else contextlib.nullcontext()

    def stepped(self, full: bool) -> None:
        self.eager_full += bool(full)

    def drain(self) -> tuple[EpochCounts, float] | None:
        """The epoch's counts and the share of one full batch, or None when nothing was replayed."""
        if self.captured is None:
            return None
        return self.captured.drain(), self.share
