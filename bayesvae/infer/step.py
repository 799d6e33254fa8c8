r"""One training step: an explicit state and ``step(state, batch) -> (state, loss)``.

The shape is NumPyro's ``SVIState`` + ``update`` and Pyro's ``SVI.step``:

.. code-block:: python

    state = init_state(model, guide, objective, first_batch, lr=1e-3)
    for batch in batches:
        state, loss = step(state, batch)

A step computes ``loss = objective.differentiable_loss(model, guide, batch.x, **batch.kwargs())``
(traced and replayed when :class:`~bayesvae.infer.jit.CompiledLoss` is on), back-propagates,
all-reduces the gradients across data-parallel replicas, and applies one ``torch.optim.Adam``
update to every tensor the fit owns: torch's fused kernel where the device has one, called
directly (:func:`adam_update`, bit-identical to ``Adam.step()`` without its per-step Python).
Torch updates parameters in place, so the returned state shares its tensors with the old
one; what is returned new are the counters.

The state is guarded, not only the loss: an update is applied only when the loss *and* the
gradient norm are finite (with finite gradients Adam's step is bounded by the learning rate,
so the parameters stay finite). Otherwise ``on_nonfinite="stop"`` raises
:class:`NonFiniteStep` with the parameters as they were before the step, and
``on_nonfinite="skip"`` drops the update and keeps the state (NumPyro's ``stable_update``),
counting the skips, until ``max_skips`` consecutive skips.
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import torch
import torch.optim.optimizer as _optim
from torch import nn

from bayesvae.convention import Batch, Call
from bayesvae.infer.distributed import Replicas
from bayesvae.infer.jit import CompiledLoss, fork_rng_of
from bayesvae.infer.params import ParamSet, owned_modules
from bayesvae.scaling import ScalePlan, verify_scales

__all__ = ["TrainState", "NonFiniteStep", "init_state", "step", "loss_on", "trainable", "all_finite", "make_adam", "nonfinite_flag", "adam_update", "clear_grads"]

logger = logging.getLogger(__name__)

ON_NONFINITE = ("stop", "skip")


class NonFiniteStep(RuntimeError):
    """A step's loss or gradient was not finite; the update was not applied."""


@dataclass(frozen=True)
class TrainState:
    """Everything a training step reads and advances.

    Attributes
    ----------
    model, guide : Call
        Model and guide in the calling convention, with the verified scale plan (and the
        fit's own ``pyro.param`` set for hand-written functions) applied on every call.
    objective : object
        An ELBO with ``differentiable_loss(model, guide, x, **kwargs)``.
    params : tuple of Tensor
        Every tensor the optimizer updates.
    optimizer : torch.optim.Optimizer
        One Adam over ``params``.
    plan : ScalePlan
        The data plate and how it is scaled (read from the first step's traces).
    param_set : ParamSet or None
        The ``pyro.param`` tensors of hand-written functions.
    compiled : CompiledLoss or None
        The traced loss, when on.
    replicas : Replicas
        Data-parallel synchronization (a no-op for one process).
    clip_norm : float or None
        Gradient-norm clipping.
    on_nonfinite : {"stop", "skip"}
        What a non-finite loss or gradient does.
    max_skips : int
        Consecutive skipped updates after which ``"skip"`` stops too.
    steps, skipped, consecutive_skips : int
        Counters: updates applied, updates dropped, dropped in a row.
    """

    model: Call
    guide: Call
    objective: Any
    params: tuple[torch.Tensor, ...]
    optimizer: torch.optim.Optimizer
    plan: ScalePlan
    param_set: ParamSet | None = None
    compiled: CompiledLoss | None = None
    replicas: Replicas = dataclasses.field(default_factory=lambda: Replicas(False, torch.device("cpu")))
    clip_norm: float | None = None
    on_nonfinite: str = "stop"
    max_skips: int = 10
    steps: int = 0
    skipped: int = 0
    consecutive_skips: int = 0


def loss_on(objective: Any, model: Call, guide: Call, batch: Batch) -> Any:
    """The objective on one batch: ``(loss, report)`` when it reports a kl-weight-1 loss too."""
    losses = getattr(objective, "losses", None)
    if callable(losses) and getattr(objective, "kl_weight", 1.0) != 1.0:
        return losses(model, guide, batch.x, **batch.kwargs())
    return objective.differentiable_loss(model, guide, batch.x, **batch.kwargs())


