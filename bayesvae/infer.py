r"""Fitting: stochastic variational inference with Pyro ELBOs and one torch optimizer.

A training step is

.. code-block:: python

    loss = objective.differentiable_loss(model, guide, x_batch, index=rows, num_data=N)
    loss.backward(); optimizer.step()

with a single ``torch.optim.Adam`` over every parameter the model and guide hold (and any
``pyro.param`` a user's own model/guide creates, captured on the first step). The first
step runs with Pyro's validation on (so a bad model fails loudly once); the remaining steps
run with it off, because the data were validated once at the boundary (see
``shared/PERFORMANCE.md``: validation alone is a third of Pyro's per-step overhead).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyro
import torch
from pyro import poutine
from pyro.distributions import constraints
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from bayesvae import _registry
from bayesvae._checks import positive_int
from bayesvae._distributed import Replicas
from bayesvae._jit import CompiledLoss
from bayesvae.data import DataInfo, as_groups, as_tensor, resolve_device
from bayesvae.guides.meanfield import MeanFieldGuide
from bayesvae.models.vae import VAE
from bayesvae.objectives import IWAE_ELBO, Trace_ELBO, TraceMeanField_ELBO

__all__ = [
    "fit",
    "FitConfig",
    "FitResult",
    "DivergenceError",
    "load",
    "evaluate_elbo",
    "ELBOS",
    "make_elbo",
]

logger = logging.getLogger(__name__)

#: Objectives by name: ``"trace"`` is Monte Carlo throughout; ``"meanfield"`` uses the
#: analytic KL(q || p) at every site where one is registered (Monte Carlo elsewhere).
#: ``"iwae"``: the importance-weighted bound with ``num_particles`` samples per point.
ELBOS: dict[str, type] = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO, "iwae": IWAE_ELBO}

FORMAT = "bayesvae-fit"
FORMAT_VERSION = 1
FIT_FILE = "fit.safetensors"


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite; ``.result`` holds the last finite state."""

    def __init__(self, message: str, result: FitResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class FitConfig:
    """Settings of one fit; round-trips through JSON (:meth:`to_dict` / :meth:`from_dict`)."""

    elbo: str = "trace"
    epochs: int = 10
    batch_size: int | None = 128
    lr: float = 1e-3
    num_particles: int = 1
    device: str = "cpu"
    seed: int = 0
    clip_norm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class FitResult:
    """The outcome of :func:`fit`.

    Attributes
    ----------
    model, guide : callable
        The trained model and guide (modules or the user's Pyro functions).
    history : pandas.DataFrame
        One row per epoch: ``epoch``, ``elbo`` (training ELBO per data point, the average of
        the minibatch estimates during the epoch), ``val_elbo`` (per point, at the epoch's
        end, when validation data were given), ``seconds`` (cumulative training time).
    config : FitConfig
        The settings used.
    data : DataInfo
        Size, width, column names and image shape of the training data.
    params : dict of str to Tensor
        ``pyro.param`` values created by user-written model/guide functions (constrained).
    """

    model: Any
    guide: Any
    history: pd.DataFrame
    config: FitConfig
    data: DataInfo
    params: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def elapsed(self) -> float:
        """Training time in seconds."""
        return float(self.history["seconds"].iloc[-1]) if len(self.history) else 0.0

    @property
    def num_parameters(self) -> int:
        """Number of scalar parameters in model and guide."""
        seen: dict[int, torch.Tensor] = {}
        for part in (self.model, self.guide):
            if isinstance(part, nn.Module):
                seen.update({id(p): p for p in part.parameters()})
        seen.update({id(p): p for p in self.params.values()})
        return sum(p.numel() for p in seen.values())

    def save(self, path: str | os.PathLike) -> Path:
        """Save to ``path`` (a directory, or a ``.safetensors`` file).

        A directory receives ``fit.safetensors`` (weights, with config and history as JSON
        metadata), ``config.json`` (a readable copy) and ``history.csv``. Files are written
        to a temporary name and moved into place, so an existing save is never left
        half-overwritten. Loading never unpickles anything (:func:`load`).
        """
        return _write(self, Path(path), optimizer=None, rng=None)


# ---------------------------------------------------------------------------------------------
# Calling convention


def _accepted(fn: Callable) -> set[str] | None:
    """Keyword names ``fn`` accepts; ``None`` if it takes ``**kwargs``."""
    target = fn.forward if isinstance(fn, nn.Module) else fn
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {name for name in sig.parameters}


class _Call:
    """Call a model/guide with the keyword arguments of the calling convention it accepts."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self.accepts = _accepted(fn)

    def takes(self, name: str) -> bool:
        return self.accepts is None or name in self.accepts

    def __call__(self, x, **kwargs):
        if self.accepts is not None:
            kwargs = {k: v for k, v in kwargs.items() if k in self.accepts}
        return self.fn(x, **kwargs)


def make_elbo(elbo: str | Any, *, num_particles: int = 1, model: Any = None) -> Any:
    """Build the objective named ``elbo`` (or pass through an ELBO object)."""
    if not isinstance(elbo, str):
        if not hasattr(elbo, "differentiable_loss"):
            raise TypeError(
                f"elbo must be one of {sorted(ELBOS)} or an object with differentiable_loss(model, guide, ...), got {type(elbo).__name__}"
            )
        return elbo
    if elbo not in ELBOS:
        raise ValueError(f"unknown elbo {elbo!r}; choose one of {sorted(ELBOS)}")
    positive_int("num_particles", num_particles)
    if elbo == "iwae":
        return IWAE_ELBO(num_particles)
    kw: dict[str, Any] = {"num_particles": num_particles}
    if isinstance(model, VAE):
        # The package's models nest exactly one plate, so particles can be vectorized.
        kw.update(max_plate_nesting=1, vectorize_particles=num_particles > 1)
    return ELBOS[elbo](**kw)


def _modules(*parts: Any) -> list[nn.Module]:
    return [p for p in parts if isinstance(p, nn.Module)]


def _dtype_of(*parts: Any) -> torch.dtype:
    """The floating dtype of the first module parameter (float32 when there is none)."""
    for m in _modules(*parts):
        for p in m.parameters():
            if p.is_floating_point():
                return p.dtype
    return torch.float32


def _state(model, guide) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for prefix, part in (("model.", model), ("guide.", guide)):
        if isinstance(part, nn.Module):
            out.update({prefix + k: v for k, v in part.state_dict().items()})
    return out


def _snapshot(model, guide) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in _state(model, guide).items()}


def _restore(model, guide, state: dict[str, torch.Tensor]) -> None:
    for prefix, part in (("model.", model), ("guide.", guide)):
        if isinstance(part, nn.Module):
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            try:
                part.load_state_dict(sub, strict=True)
            except RuntimeError as exc:
                raise ValueError(f"saved weights do not fit the {prefix[:-1]}: {exc}") from exc


def _check_data(model, x: torch.Tensor, info: DataInfo, name: str) -> None:
    width = getattr(model, "data_dim", None)
    if width is not None and width != info.data_dim:
        raise ValueError(
            f"{name} has {info.data_dim} columns but the model expects data_dim={width}; build the model for {info.data_dim} features or pass matching data"
        )
    likelihood = getattr(model, "likelihood", None)
    if likelihood is not None and hasattr(likelihood, "validate"):
        likelihood.validate(x, info.columns)


# ---------------------------------------------------------------------------------------------
# fit


def fit(
    model: Callable,
    guide: Callable,
    data: Any,
    *,
    elbo: str | Any = "trace",
    epochs: int = 10,
    batch_size: int | None = 128,
    lr: float = 1e-3,
    num_particles: int = 1,
    device: str = "cpu",
    seed: int = 0,
    validation: Any = None,
    groups: Any = None,
    validation_groups: Any = None,
    clip_norm: float | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    callback: Callable[[dict[str, float]], None] | None = None,
    distributed: bool = False,
    jit: bool | None = None,
) -> FitResult:
    r"""Fit a model and guide by stochastic variational inference.

    Maximizes the evidence lower bound

    .. math::

        \mathcal L(\theta, \phi) = \mathbb E_{q_\phi(z \mid x)}
            [\log p_\theta(x, z) - \log q_\phi(z \mid x)] \le \log p_\theta(x)

    with minibatches: inside the data plate, sites are scaled by ``N / batch`` so each
    minibatch loss is an unbiased estimate of the full-data loss; global sites are not
    scaled [2]_.

    Parameters
    ----------
    model, guide : callable
        Pyro model and guide, called as ``fn(x, *, index=..., num_data=..., groups=...)``
        (each receives only the keywords its signature names). The package's
        :class:`~bayesvae.models.VAE` and guides follow it; a hand-written function that does
        not accept ``num_data`` can only be fitted with ``batch_size=None`` (full batch).
    data : Tensor, ndarray, DataFrame or Dataset of shape (N, d)
        Training data, validated once (finite, numeric, in the likelihood's support).
    elbo : {"trace", "meanfield", "iwae"} or ELBO object
        ``"trace"``: ``Trace_ELBO`` (Monte Carlo). ``"meanfield"``: ``TraceMeanField_ELBO``
        (analytic KL where torch registers one; valid only for fully factorized guides).
        ``"iwae"``: :class:`~bayesvae.objectives.IWAE_ELBO`, the importance-weighted bound
        per data point with ``num_particles`` samples each (global latents drawn once).
    epochs : int
        Passes over the data.
    batch_size : int or None
        Minibatch size; ``None`` uses all rows every step.
    lr : float
        Adam learning rate.
    num_particles : int
        Samples per step of the ELBO estimate (vectorized for package models).
    device : {"cpu", "cuda", "cuda:k"}
        Where data, modules and parameters live.
    seed : int
        Seeds Pyro/torch sampling and the minibatch order. Same seed, same CPU result.
    validation : array-like, optional
        Held-out data; its ELBO per point is recorded after every epoch.
    groups, validation_groups : array-like of int or str, optional
        Group labels ``0..G-1`` per row, passed to the model (multilevel priors). A string
        names a column of a DataFrame ``data`` holding the labels (any values; coded
        ``0..G-1`` in sorted order and dropped from the features); the validation
        DataFrame's column of that name is coded the same way.
    clip_norm : float, optional
        Clip the gradient's global norm.
    checkpoint : path, optional
        Save model, guide, optimizer and RNG state here every ``checkpoint_every`` epochs
        (atomically: an interrupted write leaves the previous checkpoint intact).
    resume : bool
        Continue from ``checkpoint`` when it exists (bit-identical on CPU to an uninterrupted
        fit with the same arguments).
    callback : callable, optional
        Called after each epoch with that epoch's history record, before the checkpoint
        is written, on every process when distributed (so it may update state the next
        epoch uses). Parts of the model or guide with an ``anneal(record)`` method (the
        IBP prior's temperature schedule) are advanced the same way automatically.
    jit : bool or None
        Trace each training step's loss with ``torch.jit.trace`` once per batch shape and
        replay it (:class:`~bayesvae._jit.CompiledLoss`): removes Pyro's per-step Python
        overhead (about half a millisecond a step on CPU; see ``benchmarks/``) with the same
        numbers for the same seed. ``None`` (default): on exactly when every part of model
        and guide is one of the package's components (their tracing is tested) and the
        objective is one of :data:`ELBOS`; ``False`` for models with data-dependent Python
        control flow in your own modules. Not for hand-written functions that create
        ``pyro.param`` sites.
    distributed : bool
        Data-parallel over ``torch.distributed`` processes (launch the script with
        ``torchrun --nproc_per_node=P``; the process group is initialized from torchrun's
        environment when needed). Each process takes every P-th row of each minibatch and
        the gradients are averaged by one all-reduce per step, so the update equals the
        single-process update of the whole minibatch in expectation (exactly, for a
        deterministic loss). Rank 0 writes checkpoints and scores validation data. Set ``torch.set_num_threads`` so that P processes do not oversubscribe
        the cores.

    Returns
    -------
    FitResult

    Raises
    ------
    ValueError
        Bad data (NaN/inf, outside the likelihood's support, wrong width), unknown
        ``elbo`` or ``device``, bad settings.
    DivergenceError
        The loss became non-finite; training stops, ``err.result`` holds the last finite
        parameters, and a checkpoint on disk is the last good one.

    References
    ----------
    .. [1] M. D. Hoffman, D. M. Blei, C. Wang and J. Paisley, "Stochastic Variational
       Inference", JMLR 14, 2013.
    .. [2] E. Bingham et al., "Pyro: Deep Universal Probabilistic Programming", JMLR 20, 2019,
       arXiv:1810.09538.
    """
    for name, value in (("epochs", epochs), ("num_particles", num_particles), ("checkpoint_every", checkpoint_every)):
        positive_int(name, value)
    if batch_size is not None:
        positive_int("batch_size", batch_size)
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"clip_norm must be positive, got {clip_norm!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=<path>")
    objective = make_elbo(elbo, num_particles=num_particles, model=model)
    if isinstance(groups, str):  # a DataFrame column of group labels
        column = groups
        data, groups, categories = _group_column(data, column, None, "data")
        if validation is not None and validation_groups is None:
            validation, validation_groups, _ = _group_column(validation, column, categories, "validation data")
    dev = resolve_device(device)
    dtype = _dtype_of(model, guide)
    x, info = as_tensor(data, device=dev, dtype=dtype)
    _check_data(model, x, info, "data")
    n = info.num_data
    g = None if groups is None else as_groups(groups, n, device=dev)
    if validation is not None:
        if isinstance(guide, MeanFieldGuide):
            raise ValueError(
                "validation data cannot be scored with a MeanFieldGuide (it has no parameters for unseen points); use an amortized guide"
            )
        xv, vinfo = as_tensor(validation, device=dev, dtype=dtype, name="validation data")
        _check_data(model, xv, vinfo, "validation data")
        gv = None if validation_groups is None else as_groups(validation_groups, vinfo.num_data, device=dev)
    bsz = n if batch_size is None else min(batch_size, n)
    model_fn, guide_fn = _Call(model), _Call(guide)
    if bsz < n and not (model_fn.takes("num_data") and guide_fn.takes("num_data")):
        raise ValueError(
            "minibatching needs model and guide functions that accept num_data= (and index=) to scale the data plate; add them or use batch_size=None"
        )
    config = FitConfig(
        elbo=elbo if isinstance(elbo, str) else type(elbo).__name__,
        epochs=epochs,
        batch_size=batch_size,
        lr=float(lr),
        num_particles=num_particles,
        device=str(dev),
        seed=seed,
        clip_norm=clip_norm,
    )
    for m in _modules(model, guide):
        m.to(dev)
    replicas = Replicas(distributed, dev)
    if replicas.active and bsz < replicas.world:
        raise ValueError(f"batch_size={bsz} is smaller than the {replicas.world} distributed processes")
    replicas.broadcast([p for m in _modules(model, guide) for p in m.parameters()])
    # Sampling noise differs between replicas; the minibatch order is shared.
    pyro.set_rng_seed(seed + replicas.rank)
    order = torch.Generator().manual_seed(seed)

    def loss_on(xb, idx, gb, num):
        kw: dict[str, Any] = {"index": idx, "num_data": num}
        if gb is not None:
            kw["groups"] = gb
        return objective.differentiable_loss(model_fn, guide_fn, xb, **kw)

    compiled = None
    if jit is None:
        jit = isinstance(elbo, str) and _package_built(model) and _package_built(guide)
    if jit:
        if not (isinstance(model, nn.Module) and isinstance(guide, nn.Module)):
            raise ValueError("jit=True needs model and guide modules (the package's VAE and guides); hand-written functions run eagerly")
        compiled = CompiledLoss(loss_on, _modules(model, guide))

    start_epoch, history, optim_state = 0, [], None
    ckpt = Path(checkpoint) if checkpoint is not None else None
    user_params: dict[str, torch.Tensor] = {}
    if resume and ckpt is not None and _fit_file(ckpt).exists():
        saved = _read(ckpt)
        old = saved["meta"]["config"]
        for key in ("elbo", "batch_size", "num_particles", "seed"):
            if old.get(key) != getattr(config, key):
                raise ValueError(
                    f"cannot resume: checkpoint was made with {key}={old.get(key)!r} but this fit has {key}={getattr(config, key)!r}"
                )
        _restore(model, guide, saved["state"])
        _load_params(saved["params"], saved["meta"].get("param_constraints", {}))
        user_params = {name: pyro.get_param_store()[name] for name in saved["params"]}
        history = saved["meta"]["history"]
        start_epoch = len(history)
        optim_state = saved["optimizer"]
        if saved["rng"]["torch"] is not None:
            torch.set_rng_state(saved["rng"]["torch"])
            order.set_state(saved["rng"]["order"])
            if dev.type == "cuda" and saved["rng"]["cuda"] is not None:
                torch.cuda.set_rng_state(saved["rng"]["cuda"], dev)
        if replicas.active:  # the checkpoint holds rank 0's stream: give each replica its own
            pyro.set_rng_seed(seed + replicas.rank + 1_000_003 * start_epoch)
    elapsed = float(history[-1]["seconds"]) if history else 0.0
    optimizer: torch.optim.Optimizer | None = None
    param_list: list[torch.Tensor] = []
    schedules = [
        sub.anneal for m in _modules(model, guide) for sub in m.modules() if callable(getattr(sub, "anneal", None))
    ]

    def result() -> FitResult:
        return FitResult(
            model=model,
            guide=guide,
            history=_history_frame(history),
            config=config,
            data=info,
            params=_user_param_values(user_params),
        )

    for epoch in range(start_epoch, epochs):
        good = _snapshot(model, guide)
        t0 = time.perf_counter()
        total = torch.zeros((), device=dev)
        perm = torch.randperm(n, generator=order).to(dev)
        steps = 0
        with pyro.validation_enabled(False):
            for start in range(0, n, bsz):
                idx = replicas.shard(perm[start : start + bsz])
                if optimizer is None:
                    # The first step runs with validation on (a malformed model fails loudly
                    # once) and captures every parameter: module parameters plus the
                    # pyro.param sites of hand-written functions.
                    traced = compiled is not None and idx.shape[0] == bsz // replicas.world
                    # with a traced step, the validated pass only checks and captures; it
                    # leaves the RNG stream alone, and the step itself runs traced below
                    # (so every step of every fit, resumed or not, is the same arithmetic)
                    rng = torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []) if traced else contextlib.nullcontext()
                    with rng, pyro.validation_enabled(True), poutine.trace(param_only=True) as tr:
                        loss = loss_on(x[idx], idx, None if g is None else g[idx], n)
                    if not torch.isfinite(loss):
                        raise ValueError(
                            f"the loss is {float(loss.detach())} at the initial parameters; check the model, the guide and the data scale"
                        )
                    user_params.update(
                        {name: site["value"].unconstrained() for name, site in tr.trace.nodes.items() if site["type"] == "param"}
                    )
                    if compiled is not None and user_params:
                        raise ValueError(
                            f"jit=True cannot trace pyro.param sites of hand-written functions ({sorted(user_params)}); use jit=False"
                        )
                    param_list = _trainable(model, guide, user_params)
                    replicas.broadcast(list(user_params.values()))
                    optimizer = torch.optim.Adam(param_list, lr=lr)
                    if optim_state is not None:
                        optimizer.load_state_dict(optim_state)
                    if traced:
                        loss = compiled(x[idx], idx, None if g is None else g[idx], n)
                elif compiled is not None and idx.shape[0] == bsz // replicas.world:
                    loss = compiled(x[idx], idx, None if g is None else g[idx], n)
                else:
                    loss = loss_on(x[idx], idx, None if g is None else g[idx], n)
                if replicas.active:
                    # backward first, then one all-reduce of gradients and loss: every
                    # replica sees the same mean loss and takes the same decision
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    loss = replicas.average(param_list, loss)
                if not torch.isfinite(loss):
                    _recover(model, guide, param_list, good)
                    raise DivergenceError(
                        f"the ELBO became non-finite ({float(loss.detach())}) at epoch {epoch + 1}, step {steps + 1}; training stopped and the last finite parameters were kept (err.result). Try a smaller lr, clip_norm=, or check the data scale.",
                        result(),
                    )
                if not replicas.active:
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                if clip_norm is not None:
                    nn.utils.clip_grad_norm_(param_list, clip_norm)
                optimizer.step()
                total += loss.detach()
                steps += 1
        elapsed += time.perf_counter() - t0
        record: dict[str, float] = {"epoch": epoch + 1, "elbo": -float(total) / (steps * n)}
        if validation is not None and replicas.is_main:
            record["val_elbo"] = _elbo_per_point(objective, model_fn, guide_fn, xv, gv)
        record["seconds"] = elapsed
        history.append(record)
        # Schedules and the callback may update state that the next epoch uses (e.g. an
        # annealed temperature): run them on every replica, before the checkpoint.
        for hook in schedules:
            hook(dict(record))
        if callback is not None:
            callback(dict(record))
        if replicas.is_main and ckpt is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
            rng = {"torch": torch.get_rng_state(), "order": order.get_state()}
            if dev.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state(dev)
            _write(result(), ckpt, optimizer=optimizer, rng=rng)
    return result()


def _group_column(data: Any, column: str, categories: Any, name: str) -> tuple[Any, Any, Any]:
    """Split a DataFrame into (features, group codes 0..G-1, the label of each code)."""
    from bayesvae.models.hierarchical.groups import group_codes

    if not isinstance(data, pd.DataFrame):
        raise ValueError(f"groups={column!r} names a column, but the {name} is a {type(data).__name__}, not a pandas DataFrame")
    if column not in data.columns:
        raise ValueError(f"groups={column!r}: the {name} has no such column; columns are {[str(c) for c in data.columns]}")
    labels, features = data[column], data.drop(columns=[column])
    if categories is None:
        codes, categories = group_codes(labels)
        return features, codes, categories
    codes = categories.get_indexer(labels)
    if (codes < 0).any():
        unseen = sorted({str(v) for v in labels[codes < 0]})
        raise ValueError(f"the {name} has group labels that the training data do not: {unseen[:10]}")
    return features, codes, categories


def _package_built(part: Any) -> bool:
    """Whether ``part`` and all its submodules are the package's own components."""
    if not isinstance(part, nn.Module):
        return False
    return all(type(m).__module__.split(".")[0] in ("bayesvae", "torch", "pyro") for m in part.modules())


def _trainable(model, guide, user_params: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Every trainable tensor of model, guide and hand-written pyro.params, once each."""
    params: dict[int, torch.Tensor] = {}
    for m in _modules(model, guide):
        params.update({id(p): p for p in m.parameters() if p.requires_grad})
    params.update({id(p): p for p in user_params.values() if p.requires_grad})
    if not params:
        raise ValueError("model and guide have no trainable parameters")
    return list(params.values())


def _recover(model, guide, params: Sequence[torch.Tensor], good: dict[str, torch.Tensor]) -> None:
    """Keep the current parameters if finite; else restore the epoch's starting state."""
    if not all(bool(torch.isfinite(p).all()) for p in params):
        _restore(model, guide, good)


def _history_frame(history: list[dict[str, float]]) -> pd.DataFrame:
    cols = ["epoch", "elbo", "val_elbo", "seconds"]
    frame = pd.DataFrame(history)
    return frame[[c for c in cols if c in frame.columns]] if len(frame) else pd.DataFrame(columns=cols)


def _user_param_values(user_params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    store = pyro.get_param_store()
    return {name: store[name].detach() for name in user_params if name in store}


@torch.no_grad()
def _elbo_per_point(objective, model_fn, guide_fn, x, groups, batch_size: int = 2048) -> float:
    n = x.shape[0]
    total = 0.0
    with pyro.validation_enabled(False):
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(start + batch_size, n), device=x.device)
            kw: dict[str, Any] = {"index": idx, "num_data": n}
            if groups is not None:
                kw["groups"] = groups[idx]
            # each batch estimates the full-data loss (scaled by n/batch): weight it by its share
            total += float(objective.differentiable_loss(model_fn, guide_fn, x[idx], **kw)) * len(idx) / n
    return -total / n


def evaluate_elbo(
    model: Callable,
    guide: Callable,
    data: Any,
    *,
    elbo: str = "trace",
    num_particles: int = 1,
    seed: int = 0,
    groups: Any = None,
    device: str | None = None,
) -> float:
    r"""The ELBO per data point, :math:`\frac1N \sum_n \mathbb E_q[\log p(x_n, z_n) - \log q(z_n \mid x_n)]`.

    Estimated with ``num_particles`` samples per point under a fixed ``seed``
    (so the same parameters give the same number).
    """
    objective = make_elbo(elbo, num_particles=num_particles, model=model)
    if device is None:
        ref = next((p for m in _modules(model, guide) for p in m.parameters()), None)
        dev = ref.device if ref is not None else torch.device("cpu")
    else:
        dev = resolve_device(device)
    x, info = as_tensor(data, device=dev, dtype=_dtype_of(model, guide))
    _check_data(model, x, info, "data")
    g = None if groups is None else as_groups(groups, info.num_data, device=dev)
    pyro.set_rng_seed(seed)
    return _elbo_per_point(objective, _Call(model), _Call(guide), x, g)


# ---------------------------------------------------------------------------------------------
# Persistence: one safetensors file, JSON metadata, no pickles

_CONSTRAINTS = {
    "real": constraints.real,
    "positive": constraints.positive,
    "unit_interval": constraints.unit_interval,
    "simplex": constraints.simplex,
    "lower_cholesky": constraints.lower_cholesky,
    "positive_definite": constraints.positive_definite,
}


def _constraint_name(c: Any) -> str:
    for name, known in _CONSTRAINTS.items():
        if c is known or type(c) is type(known):
            return name
    return "real"


def _fit_file(path: Path) -> Path:
    return path if path.suffix == ".safetensors" else path / FIT_FILE


def _write(result: FitResult, path: Path, *, optimizer, rng) -> Path:
    tensors = {k: v.detach().cpu().contiguous() for k, v in _state(result.model, result.guide).items()}
    store = pyro.get_param_store()
    constraints_used = {}
    for name, value in result.params.items():
        tensors["param." + name] = value.detach().cpu().contiguous()
        constraints_used[name] = _constraint_name(store._constraints.get(name, constraints.real)) if name in store else "real"
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": result.config.to_dict(),
        "model": _config_of(result.model),
        "guide": _config_of(result.guide),
        "data": dataclasses.asdict(result.data),
        "history": result.history.to_dict(orient="records"),
        "param_constraints": constraints_used,
        "package_versions": _versions(),
    }
    if optimizer is not None:
        opt = optimizer.state_dict()
        for pid, st in opt["state"].items():
            for key, value in st.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
        meta["optimizer_groups"] = opt["param_groups"]
        meta["optimizer_state_keys"] = {str(pid): sorted(st) for pid, st in opt["state"].items()}
        tensors.update({f"rng.{k}": v for k, v in rng.items()})
    file = _fit_file(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(meta, default=_json_default)
    _atomic(file, lambda tmp: save_file(tensors, tmp, metadata={"bayesvae": text}))
    if file.name == FIT_FILE:
        readable = json.dumps({k: meta[k] for k in ("config", "model", "guide", "data", "package_versions")}, indent=2, default=_json_default)
        _atomic(path / "config.json", lambda tmp: Path(tmp).write_text(readable))
        _atomic(path / "history.csv", lambda tmp: result.history.to_csv(tmp, index=False))
    return path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _atomic(target: Path, write: Callable[[str], Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; a saved fit is a normal file
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__} to JSON")


def _config_of(part: Any) -> dict[str, Any] | None:
    """The part's config, or None when it cannot be rebuilt from one (then load needs it passed)."""
    to_config = getattr(part, "to_config", None)
    if to_config is None:
        return None
    try:
        return to_config()
    except TypeError:
        return None


def _versions() -> dict[str, str]:
    from bayesvae import __version__

    return {"bayesvae": __version__, "torch": torch.__version__, "pyro": pyro.__version__}


def _read(path: Path) -> dict[str, Any]:
    file = _fit_file(Path(path))
    if not file.exists():
        raise FileNotFoundError(f"no saved fit at {file}")
    try:
        tensors = load_file(str(file))
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as handle:
            header = handle.metadata() or {}
        meta = json.loads(header["bayesvae"])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"{file} is not a readable bayesvae fit (corrupted or another format): {exc}") from exc
    if meta.get("format") != FORMAT:
        raise ValueError(f"{file} is not a bayesvae fit (format {meta.get('format')!r})")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{file} was written by a newer bayesvae (format version {meta['format_version']})")
    state = {k: v for k, v in tensors.items() if k.startswith(("model.", "guide."))}
    params = {k[len("param.") :]: v for k, v in tensors.items() if k.startswith("param.")}
    optimizer = None
    if "optimizer_groups" in meta:
        st: dict[int, dict[str, torch.Tensor]] = {}
        for pid, keys in meta["optimizer_state_keys"].items():
            st[int(pid)] = {key: tensors[f"optim.{pid}.{key}"] for key in keys}
        optimizer = {"state": st, "param_groups": meta["optimizer_groups"]}
    rng = {k: tensors.get(f"rng.{k}") for k in ("torch", "order", "cuda")}
    return {"meta": meta, "state": state, "params": params, "optimizer": optimizer, "rng": rng}


def _load_params(params: dict[str, torch.Tensor], names: dict[str, str]) -> None:
    store = pyro.get_param_store()
    for name, value in params.items():
        if name in store:
            del store[name]
        pyro.param(name, value.clone(), constraint=_CONSTRAINTS.get(names.get(name, "real"), constraints.real))


def load(
    path: str | os.PathLike,
    *,
    model: Callable | None = None,
    guide: Callable | None = None,
    device: str = "cpu",
) -> FitResult:
    """Load a fit saved by :meth:`FitResult.save` or a :func:`fit` checkpoint.

    Weights are read from safetensors and configs from JSON: nothing is unpickled, so a
    file from an untrusted source cannot run code. Models and guides built from the
    package's components are rebuilt from their configs; pass ``model=`` / ``guide=`` for
    hand-written functions (their ``pyro.param`` values are restored into Pyro's store).

    Raises
    ------
    FileNotFoundError
        Nothing saved at ``path``.
    ValueError
        A corrupted or foreign file, weights that do not fit the model, or a saved
        hand-written model/guide without ``model=``/``guide=``.
    """
    saved = _read(Path(path))
    meta = saved["meta"]
    if model is None:
        if meta["model"] is None:
            raise ValueError(f"{path} holds a hand-written model; pass model= to load it")
        model = _registry.build(meta["model"])
    if guide is None:
        if meta["guide"] is None:
            raise ValueError(f"{path} holds a hand-written guide; pass guide= to load it")
        guide = _registry.build(meta["guide"], model=model)
    _restore(model, guide, saved["state"])
    _load_params(saved["params"], meta.get("param_constraints", {}))
    dev = resolve_device(device)
    for m in _modules(model, guide):
        m.to(dev)
    data = meta["data"]
    info = DataInfo(
        num_data=data["num_data"],
        data_dim=data["data_dim"],
        columns=tuple(data["columns"]) if data.get("columns") else None,
        image_shape=tuple(data["image_shape"]) if data.get("image_shape") else None,
    )
    store = pyro.get_param_store()
    return FitResult(
        model=model,
        guide=guide,
        history=_history_frame(meta["history"]),
        config=FitConfig.from_dict(meta["config"]),
        data=info,
        params={name: store[name].detach() for name in saved["params"]},
    )
