r"""``fit``: validate, initialize, then for each minibatch step, record, maybe checkpoint."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import pyro
import torch

from bayesvae._checks import positive_int
from bayesvae.convention import DATA_PLATE
from bayesvae.data import resolve_device
from bayesvae.guides.meanfield import MeanFieldGuide
from bayesvae.infer.batches import minibatches, training_rows
from bayesvae.infer.convergence import EarlyStopping, check_convergence
from bayesvae.infer.distributed import Replicas
from bayesvae.infer.elbo import elbo_per_point
from bayesvae.infer.io import checkpoint_lock
from bayesvae.infer.params import ParamSet, owned_modules
from bayesvae.infer.result import DivergenceError, FitConfig, FitResult
from bayesvae.infer.run import Run, base_calls, check_checkpoint_path, package_built
from bayesvae.infer.schedules import describe_lr, lr_at
from bayesvae.infer.step import NonFiniteStep, init_state, step

__all__ = ["fit"]


def _dtype_of(*parts: Any) -> torch.dtype:
    for m in owned_modules(*parts):
        for p in m.parameters():
            if p.is_floating_point():
                return p.dtype
    return torch.float32


def _number(name: str, value: Any, *, positive: bool = True) -> float:
    """A finite (positive) real number; numpy scalars accepted."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v) or (positive and not v > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def _config(elbo, epochs, batch_size, lr, num_particles, dev, seed, clip_norm, adam_eps, gradient, kl_weight, on_nonfinite, dynamic_binarization, checkpoint_every) -> FitConfig:
    for name, value in (("epochs", epochs), ("num_particles", num_particles), ("checkpoint_every", checkpoint_every)):
        positive_int(name, value)
    if batch_size is not None:
        positive_int("batch_size", batch_size)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    base_lr = lr_at(lr, 0) if callable(lr) else _number("lr", lr)
    if clip_norm is not None:
        clip_norm = _number("clip_norm", clip_norm)
    describe_kl = None if kl_weight is None else (kl_weight.to_dict() if hasattr(kl_weight, "to_dict") else {"constant": float(kl_weight)} if not callable(kl_weight) else {"callable": getattr(kl_weight, "__qualname__", "schedule")})
    return FitConfig(
        elbo=elbo if isinstance(elbo, str) else type(elbo).__name__,
        epochs=int(epochs),
        batch_size=None if batch_size is None else int(batch_size),
        lr=base_lr,
        num_particles=int(num_particles),
        device=str(dev),
        seed=int(seed),
        clip_norm=clip_norm,
        adam_eps=_number("adam_eps", adam_eps),
        lr_schedule=describe_lr(lr),
        gradient=gradient,
        kl_weight=describe_kl,
        on_nonfinite=on_nonfinite,
        dynamic_binarization=bool(dynamic_binarization),
    )


def _kl_at(kl_weight: Any, epoch: int, step_: int) -> float:
    if kl_weight is None:
        return 1.0
    w = kl_weight(epoch, step_) if callable(kl_weight) else kl_weight
    return _number("kl_weight", w, positive=False)


def _progress(enabled: bool | None, start: int, epochs: int):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=epochs, initial=start, unit="epoch", desc="fit", leave=False)


def fit(
    model: Callable,
    guide: Callable,
    data: Any,
    *,
    elbo: str | Any = "trace",
    epochs: int = 10,
    batch_size: int | None = 128,
    lr: float | Callable[[int], float] = 1e-3,
    num_particles: int = 1,
    device: str = "cpu",
    seed: int = 0,
    validation: Any = None,
    groups: Any = None,
    validation_groups: Any = None,
    covariates: Any = None,
    validation_covariates: Any = None,
    clip_norm: float | None = None,
    adam_eps: float = 1e-8,
    gradient: str = "reparam",
    kl_weight: float | Callable[[int, int], float] | None = None,
    dynamic_binarization: bool = False,
    on_nonfinite: str = "stop",
    max_skips: int = 10,
    patience: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    resume: bool | str = False,
    overwrite: bool = False,
    callback: Callable[[dict[str, float]], None] | None = None,
    distributed: bool = False,
    distributed_timeout: float | None = 300.0,
    jit: bool | None = None,
    progress: bool | None = None,
) -> FitResult:
    r"""Fit a model and guide by stochastic variational inference; see :mod:`bayesvae.infer`.

    Maximizes :math:`\mathcal L(\theta, \phi) = \mathbb E_{q_\phi(z \mid x)}[\log
    p_\theta(x, z) - \log q_\phi(z \mid x)] \le \log p_\theta(x)` with minibatches whose data
    plate is scaled by ``N / B`` -- verified from the first step's traces, and supplied by the
    package for a model written with ``pyro.plate("data", x.shape[0])`` (:mod:`bayesvae.scaling`).
    The full parameter reference is in :data:`FIT_PARAMETERS`.

    Returns
    -------
    FitResult

    Raises
    ------
    ValueError
        Bad data or settings, scales that cannot be verified, an occupied checkpoint path.
    DivergenceError
        A non-finite loss, gradient or parameter; ``err.result`` holds the last verified-finite
        state and a checkpoint on disk is the last good one.
    """
    dev = resolve_device(device)
    config = _config(elbo, epochs, batch_size, lr, num_particles, dev, seed, clip_norm, adam_eps, gradient, kl_weight, on_nonfinite, dynamic_binarization, checkpoint_every)
    if resume not in (False, True, "new-lr"):
        raise ValueError(f"resume must be True, False or 'new-lr', got {resume!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=<path>")
    rows, vrows = training_rows(model, guide, data, validation, groups=groups, validation_groups=validation_groups, covariates=covariates, validation_covariates=validation_covariates, device=dev, dtype=_dtype_of(model, guide), dynamic_binarization=dynamic_binarization)
    if vrows is not None and isinstance(guide, MeanFieldGuide):
        raise ValueError("validation data cannot be scored with a MeanFieldGuide (it has no parameters for unseen points); use an amortized guide")
    if patience is not None and vrows is None:
        raise ValueError("patience= (early stopping) needs validation= data")
    ckpt = None if checkpoint is None else os.fspath(checkpoint)
    from pathlib import Path

    ckpt = None if ckpt is None else Path(ckpt)
    if ckpt is not None:
        check_checkpoint_path(ckpt, resume=bool(resume), overwrite=overwrite)
    for m in owned_modules(model, guide):
        m.to(dev)
    replicas = Replicas(distributed, dev, timeout=distributed_timeout)
    n, bsz = rows.num_data, rows.num_data if batch_size is None else min(batch_size, rows.num_data)
    if replicas.active and bsz < replicas.world:
        raise ValueError(f"batch_size={bsz} is smaller than the {replicas.world} distributed processes")
    replicas.broadcast([p for m in owned_modules(model, guide) for p in m.parameters()])
    hand_written = not (isinstance(model, torch.nn.Module) and isinstance(guide, torch.nn.Module))
    run = Run(model=model, guide=guide, rows=rows, config=config, replicas=replicas, param_set=ParamSet() if hand_written else None, checkpoint=ckpt)
    pyro.set_rng_seed(seed + replicas.rank)  # sampling noise differs between replicas; the order is shared
    run.order = torch.Generator().manual_seed(seed)
    if resume:
        run.resume(resume)
    from bayesvae.objectives import make_elbo

    objective = make_elbo(elbo, num_particles=num_particles, model=model, gradient=gradient)
    use_jit = (isinstance(elbo, str) and package_built(model) and package_built(guide)) or (hand_written and isinstance(elbo, str)) if jit is None else jit
    stopper = EarlyStopping(patience) if patience is not None else None
    best: dict[str, torch.Tensor] | None = None
    schedules = [sub.anneal for m in owned_modules(model, guide) for sub in m.modules() if callable(getattr(sub, "anneal", None))]
    bar = _progress(progress, len(run.history), epochs)
    lock = checkpoint_lock(ckpt if ckpt.suffix != ".safetensors" else ckpt.parent) if ckpt is not None and replicas.is_main else contextlib.nullcontext()
    with lock:
        for epoch in range(len(run.history), epochs):
            epoch_lr = lr_at(lr, epoch)
            t0 = run.epoch_loop_start()
            total, covered, skipped0 = torch.zeros((), device=dev), 0.0, run.state.skipped if run.state else 0
            with pyro.validation_enabled(False):
                for batch, share in minibatches(rows, bsz, run.order, replicas, dynamic_binarization=dynamic_binarization):
                    weight = _kl_at(kl_weight, epoch, (run.state.steps if run.state else 0))
                    if hasattr(objective, "kl_weight"):
                        objective.kl_weight = weight
                    if run.state is None:
                        init = dict(lr=epoch_lr, adam_eps=config.adam_eps, clip_norm=config.clip_norm, replicas=replicas, jit=bool(use_jit), check_jit=not (package_built(model) and package_built(guide)), param_set=run.param_set, on_nonfinite=on_nonfinite, max_skips=max_skips, optim_state=run.optim_state)
                        run.state = init_state(model, guide, objective, batch, **init)
                        plate = run.state.plan.plate
                        if isinstance(elbo, str) and plate is not None and plate != DATA_PLATE:  # a user's plate name
                            objective = make_elbo(elbo, num_particles=num_particles, model=model, gradient=gradient, data_plate=plate)
                            run.state = init_state(model, guide, objective, batch, plan=run.state.plan, **init)
                        run.config = _with_plan(run.config, run.state.plan)
                    for group in run.state.optimizer.param_groups:
                        group["lr"], group["eps"] = epoch_lr, config.adam_eps
                    try:
                        full = batch.size == bsz // replicas.world
                        run.state, loss = step(run.state, batch, compiled=full and weight == 1.0)
                    except NonFiniteStep as exc:
                        _diverge(run, f"{exc}; training stopped and the last finite parameters were kept (err.result). Try a smaller lr, clip_norm=, or check the data scale.")
                    if torch.isfinite(loss):  # share-weighted: a partition of the rows
                        total += loss * share
                        covered += share
            run.elapsed += time.perf_counter() - t0
            record: dict[str, float] = {"epoch": epoch + 1, "elbo": -float(total) / (covered * n) if covered else float("nan"), "lr": epoch_lr}
            if kl_weight is not None:
                record["kl_weight"] = weight
            if on_nonfinite == "skip":
                record["skipped"] = run.state.skipped - skipped0
            if vrows is not None and replicas.is_main:
                base_model, base_guide = base_calls(model, guide, run.param_set)
                record["val_elbo"] = elbo_per_point(objective, base_model, base_guide, vrows)
            record["seconds"] = run.elapsed
            run.history.append(record)
            for hook in schedules:  # schedules and the callback may change what the next epoch uses
                hook(dict(record))
            if callback is not None:
                callback(dict(record))
            if not run.verified():
                run.restore(run.good)
                _diverge(run, f"parameters or optimizer moments became non-finite at the end of epoch {epoch + 1} (after the schedules and the callback); the state of the epoch's start was kept (err.result)")
            if stopper is not None:
                improved, stop = stopper.update(epoch + 1, record["val_elbo"])
                best = run.snapshot() if improved else best
                if stop:
                    run.restore(best)
                    run.convergence.update(stopped_early=True, best_epoch=stopper.best_epoch)
                    break
            if ckpt is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
                run.write_checkpoint()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(elbo=f"{record['elbo']:.3f}")
    if bar is not None:
        bar.close()
    run.convergence.update(check_convergence([r["elbo"] for r in run.history]))
    _warn_unconverged(run)
    return run.result()


def _with_plan(config: FitConfig, plan: Any) -> FitConfig:
    import dataclasses

    return dataclasses.replace(config, data_plate=plan.plate, rescaled=plan.rescale)


def _diverge(run: Run, message: str) -> None:
    if not run.verified():
        run.restore(run.good)
    raise DivergenceError(message, run.result())


def _warn_unconverged(run: Run) -> None:
    import warnings

    c = run.convergence
    if c.get("converged") is False and not c.get("stopped_early"):
        warnings.warn(
            f"the ELBO was still rising at the end of the fit ({c['slope']:.3g} nats per point per epoch over the last {c['window']} epochs, {c['slope'] / c['se'] if c['se'] else float('inf'):.1f} standard errors); train longer or raise lr (FitResult.convergence)",
            RuntimeWarning,
            stacklevel=3,
        )
