"""The state of one call of :func:`~bayesvae.fit` between its steps: data, history, snapshots,
checkpoints and resume. :mod:`bayesvae.infer.fit` reads as validate -> init -> step/record."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bayesvae.convention import Call, Rows
from bayesvae.infer.distributed import Replicas
from bayesvae.infer.io import FIT_FILE, PREVIOUS_FILE, read_checkpoint, restore_modules, write_fit
from bayesvae.infer.params import ParamSet, Scoped, owned_modules
from bayesvae.infer.result import FitConfig, FitResult, history_frame
from bayesvae.infer.step import TrainState, all_finite

__all__ = ["Run", "data_fingerprint", "check_checkpoint_path", "RESUME_CHECKED"]

logger = logging.getLogger(__name__)

#: Settings that change a fit's trajectory: a resume must match them (``resume="new-lr"``
#: lets the learning-rate settings change and applies the new ones).
RESUME_CHECKED = (
    "elbo",
    "batch_size",
    "num_particles",
    "seed",
    "lr",
    "lr_schedule",
    "adam_eps",
    "clip_norm",
    "gradient",
    "kl_weight",
    "dynamic_binarization",
    "on_nonfinite",
)
_LR_SETTINGS = ("lr", "lr_schedule", "adam_eps")


def data_fingerprint(x: torch.Tensor) -> dict[str, Any]:
    """Rows, width and a SHA-256 of 64 evenly spaced rows: enough to tell data sets apart."""
    n = int(x.shape[0])
    rows = np.unique(np.linspace(0, n - 1, num=min(n, 64)).round().astype(np.int64))
    sample = x[torch.as_tensor(rows, device=x.device)].detach().cpu().contiguous()
    digest = hashlib.sha256(sample.numpy().tobytes()).hexdigest()
    return {"rows": n, "width": int(x.shape[1]), "sample_sha256": digest}


def check_checkpoint_path(path: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse an unusable or occupied checkpoint path before any training happens."""
    if path.is_symlink() and not path.exists():
        raise ValueError(f"checkpoint path {path} is a dangling symbolic link")
    if path.suffix != ".safetensors" and path.exists() and not path.is_dir():
        raise ValueError(f"checkpoint path {path} is an existing file, not a directory")
    directory = path.parent if path.suffix == ".safetensors" else path
    existing = (path if path.suffix == ".safetensors" else path / FIT_FILE).exists()
    if existing and not resume and not overwrite:
        raise ValueError(
            f"{path} already holds a fit; pass resume=True to continue it or overwrite=True to replace it"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"0")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"cannot write checkpoints to {directory}: {exc.strerror or exc}") from exc