def trainable(modules: list[nn.Module], param_set: ParamSet | None) -> tuple[torch.Tensor, ...]:
    """Every trainable tensor of the modules and the fit's own pyro.params, once each."""
    params: dict[int, torch.Tensor] = {}
    for m in modules:
        params.update({id(p): p for p in m.parameters() if p.requires_grad})
    if param_set is not None:
        params.update({id(p): p for p in param_set.trainable()})
    if not params:
        raise ValueError("model and guide have no trainable parameters")
    return tuple(params.values())


def all_finite(tensors: Any) -> bool:
    """Whether every tensor is finite (one device sync)."""
    tensors = [t for t in tensors if t is not None and t.is_floating_point()]
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def init_state(
    model: Callable,
    guide: Callable,
    objective: Any,
    first: Batch,
    *,
    lr: float = 1e-3,
    adam_eps: float = 1e-8,
    clip_norm: float | None = None,
    replicas: Replicas | None = None,
    jit: bool = False,
    check_jit: bool = False,
    param_set: ParamSet | None = None,
    on_nonfinite: str = "stop",
    max_skips: int = 10,
    optim_state: dict[str, Any] | None = None,
    plan: ScalePlan | None = None,
) -> TrainState:
    """Verify the model on ``first`` and build the state of its first step.

    With Pyro's validation on and the caller's RNG stream left untouched (the checks draw
    from a forked generator), this reads the scale of every site from the traces
    (:func:`~bayesvae.scaling.verify_scales`), creates the hand-written functions'
    ``pyro.param`` tensors in ``param_set``, checks that the loss is finite at the initial
    parameters, and builds one Adam over every tensor the fit owns.

    Raises
    ------
    ValueError
        Scales that are not an unbiased minibatch estimate, a non-finite initial loss, no
        trainable parameters, ``on_nonfinite`` not one of ``"stop"``/``"skip"``.
    """
    if on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"on_nonfinite must be one of {list(ON_NONFINITE)}, got {on_nonfinite!r}")
    replicas = replicas or Replicas(False, first.x.device)
    own = () if param_set is None else (param_set.wrapper(),)
    base_model, base_guide = Call(model).with_wrappers(*own), Call(guide).with_wrappers(*own)
    with fork_rng_of(first.x.device), pyro.validation_enabled(True):
        if plan is None:
            plan = verify_scales(base_model, base_guide, first)
        model_call = Call(model).with_wrappers(*own, *plan.wrappers())
        guide_call = Call(guide).with_wrappers(*own, *plan.wrappers())
        out = loss_on(objective, model_call, guide_call, first)
    loss = out[0] if isinstance(out, tuple) else out
    if not torch.isfinite(loss):
        raise ValueError(
            f"the loss is {float(loss.detach())} at the initial parameters; check the model, the guide and the data scale"
        )
    modules = owned_modules(model, guide)
    params = trainable(modules, param_set)
    if param_set is not None:
        replicas.broadcast(param_set.trainable())
    optimizer = make_adam(params, lr=lr, eps=adam_eps)
    if optim_state is not None:
        optimizer.load_state_dict(optim_state)
    compiled = None
    if jit:
        compiled = CompiledLoss(
            lambda b: loss_on(objective, model_call, guide_call, b), modules, param_set, check=check_jit
        )
    return TrainState(
        model=model_call,
        guide=guide_call,
        objective=objective,
        params=params,
        optimizer=optimizer,
        plan=plan,
        param_set=param_set,
        compiled=compiled,
        replicas=replicas,
        clip_norm=clip_norm,
        on_nonfinite=on_nonfinite,
        max_skips=max_skips,
    )


_TOTAL_NORM = getattr(nn.utils, "get_total_norm", None)  # torch >= 2.6: one fused pass
# One pass over the gradients that flags any non-finite value (the kernel behind
# ``GradScaler.unscale_``; with a scale of 1 it leaves the gradients as they are).
_AMP_CHECK = getattr(torch, "_amp_foreach_non_finite_check_and_unscale_", None)
_ONES: dict[torch.device, torch.Tensor] = {}


