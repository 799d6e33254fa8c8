"""Data-parallel training across ``torch.distributed`` processes (e.g. launched by ``torchrun``)."""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence

import torch

__all__ = ["Replicas"]


class Replicas:
    r"""Synchronize data-parallel replicas of one fit.

    Every process holds the whole model and guide and the whole data set; each minibatch's
    rows are split across the ``world`` processes (rank ``r`` takes rows ``r, r + world,
    ...``). Rank ``r``'s loss :math:`\hat L_r` scales its shard by ``N / |shard|``, so each
    :math:`\hat L_r` is an unbiased estimate of the full-data loss and their average, whose
    gradient :meth:`average` forms by one all-reduce, is the single-process minibatch estimate
    of the whole batch (exactly, for a deterministic loss). Global sites enter every
    :math:`\hat L_r` once, so they are counted once in the average.

    ``enabled=False`` (or a world of one process) makes every method a no-op.
    """

    def __init__(self, enabled: bool, device: torch.device, timeout: float | None = None) -> None:
        self.rank, self.world = 0, 1
        self.timeout = timeout
        if not enabled:
            return
        import torch.distributed as dist

        if not dist.is_available():
            raise ValueError("distributed=True needs a torch build with torch.distributed")
        if not dist.is_initialized():
            if "WORLD_SIZE" not in os.environ:
                raise ValueError(
                    "distributed=True needs torch.distributed to be initialized: launch with torchrun (which sets WORLD_SIZE, RANK, MASTER_ADDR) or call torch.distributed.init_process_group first"
                )
            kwargs = {} if timeout is None else {"timeout": datetime.timedelta(seconds=float(timeout))}
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", **kwargs)
        self._dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    @property
    def active(self) -> bool:
        """Whether there is more than one process to synchronize."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints and evaluates validation data."""
        return self.rank == 0

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This process's rows of a minibatch."""
        return index[self.rank :: self.world] if self.active else index

    @torch.no_grad()
    def broadcast(self, tensors: Sequence[torch.Tensor]) -> None:
        """Copy rank 0's values of ``tensors`` to every process."""
        if self.active:
            for t in tensors:
                self._collective(self._dist.broadcast, t.data, src=0)

    @torch.no_grad()
    def average(self, params: Sequence[torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        """Average gradients and the loss over processes in one all-reduce; returns the mean loss."""
        if not self.active:
            return loss.detach()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([*(g.reshape(-1) for g in grads), loss.detach().reshape(1).to(grads[0].dtype)])
        self._collective(self._dist.all_reduce, flat)
        flat /= self.world
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(g).clone()
            offset += n
        return flat[-1]

    @torch.no_grad()
    def all_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every process."""
        if not self.active:
            return flag
        t = torch.tensor([0.0 if flag else 1.0])
        self._dist.all_reduce(t)
        return bool(t.item() == 0)

    def _collective(self, op, *args, **kwargs):
        """Run a collective; a timeout becomes an error naming the unresponsive process(es)."""
        try:
            return op(*args, **kwargs)
        except RuntimeError as exc:
            text = str(exc)
            if "timed out" not in text.lower() and "timeout" not in text.lower() and "connection" not in text.lower():
                raise
            import re

            ranks = sorted({int(r) for r in re.findall(r"rank[^0-9]{0,3}(\d+)", text) if int(r) != self.rank})
            who = f"rank(s) {ranks}" if ranks else "another process"
            raise RuntimeError(
                f"distributed fit: {who} did not respond within the {self.timeout} s timeout (rank {self.rank} of {self.world} gave up); check that every process is alive, or raise distributed_timeout=. Original error: {text.splitlines()[0] if text else type(exc).__name__}"
            ) from exc

    @torch.no_grad()
    def gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every process's ``t`` (same shape and dtype everywhere), in rank order."""
        if not self.active:
            return [t]
        out = [torch.empty_like(t) for _ in range(self.world)]
        self._collective(self._dist.all_gather, out, t.contiguous())
        return out