@dataclass
class Run:
    """Mutable bookkeeping of one fit (the step itself lives in :class:`TrainState`)."""

    model: Any
    guide: Any
    rows: Rows
    config: FitConfig
    replicas: Replicas
    param_set: ParamSet | None
    checkpoint: Path | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    state: TrainState | None = None
    optim_state: dict[str, Any] | None = None
    order: torch.Generator | None = None
    elapsed: float = 0.0
    convergence: dict[str, Any] = field(default_factory=dict)
    good: dict[str, torch.Tensor] = field(default_factory=dict)
    extra_meta: dict[str, Any] = field(default_factory=dict)

    # -- parameters ----------------------------------------------------------------------

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every parameter by a stable name (module weights and the fit's own pyro.params)."""
        out: dict[str, torch.Tensor] = {}
        for i, m in enumerate(owned_modules(self.model, self.guide)):
            out.update({f"{i}.{k}": v for k, v in m.state_dict(keep_vars=True).items()})
        if self.param_set is not None:
            out.update({f"param.{k}": v for k, v in self.param_set.unconstrained.items()})
        return out

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of the current parameters."""
        return {k: v.detach().clone() for k, v in self.tensors().items()}

    def restore(self, snap: dict[str, torch.Tensor]) -> None:
        """Write a snapshot back into the parameters, in place."""
        with torch.no_grad():
            for k, v in self.tensors().items():
                if k in snap:
                    v.copy_(snap[k])

    def verified(self) -> bool:
        """Parameters and optimizer moments are all finite."""
        tensors = list(self.tensors().values())
        if self.state is not None:
            for st in self.state.optimizer.state.values():
                tensors.extend(v for v in st.values() if torch.is_tensor(v))
        return all_finite(tensors)

    # -- records -------------------------------------------------------------------------

    def result(self) -> FitResult:
        model, guide = self.model, self.guide
        if self.param_set is not None:
            model = model if isinstance(model, nn.Module) else Scoped(model, self.param_set)
            guide = guide if isinstance(guide, nn.Module) else Scoped(guide, self.param_set)
        weights = [p for m in owned_modules(self.model, self.guide) for p in m.parameters()]
        return FitResult(
            model=model,
            guide=guide,
            history=history_frame(self.history),
            config=self.config,
            data=self.rows.info,
            params=self.param_set.constrained(exclude=weights) if self.param_set is not None else {},
            convergence=dict(self.convergence),
            param_set=self.param_set,
        )

    def write_checkpoint(self) -> None:
        """Write the verified state with optimizer and RNG (keeping the previous checkpoint)."""
        if self.checkpoint is None or self.state is None:
            return
        # every process's sampling stream, so that a distributed resume is bit-identical too
        streams = self.replicas.gather(torch.get_rng_state())
        if not self.replicas.is_main:
            return
        rng = {"torch": torch.get_rng_state(), "order": self.order.get_state()}
        if self.replicas.active:
            rng.update({f"torch_rank{r}": t for r, t in enumerate(streams)})
        dev = self.rows.x.device
        if dev.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(dev)
        meta = {"data_fingerprint": data_fingerprint(self.rows.x), **self.extra_meta}
        write_fit(self.result(), self.checkpoint, optimizer=self.state.optimizer, rng=rng, extra=meta, keep_previous=True)

    # -- resume --------------------------------------------------------------------------

    def resume(self, mode: bool | str) -> None:
        """Continue from the checkpoint (falling back to the previous one if it is corrupted)."""
        saved = read_checkpoint(self.checkpoint) if self.checkpoint is not None else None
        if saved is None:
            return
        if "fallback" in saved:
            logger.warning("resuming from the previous checkpoint %s: %s", self.checkpoint / PREVIOUS_FILE if self.checkpoint.suffix != ".safetensors" else self.checkpoint, saved["fallback"])
        meta = saved["meta"]
        allowed = _LR_SETTINGS if mode == "new-lr" else ()
        old = meta["config"]
        for key in RESUME_CHECKED:
            if key in allowed or key not in old:
                continue
            new = getattr(self.config, key)
            if _differs(old.get(key), new):
                hint = " (pass resume='new-lr' to continue with the new learning rate)" if key in _LR_SETTINGS else ""
                raise ValueError(f"cannot resume: checkpoint was made with {key}={old.get(key)!r} but this fit has {key}={new!r}{hint}")
        fingerprint = meta.get("data_fingerprint")
        if fingerprint is not None and fingerprint != data_fingerprint(self.rows.x):
            raise ValueError(
                f"cannot resume: the checkpoint was made on other data ({fingerprint['rows']} rows x {fingerprint['width']}, sample digest {fingerprint['sample_sha256'][:12]}) than this fit's ({self.rows.num_data} rows x {self.rows.info.data_dim})"
            )
        for part, key in ((self.model, "model"), (self.guide, "guide")):
            conf = getattr(part, "to_config", None)
            if callable(conf) and meta.get(key) is not None:
                try:
                    mine = conf()
                except TypeError:
                    mine = None
                if mine is not None and _differs(mine, meta[key]):
                    raise ValueError(f"cannot resume: the checkpoint's {key} configuration differs from this fit's {key}")
        restore_modules(self.model, self.guide, saved["state"])
        if self.param_set is not None:
            self.param_set.pending.update(saved["params"])
            self.param_set.pending_constraints.update(meta.get("param_constraints", {}))
        self.history = list(meta["history"])
        self.elapsed = float(self.history[-1]["seconds"]) if self.history else 0.0
        self.optim_state = saved["optimizer"]
        dev = self.rows.x.device
        if saved["rng"]["torch"] is not None:
            torch.set_rng_state(saved["rng"]["torch"])
            self.order.set_state(saved["rng"]["order"])
            if dev.type == "cuda" and saved["rng"]["cuda"] is not None:
                torch.cuda.set_rng_state(saved["rng"]["cuda"], dev)
        if self.replicas.active:  # each process continues its own sampling stream
            own = saved["rng"].get(f"torch_rank{self.replicas.rank}")
            if own is None:
                raise ValueError("cannot resume a distributed fit from this checkpoint: it holds no sampling stream for this process (written by a single process or another number of processes)")
            torch.set_rng_state(own)

    def begin_epoch(self) -> float:
        """Snapshot the verified state (what a divergence restores); returns the start time."""
        self.good = self.snapshot()
        return time.perf_counter()


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return not math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
        except (TypeError, ValueError):
            return a != b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) != len(b) or any(_differs(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) != set(b) or any(_differs(a[k], b[k]) for k in a)
    return a != b


def base_calls(model: Any, guide: Any, param_set: ParamSet | None) -> tuple[Call, Call]:
    """Model and guide with the fit's own parameters (no scale plan yet)."""
    own = () if param_set is None else (param_set.wrapper(),)
    return Call(model).with_wrappers(*own), Call(guide).with_wrappers(*own)


def package_built(part: Any) -> bool:
    """Whether ``part`` and all its submodules are the package's own components."""
    if not isinstance(part, nn.Module):
        return False
    return all(type(m).__module__.split(".")[0] in ("bayesvae", "torch", "pyro") for m in part.modules())
