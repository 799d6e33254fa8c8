"""Every example script runs end to end with tiny arguments."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: Tiny arguments per example (each must finish in seconds with them).
TINY = {
    "digits_vae.py": ["--epochs", "2"],
    "linear_vs_vae.py": ["--n", "200", "--epochs", "2"],
    "model_comparison.py": ["--epochs", "1", "--num-samples", "10"],
    "ibp_bars.py": ["--n", "50", "--epochs", "1", "--restarts", "1"],
    "prior_comparison.py": ["--epochs", "1", "--samples", "10", "--rows", "300"],
    "inference_comparison.py": ["--epochs", "2", "--priors", "gaussian,vamp", "--warmup", "1", "--gradients", "stl,dreg", "--eval-samples", "10", "--gap-points", "10", "--gap-steps", "10", "--train-rows", "200", "--test-rows", "40", "--components", "5"],
    "tabular_imputation.py": ["--epochs", "2", "--particles", "5", "--imputations", "2", "--output", "tabular_imputation.md"],
}


def test_every_example_has_tiny_arguments():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts, "no examples found"
    missing = [s for s in scripts if s not in TINY]
    assert not missing, f"add tiny arguments for {missing} to TINY"


#: Examples that take over 20 s even with tiny arguments (run with ``-m slow``).
SLOW = {"model_comparison.py"}


@pytest.mark.parametrize(
    "script", [pytest.param(p.name, marks=pytest.mark.slow) if p.name in SLOW else p.name for p in sorted(EXAMPLES.glob("*.py"))]
)
def test_example_runs(script, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *TINY.get(script, [])],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "an example prints its results"
