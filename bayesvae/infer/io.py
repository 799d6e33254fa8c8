r"""Saving and loading fits: one safetensors file, JSON metadata, digests, no pickles.

A saved fit is one ``fit.safetensors`` file: the tensors (module weights, the fit's own
``pyro.param`` values, and for a checkpoint the optimizer moments and RNG state) and a JSON
metadata string (configs, history, data description). Integrity is checked before anything
is built from a file:

* the metadata carries the SHA-256 digest of every tensor's bytes (with its dtype and shape)
  and the file carries the digest of the metadata itself: a flipped bit anywhere is a
  ``ValueError`` naming the tensor (or the metadata);
* non-finite floating tensors are refused the same way;
* the metadata's types and nesting depth are validated, and the tensor shapes declared in the
  header are compared with the model/guide configuration on PyTorch's ``meta`` device --
  which allocates nothing -- before any module is constructed;
* nothing is unpickled.

Every file is written by :func:`atomic_write` (a temporary file in the same directory, then
``os.replace``), so an interrupted write leaves the previous file intact; the temporaries of
an interrupted write are removed by the next write. A checkpoint keeps the previous
checkpoint as ``fit.prev.safetensors`` so that :func:`read_checkpoint` can fall back to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import math
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from bayesvae import _registry
from bayesvae.data import DataInfo, resolve_device
from bayesvae.infer.params import ParamSet, constraint_name, owned_modules, owner_module
from bayesvae.infer.result import FitConfig, FitResult, history_frame

__all__ = [
    "FIT_FILE",
    "PREVIOUS_FILE",
    "atomic_write",
    "write_fit",
    "read_fit",
    "read_checkpoint",
    "load",
    "module_state",
    "restore_modules",
    "checkpoint_lock",
]

logger = logging.getLogger(__name__)

FORMAT = "bayesvae-fit"
FORMAT_VERSION = 2
FIT_FILE = "fit.safetensors"
PREVIOUS_FILE = "fit.prev.safetensors"
_MAX_DEPTH = 32
_META_KEY = "bayesvae"
_META_DIGEST_KEY = "bayesvae_sha256"


# ---------------------------------------------------------------------------------------------
# Atomic writes


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _remove_orphans(target: Path) -> None:
    """Delete temporaries left by an interrupted write of ``target``."""
    for orphan in target.parent.glob(f".{target.name}.*.tmp"):
        with contextlib.suppress(OSError):
            orphan.unlink()


def atomic_write(target: Path, write: Callable[[str], Any]) -> None:
    """Write ``target`` through ``write(tmp_path)`` and move it into place atomically.

    Raises
    ------
    OSError
        The write failed (e.g. a full disk); the previous ``target`` is left intact and the
        temporary file removed.
    """
    target = Path(target)
    _remove_orphans(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        try:
            write(tmp)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise OSError(exc.errno, f"no space left on the device while writing {target}; the previous file is intact") from exc
            raise
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; a saved fit is a normal file
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def checkpoint_lock(directory: Path) -> Iterator[None]:
    """Hold an advisory lock on a checkpoint directory for the duration of a fit.

    A second process asking for the same directory gets a ``ValueError`` naming the holder.
    The lock is released when the process ends, however it ends (``flock`` semantics).
    """
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".lock"
    handle = open(path, "a+")  # noqa: SIM115 - held open for the fit's duration
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ValueError(
                f"the checkpoint {directory} is in use by another fit ({holder}); wait for it to finish or use another checkpoint path"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield
    finally:
        handle.close()


# ---------------------------------------------------------------------------------------------
# Writing


def _digest(t: torch.Tensor) -> str:
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _prefixed_modules(model: Any, guide: Any) -> list[tuple[str, nn.Module]]:
    """``("model.", module)`` and ``("guide.", module)`` for the modules behind model and guide;
    a guide that is a method of the model's module is saved (and restored) once, as the model."""
    out: list[tuple[str, nn.Module]] = []
    for prefix, part in (("model.", model), ("guide.", guide)):
        m = owner_module(part)
        if m is not None and all(m is not other for _, other in out):
            out.append((prefix, m))
    return out


