"""Smoke runs of the benchmark scripts that need no data files (tiny settings, not measurements)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    yield
    for name in ("epoch_time", "mnist_loglik", "_timing"):
        sys.modules.pop(name, None)


def test_epoch_time_writes_its_table(bench_path, tmp_path):
    import epoch_time

    out = tmp_path / "et"
    rc = epoch_time.main(["--device", "cpu", "--synthetic", "--rows", "120", "--batch-sizes", "40", "--repeats", "1", "--threads", "1", "--out", str(out)])
    assert rc == 0
    payload = json.loads(out.with_suffix(".json").read_text())
    rows = payload["batch_sizes"]["40"]["rows"]
    assert {r["variant"] for r in rows} == {"torch", "torch-fused", "bayesvae"}
    torch_row = next(r for r in rows if r["variant"] == "torch")
    assert torch_row["ratio_min"] == 1.0
    for r in rows:
        assert r["min"] > 0 and r["steps_per_s"] > 0
    md = out.with_suffix(".md").read_text()
    assert "| 40 | 1 | bayesvae |" in md and "synthetic" in md
