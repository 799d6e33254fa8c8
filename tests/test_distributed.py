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
