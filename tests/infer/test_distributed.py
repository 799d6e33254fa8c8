"""Data-parallel fitting over torch.distributed processes (gloo on CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import bayesvae as bv

WORLD = 2


def _linear_model():
    torch.manual_seed(0)
    return bv.VAE(prior=bv.GaussianPrior(2), likelihood=bv.Gaussian(scale=0.5), decoder=bv.MLP(2, 6, hidden=())).double()


def _exact_guide(model):
    """The exact posterior of the linear-Gaussian model, differentiable in the model's weights.

    Then log p(x, z) - log q(z | x) = log p(x) for every reparameterized z as a function of the
    parameters, so the loss *and its gradient* are deterministic.
    """
    import pyro
    import pyro.distributions as pdist

    from bayesvae.models.vae import data_plate

    def guide(x, *, index=None, num_data=None):
        lin = model.decoder.net[-1]
        w, b = lin.weight, lin.bias
        cov = torch.linalg.inv(torch.eye(2, dtype=x.dtype) + w.T @ w / 0.25)
        with data_plate(x.shape[0], index, num_data):
            pyro.sample("z", pdist.MultivariateNormal((x - b) @ w @ cov / 0.25, covariance_matrix=cov))

    return guide


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(64, 6, generator=g, dtype=torch.float64) * 2 + 1


def _worker(rank, path, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=WORLD)
    try:
        model = _linear_model()
        if rank == 1:  # different initial values: fit must broadcast rank 0's
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(1.0)
        result = bv.fit(model, _exact_guide(model), _data(), epochs=3, batch_size=16, lr=0.05, seed=0, distributed=True)
        torch.save({"params": [p.detach() for p in model.parameters()], "elbo": result.history["elbo"].tolist()}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_replicas_match_a_single_process_fit(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path / "out")), nprocs=WORLD, join=True)
    runs = [torch.load(tmp_path / f"out.{r}", weights_only=True) for r in range(WORLD)]
    # replicas stay identical
    for a, b in zip(runs[0]["params"], runs[1]["params"]):
        assert torch.equal(a, b)
    # with a deterministic loss, averaging the replicas' gradients is exactly the gradient of
    # the whole minibatch: the same trajectory as one process (up to float64 summation order)
    model = _linear_model()
    single = bv.fit(model, _exact_guide(model), _data(), epochs=3, batch_size=16, lr=0.05, seed=0)
    for a, b in zip(runs[0]["params"], model.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(torch.tensor(runs[0]["elbo"]), torch.tensor(single.history["elbo"].tolist()), rtol=1e-9, atol=1e-9)


def test_distributed_without_a_process_group_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    model = _linear_model()
    with pytest.raises(ValueError, match="launch with torchrun"):
        bv.fit(model, _exact_guide(model), _data(), epochs=1, distributed=True)


@pytest.mark.slow
def test_torchrun_launch(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import torch, bayesvae as bv
        torch.set_num_threads(1)
        data = bv.datasets.digits(binarize=True)
        torch.manual_seed(0)
        model = bv.VAE(prior=bv.GaussianPrior(4), likelihood=bv.Bernoulli(), decoder=bv.MLP(4, 64, hidden=(32,)))
        guide = bv.AmortizedGuide(model, hidden=(32,))
        fit = bv.fit(model, guide, data, epochs=3, batch_size=128, seed=0, distributed=True)
        import torch.distributed as dist
        if dist.get_rank() == 0:
            print("ELBO", fit.history["elbo"].iloc[0], fit.history["elbo"].iloc[-1])
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    first, last = map(float, result.stdout.split("ELBO")[1].split())
    assert last > first


def _vae_worker(rank, path, out, ckpt, epochs, resume):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)
        model = bv.VAE(prior=bv.GaussianPrior(2), likelihood=bv.Bernoulli(), decoder=bv.MLP(2, 64, hidden=(16,)))
        guide = bv.AmortizedGuide(model, hidden=(16,))
        x = torch.as_tensor(bv.datasets.digits(binarize=True).x[:256], dtype=torch.float32)
        bv.fit(model, guide, x, epochs=epochs, batch_size=64, seed=0, distributed=True, checkpoint=ckpt, resume=resume, overwrite=not resume, jit=False)
        torch.save([p.detach() for p in [*model.parameters(), *guide.parameters()]], f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_resume_is_bit_identical(tmp_path):
    """A stochastic loss: each process's own sampling stream is checkpointed and restored."""
    mp.spawn(_vae_worker, args=(str(tmp_path / "s1"), str(tmp_path / "full"), str(tmp_path / "ck1"), 4, False), nprocs=WORLD, join=True)
    mp.spawn(_vae_worker, args=(str(tmp_path / "s2"), str(tmp_path / "half"), str(tmp_path / "ck2"), 2, False), nprocs=WORLD, join=True)
    mp.spawn(_vae_worker, args=(str(tmp_path / "s3"), str(tmp_path / "resumed"), str(tmp_path / "ck2"), 4, True), nprocs=WORLD, join=True)
    full = torch.load(tmp_path / "full.0", weights_only=True)
    resumed = torch.load(tmp_path / "resumed.0", weights_only=True)
    assert all(torch.equal(a, b) for a, b in zip(full, resumed))


def _stalling_worker(rank, path, out):
    import signal
    import time

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=WORLD, timeout=__import__("datetime").timedelta(seconds=20))
    model = _linear_model()

    def stall(record):
        if rank == 1:
            os.kill(os.getpid(), signal.SIGSTOP)

    t0 = time.perf_counter()
    try:
        bv.fit(model, _exact_guide(model), _data(), epochs=3, batch_size=16, lr=0.05, seed=0, distributed=True, distributed_timeout=20, callback=stall)
        message = "returned"
    except RuntimeError as exc:
        message = str(exc)
    with open(f"{out}.{rank}", "w") as f:
        f.write(f"{time.perf_counter() - t0:.1f}\n{message}")
    os._exit(0)


@pytest.mark.slow
def test_a_stalled_rank_fails_the_others_within_the_timeout(tmp_path):
    import signal
    import time

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_stalling_worker, args=(r, str(tmp_path / "store"), str(tmp_path / "out"))) for r in range(WORLD)]
    for p in procs:
        p.start()
    deadline = time.time() + 120
    while not (tmp_path / "out.0").exists() and time.time() < deadline:
        time.sleep(0.5)
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGCONT)
            os.kill(p.pid, signal.SIGKILL)
        p.join(10)
    seconds, message = (tmp_path / "out.0").read_text().split("\n", 1)
    assert "did not respond within the 20" in message, message
    assert float(seconds) < 90
