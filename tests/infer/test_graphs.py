"""Captured training steps (``fit(..., cuda_graphs=...)``, :mod:`bayesvae.infer.graphs`).

On a CPU the step is "captured" with :class:`StandInGraph`, which runs the same tensor code
the CUDA graph records -- static input buffers, the traced loss, backward, the on-device
non-finite flag, fused Adam with ``found_inf``, the device counters -- at every replay. These
tests pin that code: a captured fit is bit-identical to the uncaptured one, a non-finite
step is never applied and is counted, and the non-finite policy is applied at the epoch's
end. The CUDA tests at the bottom run the real capture and skip without a GPU.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import bayesvae as bv
from bayesvae.convention import Batch
from bayesvae.infer import graphs
from bayesvae.infer.step import init_state
from bayesvae.objectives import make_elbo
from tests._tutorial import TutorialVAE

N, D = 103, 12  # 103 rows at batch 10: ten full batches (captured) and a partial one (eager)


def binary(n=N, d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, d, generator=g) < 0.3).float()


@pytest.fixture
def stand_in(monkeypatch):
    """Let CPU steps be captured, with the stand-in graph."""
    monkeypatch.setattr(graphs, "GRAPH_DEVICE_TYPES", ("cuda", "cpu"))
    monkeypatch.setattr(graphs, "GRAPH", graphs.StandInGraph)


class PoisonedVAE(TutorialVAE):
    """The tutorial VAE, whose likelihood overflows to inf for rows whose covariate is huge."""

    def model(self, x, poison):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1))
            probs = self.decoder(z)
            extra = (poison * poison * poison).unsqueeze(-1)  # 0, or inf in float32
            pyro.sample("obs", dist.Bernoulli(probs, validate_args=False).to_event(1), obs=x)
            pyro.sample("penalty", dist.Normal(extra, 1.0).to_event(1), obs=torch.zeros_like(extra))

    def guide(self, x, poison):
        super().guide(x)


def fresh(cls=TutorialVAE, seed=0):
    torch.manual_seed(seed)
    return cls(z_dim=3, hidden_dim=16, input_dim=D)


def test_captured_fit_is_bit_identical_to_the_uncaptured_one(stand_in):
    x = binary()
    runs, vaes = {}, {}
    for graphs_on in (False, True):
        vae = vaes[graphs_on] = fresh()
        runs[graphs_on] = bv.fit(vae.model, vae.guide, x, epochs=3, batch_size=10, seed=3, cuda_graphs=graphs_on, progress=False)
    off, on = runs[False], runs[True]
    assert on.config.cuda_graphs and not off.config.cuda_graphs
    assert on.config.optimizer == "adam-fused"
    assert on.history["elbo"].tolist() == off.history["elbo"].tolist()
    a, b = dict(vaes[False].named_parameters()), dict(vaes[True].named_parameters())
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_a_learning_rate_change_captures_a_new_graph(stand_in):
    x = binary()
    runs = {}
    for graphs_on in (False, True):
        vae = fresh()
        runs[graphs_on] = bv.fit(vae.model, vae.guide, x, epochs=4, batch_size=10, seed=1, lr=bv.infer.StagedLR(lr0=3e-3, stages=3, growth=1), cuda_graphs=graphs_on, progress=False)
    assert runs[True].history["lr"].tolist() == runs[False].history["lr"].tolist()
    assert len(set(runs[True].history["lr"])) > 1
    assert runs[True].history["elbo"].tolist() == runs[False].history["elbo"].tolist()


def _state_and_step(seed=0, device="cpu"):
    vae = fresh(PoisonedVAE, seed).to(device)
    x = binary().to(device)
    poison = torch.zeros(N, device=device)
    first = Batch(x=x[:10], index=torch.arange(10, device=device), num_data=N, covariates={"poison": poison[:10]})
    objective = make_elbo("trace", num_particles=1, model=vae.model)
    state = init_state(vae.model, vae.guide, objective, first, lr=1e-2, jit=True, check_jit=True)
    return vae, x, poison, state, graphs.CapturedStep(state, graph_factory=graphs.StandInGraph)


def test_a_non_finite_captured_step_is_not_applied_and_is_counted():
    vae, x, poison, state, captured = _state_and_step()
    assert state.optimizer.param_groups[0]["fused"]

    def batch(rows, bad=False):
        p = poison[rows].clone()
        if bad:
            p[0] = 1e30  # (1e30)^3 overflows: an infinite loss and gradients
        return Batch(x=x[rows], index=rows, num_data=N, covariates={"poison": p})

    rows = torch.arange(10, 20)
    loss = captured(batch(rows))
    assert loss is not None and math.isfinite(float(loss)) and float(loss) > 0
    before = [p.detach().clone() for p in state.params]
    moments = {k: {n: v.clone() for n, v in st.items()} for k, st in state.optimizer.state.items()}
    loss = captured(batch(rows, bad=True))
    assert float(loss) == 0.0  # masked: the epoch's ELBO leaves this step out
    for p, q in zip(state.params, before):
        assert torch.equal(p.detach(), q)  # parameters untouched ...
    for k, st in state.optimizer.state.items():
        for n, v in st.items():
            assert torch.equal(v, moments[k][n]), n  # ... and Adam's moments and step count too
    captured(batch(rows, bad=True))
    counts = captured.drain()
    assert (counts.replays, counts.skipped, counts.max_consecutive, counts.consecutive_at_end) == (3, 2, 2, 2)
    captured(batch(rows))  # an applied update ends the run of skips
    assert not all(torch.equal(p.detach(), q) for p, q in zip(state.params, before))
    counts = captured.drain()
    assert (counts.replays, counts.skipped, counts.max_consecutive, counts.consecutive_at_end) == (1, 0, 2, 0)
    assert captured.drain().max_consecutive == 0


def _poisoned_fit(on_nonfinite, graphs_on, seed=2, epochs=3, vae=None):
    x = binary()
    # a row first drawn in the 5th minibatch of epoch 1: after the warm-up, so a captured step
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(seed))
    poison = torch.zeros(N)
    poison[perm[45]] = 1e30
    vae = vae or fresh(PoisonedVAE)
    return bv.fit(vae.model, vae.guide, x, covariates={"poison": poison}, epochs=epochs, batch_size=10, seed=seed, cuda_graphs=graphs_on, on_nonfinite=on_nonfinite, progress=False)


def test_captured_skip_policy_matches_the_uncaptured_one(stand_in):
    off = _poisoned_fit("skip", False)
    vae = fresh(PoisonedVAE)
    on = _poisoned_fit("skip", True, vae=vae)
    assert on.config.cuda_graphs
    assert on.history["skipped"].tolist() == off.history["skipped"].tolist() == [1, 1, 1]
    assert on.history["elbo"].tolist() == off.history["elbo"].tolist()
    assert all(torch.isfinite(p).all() for p in vae.parameters())


def test_captured_stop_policy_fails_at_the_epochs_end_with_finite_parameters(stand_in):
    vae = fresh(PoisonedVAE)
    with pytest.raises(bv.DivergenceError, match=r"1 of the \d+ captured steps of epoch 1 had a non-finite loss or gradient") as err:
        _poisoned_fit("stop", True, vae=vae)
    assert err.value.result.history.empty  # no epoch was completed
    assert all(torch.isfinite(p).all() for p in vae.parameters())
    with pytest.raises(bv.DivergenceError, match="non-finite"):  # uncaptured: at the step itself
        _poisoned_fit("stop", False)


def test_cuda_graphs_true_is_refused_where_it_cannot_run():
    vae = fresh()
    with pytest.raises(ValueError, match="cuda_graphs=True needs a CUDA device"):
        bv.fit(vae.model, vae.guide, binary(), epochs=1, cuda_graphs=True, progress=False)
    with pytest.raises(ValueError, match="cuda_graphs must be True or False"):
        bv.fit(vae.model, vae.guide, binary(), epochs=1, cuda_graphs="yes", progress=False)


def test_cuda_graphs_true_names_why_a_step_cannot_be_captured(stand_in):
    vae = fresh()
    with pytest.raises(ValueError, match="cannot be captured: the loss is not traced"):
        bv.fit(vae.model, vae.guide, binary(), epochs=1, batch_size=10, jit=False, cuda_graphs=True, progress=False)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_captured_fit_trains_like_the_uncaptured_one():
    """Real capture: same model, seeds and data; the ELBO curves agree to Monte Carlo noise."""
    x = binary(n=2000, d=D).cuda()
    elbos = {}
    for graphs_on in (False, True):
        vae = fresh()
        r = bv.fit(vae.model, vae.guide, x, epochs=15, batch_size=50, lr=3e-3, seed=0, device="cuda", cuda_graphs=graphs_on, progress=False)
        assert r.config.optimizer == "adam-fused"
        assert r.config.cuda_graphs == graphs_on
        elbos[graphs_on] = r.history["elbo"].to_numpy()
    # both improve by the same amount: final ELBOs within 2% (noise at 2000 rows x 15 epochs)
    assert elbos[True][-1] > elbos[True][0] + 0.5
    assert abs(elbos[True][-1] - elbos[False][-1]) < 0.02 * abs(elbos[False][-1])


@cuda
def test_cuda_captured_step_skips_a_non_finite_update():
    vae, x, poison, state, _ = _state_and_step(device="cuda")
    captured = graphs.CapturedStep(state)  # the real CUDA graph
    rows = torch.arange(10, 20, device="cuda")
    good = Batch(x=x[rows], index=rows, num_data=N, covariates={"poison": poison[rows]})
    p = poison[rows].clone()
    p[0] = 1e30
    bad = Batch(x=x[rows], index=rows, num_data=N, covariates={"poison": p})
    with graphs.warmup_stream(torch.device("cuda")):
        for _ in range(graphs.WARMUP_STEPS):
            bv.infer.step(state, good)
    captured(good)
    before = [q.detach().clone() for q in state.params]
    assert float(captured(bad)) == 0.0
    assert all(torch.equal(a.detach(), b) for a, b in zip(state.params, before))
    assert captured.drain().skipped == 1
