"""Rebuild package objects from JSON configs, without unpickling anything."""

from __future__ import annotations

from typing import Any

__all__ = ["register", "build", "registered"]

_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make ``cls`` rebuildable from ``{"type": cls.__name__, ...}``."""
    _REGISTRY[cls.__name__] = cls
    return cls


def registered() -> tuple[str, ...]:
    """Names of all classes that can be rebuilt from a config."""
    return tuple(sorted(_REGISTRY))


def build(config: dict[str, Any], **extra: Any) -> Any:
    """Construct an object from ``config`` (nested component configs are built first)."""
    if not isinstance(config, dict) or "type" not in config:
        raise ValueError(f"a component config must be a dict with a 'type' key, got {config!r}")
    name = config["type"]
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown component type {name!r} in config; known types: {', '.join(registered())}"
        )
    kwargs = {k: _resolve(v) for k, v in config.items() if k != "type"}
    kwargs.update(extra)
    return _REGISTRY[name](**kwargs)


def _resolve(value: Any) -> Any:
    """Build nested configs; turn JSON lists back into tuples."""
    if isinstance(value, dict) and "type" in value:
        return build(value)
    if isinstance(value, list):
        return tuple(_resolve(v) for v in value)
    return value