def make_adam(params: Any, *, lr: float, eps: float) -> torch.optim.Adam:
    """One ``torch.optim.Adam`` over ``params``: torch's fused kernel where the device has one.

    The fused implementation (``fused=True``: CUDA, and CPU from torch 2.4) updates every
    tensor in one kernel instead of a dozen small ops per tensor -- on the Burda MNIST
    network it takes 0.22 ms a step on one CPU thread against 0.67 ms for the default
    for-loop implementation -- and it can skip an update on the device (``found_inf``)
    without a host synchronization. Where it is unavailable the default implementation is
    used; the update rule is the same (Kingma & Ba 2015), the rounding may differ.
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    except (RuntimeError, ValueError, TypeError):  # an old torch, or a device without the kernel
        return torch.optim.Adam(params, lr=lr, eps=eps)


_FUSED_ADAM = getattr(torch, "_fused_adam_", None)


def adam_update(opt: torch.optim.Optimizer) -> None:
    r"""``opt.step()`` for a fused ``torch.optim.Adam``, calling torch's kernel directly.

    ``Adam.step`` spends about 40 µs a step in Python on the Burda MNIST network (hooks,
    profiler ranges, rebuilding and regrouping six lists of tensors) around one
    ``torch._fused_adam_`` call; on a 4 ms CPU step that is 1 %. This makes the same two
    calls that ``torch.optim.adam._fused_adam`` makes -- ``_foreach_add_`` on the step
    counters, then the kernel with the group's ``lr``, betas and ``eps`` -- on the
    optimizer's own state tensors, so the update, the state and ``state_dict`` are
    bit-identical to ``opt.step()`` (tested). The lists of state tensors are kept while
    ``opt.state`` and the group's parameter list are the same objects (``load_state_dict``
    replaces the first). Anything else -- the first step (torch creates the state),
    another implementation, several groups, amsgrad, weight decay, a tensor ``lr``,
    registered step hooks, parameters of mixed devices or dtypes, sparse gradients, a
    ``found_inf`` set for a captured step -- goes through ``opt.step()``.
    """
    groups = opt.param_groups
    if (
        _FUSED_ADAM is None
        or len(groups) != 1
        or type(opt) is not torch.optim.Adam
        or opt._optimizer_step_pre_hooks
        or opt._optimizer_step_post_hooks
        or _optim._global_optimizer_pre_hooks
        or _optim._global_optimizer_post_hooks
        or getattr(opt, "grad_scale", None) is not None
        or getattr(opt, "found_inf", None) is not None
    ):
        opt.step()
        return
    group = groups[0]
    plain = (group["amsgrad"], group["maximize"], group["weight_decay"], group["capturable"], group["differentiable"], group.get("decoupled_weight_decay", False))
    lists = None if not group.get("fused") or plain != _PLAIN_ADAM or isinstance(group["lr"], torch.Tensor) else _state_lists(opt, group)
    if lists is None:
        opt.step()
        return
    params, exp_avgs, exp_avg_sqs, steps = lists
    grads = [p.grad for p in params]
    if any(g is None or g.is_sparse for g in grads):
        if any(g is not None and g.is_sparse for g in grads):
            opt.step()  # torch's error for sparse gradients
            return
        # parameters without a gradient this step are left out, as torch does (their step counters too)
        keep = [i for i, g in enumerate(grads) if g is not None]
        if not keep:
            return
        params, grads, exp_avgs, exp_avg_sqs, steps = ([lst[i] for i in keep] for lst in (params, grads, exp_avgs, exp_avg_sqs, steps))
    _fused(group, params, grads, exp_avgs, exp_avg_sqs, steps)


_PLAIN_ADAM = (False, False, 0, False, False, False)
_LISTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _state_lists(opt: torch.optim.Optimizer, group: dict) -> tuple[list, list, list, list] | None:
    """(params, exp_avgs, exp_avg_sqs, steps) of the group, or None before every parameter has state."""
    params, state = group["params"], opt.state
    cached = _LISTS.get(opt)
    if cached is not None and cached[0] is state and cached[1] is params and cached[2] == len(params) == len(state):
        return cached[3]
    if not params or len(state) != len(params):
        return None  # before every parameter has state (torch creates it at a parameter's first step)
    first = params[0]
    lists: tuple[list, list, list, list] = ([], [], [], [])
    for p in params:
        st = state.get(p)
        if not st or p.device != first.device or p.dtype != first.dtype:
            return None  # a new parameter's state, or lists torch would split by device and dtype
        for lst, t in zip(lists, (p, st["exp_avg"], st["exp_avg_sq"], st["step"])):
            lst.append(t)
    _LISTS[opt] = (state, params, len(params), lists)
    return lists


def _fused(group: dict, params: list, grads: list, exp_avgs: list, exp_avg_sqs: list, steps: list) -> None:
    beta1, beta2 = group["betas"]
    torch._foreach_add_(steps, 1)
    _FUSED_ADAM(
        params, grads, exp_avgs, exp_avg_sqs, [], steps,
        amsgrad=False, lr=group["lr"], beta1=float(beta1), beta2=float(beta2), weight_decay=0.0,
        eps=group["eps"], maximize=False, grad_scale=None, found_inf=None,
    )


def clear_grads(params: tuple[torch.Tensor, ...]) -> None:
    """``optimizer.zero_grad(set_to_none=True)`` for the tensors a fit owns (without its hooks)."""
    for p in params:
        p.grad = None


def _grad_norm(params: tuple[torch.Tensor, ...]) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if _TOTAL_NORM is not None:
        return _TOTAL_NORM(grads, error_if_nonfinite=False)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def nonfinite_flag(params: tuple[torch.Tensor, ...], loss: torch.Tensor) -> torch.Tensor:
    """A float tensor of shape () on ``loss``'s device: 1 when the loss or any gradient is not finite.

    Computed on the device, without a host synchronization (what a captured step needs):
    one fused pass over the gradients and the loss where torch has the kernel.
    """
    loss = loss.detach()
    grads = [p.grad for p in params if p.grad is not None]
    if _AMP_CHECK is not None and loss.is_floating_point():
        one = _ONES.get(loss.device)
        if one is None:
            one = _ONES[loss.device] = torch.ones((), device=loss.device)
        flag = torch.zeros((), device=loss.device)
        try:  # multiplies each tensor by one: the gradients and the loss keep their values
            _AMP_CHECK([*grads, loss.reshape(1)], flag, one)
            return flag
        except (RuntimeError, NotImplementedError):  # no kernel for this device or dtype
            pass
    flag = torch.logical_not(torch.isfinite(loss)).to(torch.float32).reshape(())
    if not grads:
        return flag
    norm = _grad_norm(params).to(flag.device)
    return torch.maximum(flag, torch.logical_not(torch.isfinite(norm)).to(torch.float32).reshape(()))


def step(state: TrainState, batch: Batch, *, compiled: bool = True) -> tuple[TrainState, torch.Tensor]:
    """One update of ``state`` on ``batch``.

    Returns
    -------
    state : TrainState
        The advanced state (counters; parameters and optimizer moments are updated in place).
    loss : Tensor, scalar
        The batch's loss at kl weight 1 (minus the minibatch ELBO estimate), averaged over
        replicas, detached. Non-finite when the update was skipped.

    Raises
    ------
    NonFiniteStep
        ``on_nonfinite="stop"`` and the loss or gradient was not finite (the update was not
        applied), or ``"skip"`` and ``max_skips`` updates in a row were dropped.
    """
    use_trace = compiled and state.compiled is not None
    out = state.compiled(batch, getattr(state.objective, "kl_weight", 1.0)) if use_trace else loss_on(
        state.objective, state.model, state.guide, batch
    )
    loss, report = (out[0], out[1]) if isinstance(out, tuple) else (out, None)
    opt = state.optimizer
    clear_grads(state.params)
    loss.backward()
    report = loss.detach() if report is None else report.detach()
    if state.replicas.active:
        # one all-reduce of gradients and the loss: every replica takes the same decision
        loss = state.replicas.average(state.params, report)
        report = loss
    if bool(nonfinite_flag(state.params, report)):
        clear_grads(state.params)
        what = "loss" if not torch.isfinite(report) else "gradient"
        message = f"the {what} became non-finite (loss {float(report)}) at step {state.steps + state.skipped + 1}"
        if state.on_nonfinite == "stop":
            raise NonFiniteStep(message)
        skipped = dataclasses.replace(state, skipped=state.skipped + 1, consecutive_skips=state.consecutive_skips + 1)
        if skipped.consecutive_skips >= state.max_skips:
            raise NonFiniteStep(f"{message}; {skipped.consecutive_skips} updates in a row were skipped")
        return skipped, report
    if state.clip_norm is not None:
        nn.utils.clip_grad_norm_(state.params, state.clip_norm)
    adam_update(opt)
    return _advanced(state, state.steps + 1), report


def _advanced(state: TrainState, steps: int) -> TrainState:
    """``dataclasses.replace(state, steps=steps, consecutive_skips=0)`` in about a fifth of the time.

    ``TrainState`` is a frozen dataclass without ``__post_init__`` or slots, so a copy of its
    instance dictionary with two entries changed is the same object ``replace`` builds.
    """
    new = object.__new__(TrainState)
    d = new.__dict__
    d.update(state.__dict__)
    d["steps"], d["consecutive_skips"] = steps, 0
    return new
