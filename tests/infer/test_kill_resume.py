"""Crash safety: a fit killed with SIGKILL at random times (inside checkpoint writes too) and
resumed each time ends bit-identical to an uninterrupted fit, and leaves no temporary file."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

CHILD = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    import bayesvae as bv
    ck, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = bv.VAE(prior=bv.GaussianPrior(2), likelihood=bv.Bernoulli(), decoder=bv.MLP(2, 64, hidden=(16,)))
    guide = bv.AmortizedGuide(model, hidden=(16,))
    x = torch.as_tensor(bv.datasets.digits(binarize=True).x[:64], dtype=torch.float32)
    print("START", flush=True)
    # long enough (about 10 s) that no run between kills of at most 1.5 s can finish it
    bv.fit(model, guide, x, epochs=400, batch_size=32, seed=0, checkpoint=ck, resume=True, progress=False)
    torch.save([p.detach() for p in [*model.parameters(), *guide.parameters()]], out)
    print("DONE", flush=True)
""")


def _run(script, ck, out, *, kill_after=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, str(script), str(ck), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if kill_after is None:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-2000:]
        return True
    line = proc.stdout.readline()  # wait until the imports are done: kill during the fit
    assert line.startswith("START"), proc.stderr.read()[-2000:]
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    return proc.returncode == 0


@pytest.mark.slow
def test_sigkill_campaign_resumes_bit_identical(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    _run(script, tmp_path / "reference", tmp_path / "reference.pt")
    rng = random.Random(0)
    kills = 0
    while kills < 20:
        finished = _run(script, tmp_path / "ck", tmp_path / "resumed.pt", kill_after=rng.uniform(0.05, 1.5))
        if (tmp_path / "resumed.pt").exists() or finished:
            break
        kills += 1
    _run(script, tmp_path / "ck", tmp_path / "resumed.pt")
    assert kills >= 20
    reference = torch.load(tmp_path / "reference.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert all(torch.equal(a, b) for a, b in zip(reference, resumed))
    assert not list((tmp_path / "ck").glob(".*.tmp")), "an interrupted write left a temporary file"
