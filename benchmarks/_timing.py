"""Timing that survives a noisy, shared machine: interleaved repeats, minima, load averages.

On a small shared box (2 cores, other jobs running) one run of a benchmark is not a
measurement: PERFORMANCE.md saw repeat-to-repeat spreads up to 1.6x, and two runs of
``train_throughput.py`` gave trace/b128 ratios of 1.26 and 0.93. The helpers here make every
throughput number come with what is needed to judge it:

* **interleaved repeats**: repeat ``r`` runs every (threads, variant) cell once, in a
  rotated order, so slow phases of the machine hit all variants alike;
* **minimum and median** of the repeats, and the **spread** ``max / min - 1``. Noise on a
  busy machine only ever adds time, so the minimum is the best estimate of the cost of the
  code itself; ratios are judged on the minima (the median is printed beside it);
* **1 and 2 torch threads** per variant (``torch.set_num_threads`` inside the process);
* the machine's **load average** (``os.getloadavg``: 1, 5, 15 minutes) before and after
  the run, and the 1-minute value before every repeat.

A benchmark declares its rows as a list of :class:`Variant` (name, callable, description);
adding a row for a user's own function is appending one more :class:`Variant`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "Variant",
    "Summary",
    "summarize",
    "load_average",
    "machine_info",
    "interleaved",
    "ratio_rows",
    "markdown_table",
    "write_results",
]


@dataclass(frozen=True)
class Variant:
    """One row of a benchmark: a name, the callable that runs it, and what it is."""

    name: str
    fn: Callable[..., Any]
    description: str = ""


@dataclass(frozen=True)
class Summary:
    """Repeats of one measurement (seconds, or any positive quantity).

    Attributes
    ----------
    values : list of float
        Every repeat, in the order run.
    min, median, max : float
        Order statistics of ``values``.
    spread : float
        ``max / min - 1``: 0.05 means the slowest repeat took 5 % longer than the fastest.
    """

    values: list[float]
    min: float
    median: float
    max: float
    spread: float

    def to_dict(self) -> dict[str, Any]:
        return {"values": self.values, "min": self.min, "median": self.median, "max": self.max, "spread": self.spread}


def summarize(values: Sequence[float]) -> Summary:
    """Min, median, max and relative spread of a non-empty list of repeats."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("summarize needs at least one value")
    lo, hi = min(vals), max(vals)
    return Summary(vals, lo, statistics.median(vals), hi, hi / lo - 1 if lo > 0 else math.nan)


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages (NaN where the OS does not report them)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return [math.nan] * 3


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """CPU model, core count, torch threads, accelerator and library versions, as a flat dict."""
    import pyro

    import bayesvae

    device = torch.device(device)
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "bayesvae": bayesvae.__version__,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    info["bayesvae_source"] = _source(Path(bayesvae.__file__).resolve().parent)
    return info


def _source(package: Path) -> str:
    """Where the imported bayesvae lives and, in a git checkout, its commit (``+dirty`` if edited)."""
    import subprocess

    try:
        commit = subprocess.run(["git", "-C", str(package), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return str(package)
        dirty = subprocess.run(["git", "-C", str(package), "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=10)
        return f"{package} @ {commit.stdout.strip()}{'+dirty' if dirty.stdout.strip() else ''}"
    except (OSError, subprocess.SubprocessError):
        return str(package)


@dataclass
class Interleaved:
    """Result of :func:`interleaved`: repeats per (variant, threads) and the machine's load."""

    samples: dict[tuple[str, int], list[Any]]
    load_before: list[float]
    load_after: list[float]
    load_per_repeat: list[float] = field(default_factory=list)

    def summary(self, name: str, threads: int, key: Callable[[Any], float] = float) -> Summary:
        return summarize([key(s) for s in self.samples[(name, threads)]])


def interleaved(
    variants: Sequence[Variant],
    measure: Callable[[Variant], Any],
    *,
    repeats: int,
    threads: Sequence[int] = (1, 2),
    log: Callable[[str], None] | None = print,
) -> Interleaved:
    """Run ``measure(variant)`` for every variant at every thread count, ``repeats`` times.

    Repeat ``r`` runs all cells once; the order of the variants is rotated by ``r`` so that
    no variant always runs first after a thread change (or right after a given other one).
    ``torch.set_num_threads`` is restored afterwards.

    Returns
    -------
    Interleaved
        ``samples[(name, threads)]``: what ``measure`` returned, one entry per repeat;
        load averages before and after, and the 1-minute load before every repeat.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    bad = [t for t in threads if not isinstance(t, int) or t < 1]
    if bad:
        raise ValueError(f"thread counts must be positive ints, got {bad}")
    before_threads = torch.get_num_threads()
    samples: dict[tuple[str, int], list[Any]] = {(v.name, t): [] for v in variants for t in threads}
    result = Interleaved(samples, load_before=load_average(), load_after=[])
    try:
        for r in range(repeats):
            result.load_per_repeat.append(load_average()[0])
            order = list(variants[r % len(variants) :]) + list(variants[: r % len(variants)])
            for t in threads:
                torch.set_num_threads(t)
                for v in order:
                    value = measure(v)
                    samples[(v.name, t)].append(value)
                    if log is not None:
                        log(f"  repeat {r + 1}/{repeats} threads={t} {v.name}: {_short(value)}")
    finally:
        torch.set_num_threads(before_threads)
    result.load_after = load_average()
    return result


def _short(value: Any) -> str:
    if isinstance(value, (int, float)):
        return f"{value:.4g}"
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], (int, float)):
        return f"{value[0]:.4g}"
    return type(value).__name__


def ratio_rows(
    result: Interleaved,
    names: Sequence[str],
    floor: str,
    threads: Sequence[int],
    key: Callable[[Any], float] = float,
) -> list[dict[str, Any]]:
    """One row per (threads, variant): min, median, spread and the ratios to ``floor``.

    ``ratio_min = min(variant) / min(floor)`` is the one to judge (noise only adds time);
    ``ratio_median`` is shown beside it.
    """
    rows = []
    for t in threads:
        ref = result.summary(floor, t, key)
        for name in names:
            s = result.summary(name, t, key)
            rows.append(
                {
                    "threads": t,
                    "variant": name,
                    "min": s.min,
                    "median": s.median,
                    "max": s.max,
                    "spread": s.spread,
                    "ratio_min": s.min / ref.min,
                    "ratio_median": s.median / ref.median,
                    "repeats": len(s.values),
                    "values": s.values,
                }
            )
    return rows


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> list[str]:
    """Markdown lines of a table; ``columns`` are (header, key, format spec)."""
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        cells = []
        for _, key, spec in columns:
            v = r.get(key, "")
            cells.append(format(v, spec) if spec and isinstance(v, (int, float)) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_results(out: str | os.PathLike, payload: dict[str, Any], markdown: Sequence[str]) -> Path:
    """Write ``out.json`` (payload) and ``out.md`` (lines); returns the Markdown path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    md = out.with_suffix(".md")
    md.write_text("\n".join(markdown) + "\n")
    return md


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
