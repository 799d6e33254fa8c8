"""Results files that accumulate runs: ``out.json`` holds every run, ``out.md`` is rendered from it."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["merge_runs"]


def merge_runs(out: Path, run: dict[str, Any], render: Callable[[list[dict[str, Any]]], list[str]]) -> Path:
    """Merge ``run`` into ``out.json`` (replacing a run with the same ``key``), rewrite ``out.md``.

    A rerun of the same protocol replaces its row; other protocols' rows are kept, so one
    file collects, e.g., the VAE and the IWAE runs. Returns the Markdown path.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.with_suffix(".json")
    runs: list[dict[str, Any]] = []
    if path.exists():
        try:
            runs = list(json.loads(path.read_text())["runs"])
        except (json.JSONDecodeError, KeyError, TypeError):
            print(f"warning: {path} is not a results file of this script; starting it afresh", file=sys.stderr)
    runs = [r for r in runs if r.get("key") != run["key"]] + [run]
    path.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    md = out.with_suffix(".md")
    md.write_text("\n".join(render(runs)) + "\n")
    return md
