r"""The one scoring mode: eval-mode modules, the prior's scoring context, a seeded RNG."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["evaluation_mode", "scoring_context", "seeded"]


def scoring_context(part: Any) -> Callable[[], contextlib.AbstractContextManager] | None:
    """The context a model's prior asks to be scored in, or ``None``.

    ``part.prior.scoring_context`` when the prior has it, else ``part.prior.discrete`` (the
    IBP prior's relaxed-to-discrete switch, the hook's older name), else ``None``.
    """
    prior = getattr(part, "prior", None)
    for name in ("scoring_context", "discrete"):
        context = getattr(prior, name, None)
        if callable(context):
            return context
    return None


@contextlib.contextmanager
def evaluation_mode(*parts: Any) -> Iterator[None]:
    r"""Score the model that was meant, not the one that was trained.

    Modules among ``parts`` go to eval mode (dropout off, batch-norm on its running
    statistics), and a part whose prior has a scoring context -- ``prior.scoring_context()``,
    or ``prior.discrete()`` for a prior without that hook (the IBP prior's relaxed training
    mode) -- is evaluated inside it, so that every log-density read from a trace is a proper
    one of the model being evaluated, e.g. the log-mass of the discrete indicators
    :math:`b_{nk} \sim \mathrm{Bernoulli}(\pi_k)` instead of a Concrete relaxation's density.
    Each prior's context is entered once (model and guide may share a prior). Both are
    restored afterwards.

    Parameters
    ----------
    *parts : model, guide or any object
        The callables to score; ``nn.Module`` s among them are switched to eval mode.
    """
    modules = [m for p in parts if isinstance(p, nn.Module) for m in p.modules()]
    flags = [m.training for m in modules]
    with contextlib.ExitStack() as stack:
        entered: set[int] = set()
        for part in parts:
            context = scoring_context(part)
            prior = getattr(part, "prior", None)
            if context is not None and id(prior) not in entered:
                entered.add(id(prior))
                stack.enter_context(context())
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

    ``seed=None`` draws from the caller's current RNG stream instead. On a CUDA ``device``
    that device's generator is forked too.
    """
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield
