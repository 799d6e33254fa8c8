r"""``fit``: validate, initialize, then for each minibatch step, record, maybe checkpoint."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch

from bayesvae._checks import positive_int
from bayesvae.convention import DATA_PLATE
from bayesvae.data import resolve_device
from bayesvae.guides.meanfield import MeanFieldGuide
from bayesvae.infer import graphs
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


def _checkpoint_path(checkpoint: Any, resume: Any, overwrite: bool) -> Path | None:
    if resume not in (False, True, "new-lr"):
        raise ValueError(f"resume must be True, False or 'new-lr', got {resume!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=<path>")
    if checkpoint is None:
        return None
    path = Path(os.fspath(checkpoint))
    check_checkpoint_path(path, resume=bool(resume), overwrite=overwrite)
    return path


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
    missing: str | None = None,
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
    cuda_graphs: bool = False,
    progress: bool | None = None,
) -> FitResult:
    r"""Fit a model and guide by stochastic variational inference.

    Maximizes the evidence lower bound

    .. math::

        \mathcal L(\theta, \phi) = \mathbb E_{q_\phi(z \mid x)}
            [\log p_\theta(x, z) - \log q_\phi(z \mid x)] \le \log p_\theta(x)

    with minibatches: inside the data plate, sites are scaled by ``N / B`` so each minibatch
    loss is an unbiased estimate of the full-data loss; global sites are not scaled [2]_. The
    scale of every site is *read from the first step's traces* and verified; a model written
    with an unscaled ``pyro.plate("data", x.shape[0])`` (Pyro's tutorial way) is scaled by the
    package, a ``subsample_size=`` plate is given the fit's rows, and anything else that is not
    an unbiased estimate is refused (:mod:`bayesvae.scaling`).

    Parameters
    ----------
    model, guide : callable
        Pyro model and guide, called as ``fn(x, *, index=..., num_data=..., **covariates)``
        (each receives only the keywords its signature names). The package's
        :class:`~bayesvae.models.VAE` and guides, or your own functions (methods of an
        ``nn.Module``, closures over networks registered with ``pyro.module``, functions
        with ``pyro.param`` sites: the fit owns those tensors and never reads Pyro's global
        param store, so a second fit in one session starts afresh).
    data : Tensor, ndarray, DataFrame, Dataset or Rows of shape (N, d)
        Training data, validated once (finite, numeric, in the likelihood's support).
    elbo : {"trace", "meanfield", "iwae"} or objective
        ``"trace"``: ``Trace_ELBO`` (Monte Carlo). ``"meanfield"``: ``TraceMeanField_ELBO``
        (analytic KL where torch registers one). ``"iwae"``: the importance-weighted bound per
        data point with ``num_particles`` samples each (global latents drawn once).
    epochs : int
        Passes over the data.
    batch_size : int or None
        Minibatch size; ``None`` uses all rows every step.
    lr : float or callable
        Adam's learning rate, or a schedule ``epoch -> lr`` (0-based epochs), e.g.
        :class:`~bayesvae.infer.StagedLR` (Burda et al.'s staged schedule).
    num_particles : int
        Samples per step of the ELBO estimate (vectorized for package models).
    device : {"cpu", "cuda", "cuda:k"}
        Where data, modules and parameters live.
    seed : int
        Seeds Pyro/torch sampling and the minibatch order. Same seed, same CPU result -- for
        the same initial weights: seed torch (``torch.manual_seed``) before building modules.
    validation : array-like, optional
        Held-out data; its ELBO per point (at kl weight 1) is recorded after every epoch.
    groups, validation_groups : array-like of int or str, optional
        Group labels per row, passed to the model as the covariate ``groups`` (multilevel
        priors). A string names a DataFrame column holding the labels (coded ``0..G-1`` in
        sorted order and dropped from the features).
    covariates, validation_covariates : mapping of str to array, optional
        Other per-row side information, passed to model and guide by name.
    clip_norm : float, optional
        Clip the gradient's global norm.
    adam_eps : float
        Adam's :math:`\epsilon` (Burda et al. use 1e-4).
    gradient : {"reparam", "stl", "dreg"}
        The gradient estimator (:func:`bayesvae.objectives.make_elbo`): reparameterization,
        sticking the landing (Roeder et al. 2017) or doubly reparameterized (Tucker et al.
        2019, ``elbo="iwae"``).
    kl_weight : float or callable, optional
        A weight :math:`\beta` on the local latent terms for the *gradient* (KL warm-up,
        e.g. :class:`bayesvae.objectives.LinearWarmup`; a callable ``(epoch, step) ->
        beta``). Every reported ELBO is at :math:`\beta = 1`; the history records the weight.
    dynamic_binarization : bool
        Re-draw every row of every minibatch as ``x ~ Bernoulli(intensity)`` (data in [0, 1]).
    missing : {"model", "error"} or None
        Missing cells (NaN, ``pd.NA``, ``None``): ``"model"`` masks their log-likelihood out
        per cell and passes the observed mask to model and guide as the covariate ``mask``;
        ``"error"`` refuses them. ``None``: ``"model"`` for a DataFrame with missing cells,
        ``"error"`` otherwise.
    on_nonfinite : {"stop", "skip"}
        A step whose loss or gradient is not finite is never applied. ``"stop"`` raises
        :class:`DivergenceError`; ``"skip"`` drops the update and goes on (NumPyro's
        ``stable_update``), stopping after ``max_skips`` in a row.
    max_skips : int
        See ``on_nonfinite``.
    patience : int, optional
        Early stopping: stop when the validation ELBO has not improved for this many
        epochs, and restore the best epoch's parameters (needs ``validation``).
    checkpoint : path, optional
        Save model, guide, optimizer and RNG state here every ``checkpoint_every`` epochs
        (atomically, with digests; the previous checkpoint is kept as a fallback). The
        directory is locked for the fit's duration.
    checkpoint_every : int
        Epochs between checkpoints.
    resume : bool or "new-lr"
        Continue from ``checkpoint`` (bit-identical on CPU to an uninterrupted fit). Every
        setting that changes the trajectory and the data's fingerprint must match;
        ``"new-lr"`` lets the learning-rate settings change and applies the new ones.
    overwrite : bool
        Replace an existing fit at ``checkpoint`` (otherwise refused).
    callback : callable, optional
        Called after each epoch with that epoch's record, before the checkpoint, on every
        process. Parts with an ``anneal(record)`` method are advanced the same way.
    distributed : bool
        Data-parallel over ``torch.distributed`` processes (``torchrun``): each process
        takes every P-th row of each minibatch and gradients are averaged in one all-reduce
        per step. Rank 0 writes checkpoints and scores validation data.
    distributed_timeout : float or None
        Seconds a collective waits for the other processes before failing with an error
        naming the unresponsive rank (default 300).
    jit : bool or None
        Trace each step's loss once per batch shape and replay it
        (:class:`~bayesvae.infer.jit.CompiledLoss`; same numbers for the same seed).
        ``None``: on for the package's components and, checked against one eager step and
        falling back to eager when they differ, for hand-written functions.
    cuda_graphs : bool
        On a CUDA device, capture each full-batch step -- traced loss, backward, on-device
        non-finite check, fused Adam -- as one CUDA graph and replay it
        (:mod:`bayesvae.infer.graphs`): no Python and one launch per step, which is what
        makes small batches fast on a GPU. The non-finite policy is then applied once an
        epoch (no update that is not finite is applied). Needs a traced loss, one process
        and kl weight 1; an error names what is missing. Off by default: the capture is
        tested on CPUs with a stand-in for the graph, and on a GPU only where one was lent.
    progress : bool or None
        A tqdm bar over epochs (``None``: when standard error is a terminal).

    Returns
    -------
    FitResult
        Model, guide, history, config, data description, own parameters and the
        convergence verdict (a ``RuntimeWarning`` says so when the ELBO was still rising).

    Raises
    ------
    ValueError
        Bad data or settings, scales that cannot be verified, an occupied or unusable
        checkpoint path, a resume whose settings or data differ.
    DivergenceError
        A non-finite loss, gradient or parameter; ``err.result`` holds the last verified-finite
        state and a checkpoint on disk is the last good one.

    References
    ----------
    .. [1] M. D. Hoffman, D. M. Blei, C. Wang and J. Paisley, "Stochastic Variational
       Inference", JMLR 14, 2013.
    .. [2] E. Bingham et al., "Pyro: Deep Universal Probabilistic Programming", JMLR 20, 2019,
       arXiv:1810.09538.
    """
    dev = resolve_device(device)
    captured = _graph_steps(cuda_graphs, dev, kl_weight)
    config = _config(elbo, epochs, batch_size, lr, num_particles, dev, seed, clip_norm, adam_eps, gradient, kl_weight, on_nonfinite, dynamic_binarization, checkpoint_every)
    ckpt = _checkpoint_path(checkpoint, resume, overwrite)
    rows, vrows = training_rows(model, guide, data, validation, groups=groups, validation_groups=validation_groups, covariates=covariates, validation_covariates=validation_covariates, device=dev, dtype=_dtype_of(model, guide), dynamic_binarization=dynamic_binarization, missing=missing)
    if vrows is not None and isinstance(guide, MeanFieldGuide):
        raise ValueError("validation data cannot be scored with a MeanFieldGuide (it has no parameters for unseen points); use an amortized guide")
    if patience is not None and vrows is None:
        raise ValueError("patience= (early stopping) needs validation= data")
    for m in owned_modules(model, guide):
        m.to(dev)
    replicas = Replicas(distributed, dev, timeout=distributed_timeout)
    bsz = rows.num_data if batch_size is None else min(batch_size, rows.num_data)
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
    full_size = bsz // replicas.world  # this process's rows of a full minibatch
    total = torch.zeros((), device=dev)  # one accumulator, in place: a captured step adds to it too
    with lock:
        for epoch in range(len(run.history), epochs):
            epoch_lr = lr_at(lr, epoch)
            if run.state is not None:
                _set_lr(run, epoch_lr)
            t0 = run.begin_epoch()
            total.zero_()
            covered, skipped0 = 0.0, run.state.skipped if run.state else 0
            with pyro.validation_enabled(False):
                for batch, share in minibatches(rows, bsz, run.order, replicas, dynamic_binarization=dynamic_binarization):
                    weight = 1.0 if kl_weight is None else _kl_at(kl_weight, epoch, run.state.steps if run.state else 0)
                    if kl_weight is not None and hasattr(objective, "kl_weight"):
                        objective.kl_weight = weight
                    if run.state is None:
                        objective = _start(run, objective, batch, elbo=elbo, num_particles=num_particles, gradient=gradient, lr=epoch_lr, jit=bool(use_jit), on_nonfinite=on_nonfinite, max_skips=max_skips)
                        _set_lr(run, epoch_lr)
                        if captured is not None:
                            captured.check(run.state)
                    full = batch.x.shape[0] == full_size
                    if captured is not None and (loss := captured.take(run.state, batch, share, full)) is not None:
                        total.add_(loss, alpha=share)  # 0 where the update was skipped; counted at the drain
                        covered += share
                        continue
                    skipped = run.state.skipped
                    try:
                        with captured.warmup() if captured is not None else contextlib.nullcontext():
                            run.state, loss = step(run.state, batch, compiled=full and weight == 1.0)
                    except NonFiniteStep as exc:
                        _diverge(run, f"{exc}; training stopped and the last finite parameters were kept (err.result). Try a smaller lr, clip_norm=, or check the data scale.")
                    if run.state.skipped == skipped:  # share-weighted: a partition of the rows
                        total.add_(loss, alpha=share)
                        covered += share
                        if captured is not None:
                            captured.stepped(full)
            covered -= _drain(run, captured, epoch)
            run.elapsed += time.perf_counter() - t0
            record = _record(run, epoch, total, covered, epoch_lr, weight if kl_weight is not None else None, skipped0 if on_nonfinite == "skip" else None)
            if vrows is not None and replicas.is_main:
                record["val_elbo"] = elbo_per_point(objective, *base_calls(model, guide, run.param_set), vrows)
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


def _start(run: Run, objective: Any, batch: Any, *, elbo, num_particles, gradient, lr, jit, on_nonfinite, max_skips) -> Any:
    """The first step's state: verify scales, create parameters, build the optimizer."""
    import dataclasses

    from bayesvae.objectives import make_elbo

    model, guide = run.model, run.guide
    init = dict(lr=lr, adam_eps=run.config.adam_eps, clip_norm=run.config.clip_norm, replicas=run.replicas, jit=jit, check_jit=not (package_built(model) and package_built(guide)), param_set=run.param_set, on_nonfinite=on_nonfinite, max_skips=max_skips, optim_state=run.optim_state)
    run.state = init_state(model, guide, objective, batch, **init)
    plate = run.state.plan.plate
    if isinstance(elbo, str) and plate is not None and plate != DATA_PLATE:  # a user's plate name
        objective = make_elbo(elbo, num_particles=num_particles, model=model, gradient=gradient, data_plate=plate)
        run.state = init_state(model, guide, objective, batch, plan=run.state.plan, **init)
    fused = bool(run.state.optimizer.param_groups[0].get("fused"))
    run.config = dataclasses.replace(run.config, data_plate=plate, rescaled=run.state.plan.rescale, optimizer="adam-fused" if fused else "adam")
    return objective


def _graph_steps(cuda_graphs: Any, dev: torch.device, kl_weight: Any) -> graphs.GraphSteps | None:
    if cuda_graphs not in (True, False):
        raise ValueError(f"cuda_graphs must be True or False, got {cuda_graphs!r}")
    if cuda_graphs and dev.type not in graphs.GRAPH_DEVICE_TYPES:
        raise ValueError(f"cuda_graphs=True needs a CUDA device; this fit runs on {dev}")
    if cuda_graphs and kl_weight is not None:
        raise ValueError("cuda_graphs=True captures steps at kl weight 1; a kl_weight= schedule changes every step's loss")
    return graphs.GraphSteps(dev) if cuda_graphs else None


def _drain(run: Run, captured: graphs.GraphSteps | None, epoch: int) -> float:
    """Apply the epoch's captured steps to the state's counters and the non-finite policy.

    Returns the share of the rows whose step was skipped (taken out of the epoch's ELBO).
    """
    import dataclasses

    drained = captured.drain() if captured is not None else None
    if drained is None:
        return 0.0
    (counts, share), state = drained, run.state
    if counts.replays and not run.config.cuda_graphs:
        run.config = dataclasses.replace(run.config, cuda_graphs=True)
    run.state = dataclasses.replace(
        state,
        steps=state.steps + counts.replays - counts.skipped,
        skipped=state.skipped + counts.skipped,
        consecutive_skips=counts.consecutive_at_end,
    )
    if counts.skipped:
        message = f"{counts.skipped} of the {counts.replays} captured steps of epoch {epoch + 1} had a non-finite loss or gradient; their updates were not applied"
        if state.on_nonfinite == "stop":
            _diverge(run, f"{message}; training stopped with the parameters of the finite updates (err.result). Try a smaller lr, clip_norm=, or check the data scale.")
        if counts.max_consecutive >= state.max_skips:
            _diverge(run, f"{message}; {counts.max_consecutive} updates in a row were skipped (max_skips={state.max_skips})")
    return share * counts.skipped


def _set_lr(run: Run, lr: float) -> None:
    for group in run.state.optimizer.param_groups:
        group["lr"], group["eps"] = lr, run.config.adam_eps


def _record(run: Run, epoch: int, total: torch.Tensor, covered: float, lr: float, weight: float | None, skipped0: int | None) -> dict[str, float]:
    record: dict[str, float] = {"epoch": epoch + 1, "elbo": -float(total) / (covered * run.rows.num_data) if covered else float("nan"), "lr": lr}
    if weight is not None:
        record["kl_weight"] = weight
    if skipped0 is not None:
        record["skipped"] = run.state.skipped - skipped0
    return record


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