def module_state(model: Any, guide: Any) -> dict[str, torch.Tensor]:
    """The state dicts of the modules behind model and guide, prefixed ``model.``/``guide.``."""
    return {prefix + k: v for prefix, m in _prefixed_modules(model, guide) for k, v in m.state_dict().items()}


def restore_modules(model: Any, guide: Any, state: dict[str, torch.Tensor]) -> None:
    """Load ``model.``/``guide.`` prefixed weights into the modules behind model and guide."""
    for prefix, m in _prefixed_modules(model, guide):
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            m.load_state_dict(sub, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"saved weights do not fit the {prefix[:-1]}: {exc}") from exc


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


def _user_params(result: FitResult) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The fit's own pyro.param values (constrained) that are not weights of a saved module."""
    if result.param_set is None:
        return dict(result.params), {name: "real" for name in result.params}
    module_weights = [p for m in owned_modules(result.model, result.guide) for p in m.parameters()]
    values = result.param_set.constrained(exclude=module_weights)
    names = {name: constraint_name(result.param_set.constraints[name]) for name in values}
    return values, names


def write_fit(
    result: FitResult,
    path: Path,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    rng: dict[str, torch.Tensor] | None = None,
    extra: dict[str, Any] | None = None,
    keep_previous: bool = False,
) -> Path:
    """Write ``result`` (and, for a checkpoint, optimizer and RNG state) to ``path``.

    With ``keep_previous`` the file being replaced is kept as ``fit.prev.safetensors``.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in module_state(result.model, result.guide).items()}
    values, constraint_names = _user_params(result)
    tensors.update({"param." + k: v.detach().cpu().contiguous() for k, v in values.items()})
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": result.config.to_dict(),
        "model": _config_of(result.model),
        "guide": _config_of(result.guide),
        "data": dataclasses.asdict(result.data),
        "history": result.history.to_dict(orient="records"),
        "convergence": result.convergence,
        "param_constraints": constraint_names,
        "package_versions": _versions(),
        **(extra or {}),
    }
    if optimizer is not None:
        opt = optimizer.state_dict()
        for pid, st in opt["state"].items():
            for key, value in st.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
        meta["optimizer_groups"] = opt["param_groups"]
        meta["optimizer_state_keys"] = {str(pid): sorted(st) for pid, st in opt["state"].items()}
        tensors.update({f"rng.{k}": v.cpu().contiguous() for k, v in (rng or {}).items()})
    meta["digests"] = {k: _digest(v) for k, v in tensors.items()}
    file = path if path.suffix == ".safetensors" else path / FIT_FILE
    file.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(meta, default=_json_default, allow_nan=True)
    header = {_META_KEY: text, _META_DIGEST_KEY: hashlib.sha256(text.encode()).hexdigest()}
    if keep_previous and file.exists():
        os.replace(file, file.with_name(PREVIOUS_FILE))
    atomic_write(file, lambda tmp: save_file(tensors, tmp, metadata=header))
    if file.name == FIT_FILE:
        readable = json.dumps({k: meta[k] for k in ("config", "model", "guide", "data", "package_versions")}, indent=2, default=_json_default)
        atomic_write(path / "config.json", lambda tmp: Path(tmp).write_text(readable))
        atomic_write(path / "history.csv", lambda tmp: result.history.to_csv(tmp, index=False))
    return path


# ---------------------------------------------------------------------------------------------
# Reading


def _depth(obj: Any, level: int = 0) -> int:
    if level > _MAX_DEPTH:
        return level
    if isinstance(obj, dict):
        return max([_depth(v, level + 1) for v in obj.values()] or [level])
    if isinstance(obj, list):
        return max([_depth(v, level + 1) for v in obj] or [level])
    return level


def _expect(cond: bool, file: Path, what: str) -> None:
    if not cond:
        raise ValueError(f"{file} is not a readable bayesvae fit: {what}")


def _validate_meta(meta: Any, file: Path) -> None:
    """Types and nesting of the metadata; every malformed file is a ValueError."""
    _expect(isinstance(meta, dict), file, "the metadata is not a JSON object")
    _expect(meta.get("format") == FORMAT, file, f"format {meta.get('format')!r}, expected {FORMAT!r}")
    version = meta.get("format_version")
    _expect(isinstance(version, int), file, "format_version is not an integer")
    if version > FORMAT_VERSION:
        raise ValueError(f"{file} was written by a newer bayesvae (format version {version})")
    _expect(_depth(meta) <= _MAX_DEPTH, file, f"the metadata is nested deeper than {_MAX_DEPTH} levels")
    config = meta.get("config")
    _expect(isinstance(config, dict), file, "config is not an object")
    types = {f.name: f.type for f in dataclasses.fields(FitConfig)}
    numeric = {"epochs": int, "num_particles": int, "seed": int, "lr": (int, float), "adam_eps": (int, float)}
    for key, kind in numeric.items():
        if key in config:
            ok = isinstance(config[key], kind) and not isinstance(config[key], bool)
            _expect(ok, file, f"config.{key} is {config[key]!r}, not a number")
            _expect(not isinstance(config[key], float) or math.isfinite(config[key]), file, f"config.{key} is not finite")
    for key in ("batch_size", "clip_norm"):
        v = config.get(key)
        _expect(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)), file, f"config.{key} is {v!r}")
    for key in ("elbo", "device", "gradient", "on_nonfinite"):
        if key in config:
            _expect(isinstance(config[key], str), file, f"config.{key} is not a string")
    unknown = sorted(set(config) - set(types))
    _expect(not unknown, file, f"unknown config keys {unknown}")
    data = meta.get("data")
    _expect(isinstance(data, dict), file, "data is not an object")
    for key in ("num_data", "data_dim"):
        v = data.get(key)
        _expect(isinstance(v, int) and not isinstance(v, bool) and v >= 1, file, f"data.{key} is {v!r}, not a positive integer")
    for key in ("columns", "image_shape"):
        v = data.get(key)
        _expect(v is None or (isinstance(v, list) and all(isinstance(e, (str, int)) for e in v)), file, f"data.{key} is malformed")
    history = meta.get("history")
    _expect(isinstance(history, list) and all(isinstance(r, dict) for r in history), file, "history is not a list of records")
    for rec in history:
        _expect(all(isinstance(v, (int, float)) or v is None for v in rec.values()), file, "a history record holds a non-number")
    for key in ("model", "guide"):
        _expect(meta.get(key) is None or isinstance(meta.get(key), dict), file, f"{key} config is not an object")
    _expect(isinstance(meta.get("param_constraints", {}), dict), file, "param_constraints is not an object")
    digests = meta.get("digests")
    if version >= 2:
        _expect(isinstance(digests, dict) and all(isinstance(v, str) for v in digests.values()), file, "digests are missing")
    if "optimizer_groups" in meta:
        _expect(isinstance(meta["optimizer_groups"], list), file, "optimizer_groups is not a list")
        keys = meta.get("optimizer_state_keys")
        _expect(isinstance(keys, dict) and all(isinstance(v, list) for v in keys.values()), file, "optimizer_state_keys is malformed")


def read_header(path: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """Metadata (verified against its digest and validated) and declared tensor shapes."""
    file = Path(path)
    file = file if file.suffix == ".safetensors" else file / FIT_FILE
    if not file.exists():
        raise FileNotFoundError(f"no saved fit at {file}")
    try:
        with safe_open(str(file), framework="pt") as handle:
            header = handle.metadata() or {}
            shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{file} is not a readable bayesvae fit (corrupted or another format): {exc}") from exc
    text = header.get(_META_KEY)
    _expect(isinstance(text, str), file, "no bayesvae metadata in the header")
    stored = header.get(_META_DIGEST_KEY)
    if stored is not None and hashlib.sha256(text.encode()).hexdigest() != stored:
        raise ValueError(f"{file} is corrupted: the digest of its metadata does not match")
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{file} is corrupted: its metadata is not valid JSON ({type(exc).__name__})") from exc
    _validate_meta(meta, file)
    if meta["format_version"] >= 2 and stored is None:
        raise ValueError(f"{file} is corrupted: the metadata digest is missing")
    return meta, shapes


def read_fit(path: Path) -> dict[str, Any]:
    """Read and verify a saved fit: ``{"meta", "state", "params", "optimizer", "rng", "shapes"}``.

    Raises
    ------
    FileNotFoundError
        Nothing saved at ``path``.
    ValueError
        A corrupted or foreign file: a digest mismatch (naming the tensor), a non-finite
        tensor, malformed metadata.
    """
    file = Path(path)
    file = file if file.suffix == ".safetensors" else file / FIT_FILE
    meta, shapes = read_header(file)
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{file} is not a readable bayesvae fit (corrupted or another format): {exc}") from exc
    digests = meta.get("digests")
    if digests is not None:
        missing = sorted(set(digests) ^ set(tensors))
        if missing:
            raise ValueError(f"{file} is corrupted: tensors {missing[:5]} do not match its table of digests")
        for name, t in tensors.items():
            if _digest(t) != digests[name]:
                raise ValueError(f"{file} is corrupted: tensor {name!r} does not match its SHA-256 digest")
    else:
        logger.warning("%s has no digests (format version 1); its tensors cannot be verified", file)
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{file} holds non-finite values in tensor {name!r}; it cannot be loaded")
    state = {k: v for k, v in tensors.items() if k.startswith(("model.", "guide."))}
    params = {k[len("param.") :]: v for k, v in tensors.items() if k.startswith("param.")}
    optimizer = None
    if "optimizer_groups" in meta:
        st: dict[int, dict[str, torch.Tensor]] = {}
        for pid, keys in meta["optimizer_state_keys"].items():
            try:
                st[int(pid)] = {key: tensors[f"optim.{pid}.{key}"] for key in keys}
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{file} is corrupted: optimizer state {pid!r} is incomplete") from exc
        optimizer = {"state": st, "param_groups": meta["optimizer_groups"]}
    rng = {k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")}
    rng.update({k: rng.get(k) for k in ("torch", "order", "cuda")})
    return {"meta": meta, "state": state, "params": params, "optimizer": optimizer, "rng": rng, "shapes": shapes}


def read_checkpoint(directory: Path) -> dict[str, Any] | None:
    """The newest verifiable checkpoint in ``directory`` (falling back to the previous one)."""
    directory = Path(directory)
    latest, previous = directory / FIT_FILE, directory / PREVIOUS_FILE
    if directory.suffix == ".safetensors":
        latest, previous = directory, directory.with_name(PREVIOUS_FILE)
    error: ValueError | None = None
    if latest.exists():
        try:
            return read_fit(latest)
        except ValueError as exc:
            error = exc
            if not previous.exists():
                raise
            logger.warning("%s; resuming from the previous checkpoint %s instead", exc, previous)
    if previous.exists():
        try:
            saved = read_fit(previous)
        except ValueError as exc:
            raise ValueError(f"both checkpoints are unreadable: {error}; {exc}") from exc
        saved["fallback"] = str(error) if error is not None else "the newest checkpoint was missing"
        return saved
    return None


# ---------------------------------------------------------------------------------------------
# load


def _check_shapes_on_meta(config: dict[str, Any], guide_config: dict[str, Any] | None, shapes: dict[str, tuple], file: str) -> None:
    """Build model/guide from configs on the meta device (no memory) and compare shapes."""
    try:
        with torch.device("meta"):
            model = _registry.build(config)
            guide = _registry.build(guide_config, model=model) if guide_config is not None else None
    except (RuntimeError, NotImplementedError) as exc:
        if "meta" not in str(exc):
            raise ValueError(f"{file}: the saved model/guide configuration is invalid: {exc}") from exc
        # a component that reads values while it is built (Pyro's autoregressive networks)
        # cannot be built on the meta device: its shapes are checked by load_state_dict instead
        logger.debug("%s: shapes not checked before building (%s)", file, exc)
        return
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{file}: the saved model/guide configuration is invalid: {exc}") from exc
    for prefix, part in (("model.", model), ("guide.", guide)):
        if not isinstance(part, nn.Module):
            continue
        for k, v in part.state_dict().items():
            declared = shapes.get(prefix + k)
            if declared is None or tuple(declared) != tuple(v.shape):
                raise ValueError(
                    f"{file}: the configuration asks for {prefix}{k} of shape {tuple(v.shape)} but the file holds {declared}; the file is corrupted or was edited"
                )
        extra = [k for k in shapes if k.startswith(prefix) and k[len(prefix) :] not in part.state_dict()]
        if extra:
            raise ValueError(f"{file}: tensors {extra[:5]} do not belong to the saved {prefix[:-1]}")


def _materialize(model: Any, guide: Any, params: ParamSet, info: DataInfo, device: torch.device) -> None:
    """Run a hand-written model/guide once so that loaded values reach their param sites."""
    from pyro import poutine

    from bayesvae.convention import Call

    x = torch.zeros(2, info.data_dim, device=device)
    kw = {"index": torch.arange(2, device=device), "num_data": 2}
    try:
        with pyro.validation_enabled(False), torch.no_grad(), params.context():
            trace = poutine.trace(Call(guide)).get_trace(x, **kw)
            poutine.trace(poutine.replay(Call(model), trace=trace)).get_trace(x, **kw)
    except Exception as exc:  # noqa: BLE001 - any failure: the weights could not be restored
        raise ValueError(
            f"could not restore the saved pyro.param/pyro.module values: running the model and guide on a zero batch failed ({type(exc).__name__}: {exc})"
        ) from exc
    params.check_pending()


def load(
    path: str | os.PathLike,
    *,
    model: Callable | None = None,
    guide: Callable | None = None,
    device: str = "cpu",
) -> FitResult:
    """Load a fit saved by :meth:`FitResult.save` or a :func:`~bayesvae.fit` checkpoint.

    Every tensor is checked against its SHA-256 digest and for finiteness, the metadata
    against its digest, types and nesting, and the tensor shapes against the saved
    configuration before any module is built; nothing is unpickled, so a file from an
    untrusted source cannot run code or make the process allocate what the file does not
    hold. Models and guides built from the package's components are rebuilt from their
    configs; pass ``model=`` / ``guide=`` for hand-written functions: their ``pyro.param``
    values, and the weights of networks they register with ``pyro.module``, are written back
    into them (the returned fit's networks hold the saved values).

    Raises
    ------
    FileNotFoundError
        Nothing saved at ``path``.
    ValueError
        A corrupted or foreign file, weights that do not fit the model, or a saved
        hand-written model/guide without ``model=``/``guide=``.
    """
    from bayesvae.infer.params import Scoped

    file = Path(path)
    meta, shapes = read_header(file)
    if model is None:
        if meta["model"] is None:
            raise ValueError(f"{path} holds a hand-written model; pass model= to load it")
        if guide is None and meta["guide"] is not None:
            _check_shapes_on_meta(meta["model"], meta["guide"], shapes, str(path))
        else:
            _check_shapes_on_meta(meta["model"], None, shapes, str(path))
    saved = read_fit(file)
    if model is None:
        model = _registry.build(meta["model"])
    if guide is None:
        if meta["guide"] is None:
            raise ValueError(f"{path} holds a hand-written guide; pass guide= to load it")
        guide = _registry.build(meta["guide"], model=model)
    restore_modules(model, guide, saved["state"])
    dev = resolve_device(device)
    for m in owned_modules(model, guide):
        m.to(dev)
    data = meta["data"]
    info = DataInfo(
        num_data=data["num_data"],
        data_dim=data["data_dim"],
        columns=tuple(data["columns"]) if data.get("columns") else None,
        image_shape=tuple(data["image_shape"]) if data.get("image_shape") else None,
    )
    hand_written = not (isinstance(model, nn.Module) and isinstance(guide, nn.Module))
    param_set = None
    if hand_written:
        param_set = ParamSet(pending={k: v.to(dev) for k, v in saved["params"].items()}, pending_constraints=meta.get("param_constraints", {}))
        _materialize(model, guide, param_set, info, dev)
        model = model if isinstance(model, nn.Module) else Scoped(model, param_set)
        guide = guide if isinstance(guide, nn.Module) else Scoped(guide, param_set)
    elif saved["params"]:
        raise ValueError(f"{path} holds pyro.param values but the model and guide are modules that create none")
    module_weights = [p for m in owned_modules(model, guide) for p in m.parameters()]
    return FitResult(
        model=model,
        guide=guide,
        history=history_frame(meta["history"]),
        config=FitConfig.from_dict(meta["config"]),
        data=info,
        params=param_set.constrained(exclude=module_weights) if param_set is not None else {},
        convergence=meta.get("convergence") or {},
        param_set=param_set,
    )
