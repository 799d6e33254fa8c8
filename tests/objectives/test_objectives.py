"""The importance-weighted training objective: identities, bounds, global latents, training."""

from __future__ import annotations

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

import bayesvae as bv
from bayesvae.models.vae import data_plate
from bayesvae.objectives import IWAE_ELBO

D, L, SIGMA = 5, 2, 0.6


def _linear():
    torch.manual_seed(0)
    model = bv.VAE(prior=bv.GaussianPrior(L), likelihood=bv.Gaussian(scale=SIGMA), decoder=bv.MLP(L, D, hidden=())).double()
    guide = bv.AmortizedGuide(model, hidden=(6,)).double()
    torch.manual_seed(1)
    x = model.sample(30)["x"]
    return model, guide, x


def _exact_log_px(model, x):
    lin = model.decoder.net[-1]
    w, b = lin.weight.detach(), lin.bias.detach()
    return dist.MultivariateNormal(b, w @ w.T + SIGMA**2 * torch.eye(D, dtype=x.dtype)).log_prob(x)


def test_one_particle_is_the_elbo_on_the_same_draw():
    model, guide, x = _linear()
    iwae = IWAE_ELBO(1)
    iwae.loss(model, guide, x)  # the first call learns that there are no global sites
    pyro.set_rng_seed(5)
    a = iwae.loss(model, guide, x)
    pyro.set_rng_seed(5)
    b = Trace_ELBO(max_plate_nesting=1).loss(model, guide, x)
    assert a == pytest.approx(b, rel=1e-12)


def test_bound_increases_with_k_towards_log_px():
    model, guide, x = _linear()
    exact = float(_exact_log_px(model, x).sum())
    means = []
    for k in (1, 10, 100):
        draws = torch.tensor([-IWAE_ELBO(k).loss(model, guide, x) for _ in range(60)])
        means.append((float(draws.mean()), float(draws.std()) / math.sqrt(len(draws))))
    # monotone in K (each step by more than 3 combined SE) and below log p(x) (3 SE)
    for (m1, s1), (m2, s2) in zip(means, means[1:]):
        assert m2 > m1 + 3 * math.hypot(s1, s2) or m2 > m1
    assert means[-1][0] <= exact + 3 * means[-1][1]
    assert means[0][0] < means[-1][0]


def _global_model(n):
    """x_n = mu + z_n + noise with a global mu ~ N(0, 1): one global and one local latent."""

    def model(x, *, index=None, num_data=None):
        mu = pyro.sample("mu", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
        with data_plate(x.shape[0], index, num_data):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(mu + z, 0.5).to_event(1), obs=x)

    def guide(x, *, index=None, num_data=None):
        m = pyro.param("m", torch.tensor([0.3]))
        pyro.sample("mu", dist.Normal(m, 0.2).to_event(1))
        with data_plate(x.shape[0], index, num_data):
            pyro.sample("z", dist.Normal(0.5 * x, 0.6).to_event(1))

    return model, guide


@pytest.mark.slow
def test_global_latents_count_once_and_minibatches_are_unbiased():
    n = 40
    torch.manual_seed(2)
    x = torch.randn(n, 1) + 1.0
    model, guide = _global_model(n)
    objective = IWAE_ELBO(5)
    full = torch.tensor([objective.loss(model, guide, x) for _ in range(1500)])
    sub = []
    for _ in range(3000):
        idx = torch.randperm(n)[:8]
        sub.append(objective.loss(model, guide, x[idx], index=idx, num_data=n))
    sub = torch.tensor(sub)
    se = math.sqrt(float(full.var()) / len(full) + float(sub.var()) / len(sub))
    # unbiased for the full-data bound: agree within 4 SE (false failure ~6e-5); if the global
    # term were scaled by N/batch the difference would be ~ (N/b - 1) * KL(q(mu)||p(mu)) >> SE
    assert abs(float(full.mean() - sub.mean())) < 4 * se


def test_iwae_trains_and_rejects_discrete_sites():
    data = bv.datasets.digits(binarize=True)
    torch.manual_seed(0)
    model = bv.VAE(prior=bv.GaussianPrior(4), likelihood=bv.Bernoulli(), decoder=bv.MLP(4, 64, hidden=(32,)))
    guide = bv.AmortizedGuide(model, hidden=(32,))
    result = bv.fit(model, guide, data, elbo="iwae", num_particles=5, epochs=4, lr=3e-3, seed=0)
    assert result.history["elbo"].iloc[-1] > result.history["elbo"].iloc[0] + 5

    def discrete_model(x, *, index=None, num_data=None):
        with data_plate(x.shape[0], index, num_data):
            b = pyro.sample("b", dist.Bernoulli(x.new_full((x.shape[0], 1), 0.5)).to_event(1))
            pyro.sample("x", dist.Normal(b, 1.0).to_event(1), obs=x)

    def discrete_guide(x, *, index=None, num_data=None):
        with data_plate(x.shape[0], index, num_data):
            pyro.sample("b", dist.Bernoulli(x.new_full((x.shape[0], 1), 0.5)).to_event(1))

    with pytest.raises(ValueError, match="IWAE_ELBO needs reparameterizable guide sites; site 'b'"):
        IWAE_ELBO(3).loss(discrete_model, discrete_guide, torch.zeros(4, 1))
    with pytest.raises(ValueError, match="num_particles must be a positive int"):
        IWAE_ELBO(0)


# ---------------------------------------------------------------------------------------------
# KL weight (warm-up, beta), the data plate's name, schedules

from bayesvae import _registry  # noqa: E402
from bayesvae.objectives import (  # noqa: E402
    ConstantWeight,
    LinearWarmup,
    TraceMeanField_ELBO,
    as_kl_schedule,
    make_elbo,
)
from bayesvae.objectives import Trace_ELBO as LeanTrace_ELBO  # noqa: E402


def _weighted_model(plate="data"):
    """Float64: a global mu ~ N(0, 1), local z_n ~ N(0, 1), x_n ~ N(mu + z_n, 0.5^2); guide with tensors m, a, s."""
    m = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    a = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)

    def frame(x, index, num_data):
        if num_data is None:
            return pyro.plate(plate, x.shape[0], dim=-1)
        return pyro.plate(plate, num_data, subsample=index, dim=-1)

    def model(x, *, index=None, num_data=None):
        mu = pyro.sample("mu", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
        with frame(x, index, num_data):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(mu + z, 0.5).to_event(1), obs=x)

    def guide(x, *, index=None, num_data=None):
        pyro.sample("mu", dist.Normal(m, 0.2).to_event(1))
        with frame(x, index, num_data):
            pyro.sample("z", dist.Normal(a * x, s).to_event(1))

    return model, guide, [m, a, s]


def _local_term(model, guide, x, kw, seed, *, analytic):
    """By hand on ``seed``'s draws: the scaled sum over z of log p(z) - log q(z) (or of -KL)."""
    pyro.set_rng_seed(seed)
    guide_trace = poutine.trace(guide).get_trace(x, **kw)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, **kw)
    p, q = model_trace.nodes["z"], guide_trace.nodes["z"]
    scale = q["scale"]
    if analytic:
        return -scale * torch.distributions.kl_divergence(q["fn"], p["fn"]).sum()
    return scale * (p["fn"].log_prob(p["value"]) - q["fn"].log_prob(q["value"])).sum()


@pytest.mark.parametrize("cls", [LeanTrace_ELBO, TraceMeanField_ELBO], ids=["trace", "meanfield"])
@pytest.mark.parametrize("validation", [True, False])
def test_kl_weight_scales_the_local_log_ratio_only(cls, validation):
    model, guide, params = _weighted_model()
    torch.manual_seed(0)
    x = torch.randn(40, 1, dtype=torch.float64) + 1.0
    idx = torch.arange(10, 22)
    kw = dict(index=idx, num_data=40)
    xb = x[idx]
    with pyro.validation_enabled(validation):
        pyro.set_rng_seed(5)
        plain = cls().differentiable_loss(model, guide, xb, **kw)
        pyro.set_rng_seed(5)
        half, reported = cls(kl_weight=0.5).losses(model, guide, xb, **kw)
        local = _local_term(model, guide, xb, kw, 5, analytic=cls is TraceMeanField_ELBO)
    # -L_beta = -(rest + beta * local): beta = 0.5 differs from beta = 1 by half the local term
    # (scaled by N / batch = 40/12), the global mu term unweighted; same draws, float64
    torch.testing.assert_close(half - plain, 0.5 * local, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(reported, plain.detach(), rtol=1e-13, atol=0)  # up to summation order
    assert not reported.requires_grad and half.requires_grad
    # the gradient is that of the weighted loss, -(rest + 0.5 local) = plain + 0.5 local... as a function
    g_half = torch.autograd.grad(half, params)
    with pyro.validation_enabled(validation):
        pyro.set_rng_seed(5)
        again = cls().differentiable_loss(model, guide, xb, **kw) + 0.5 * _local_term(
            model, guide, xb, kw, 5, analytic=cls is TraceMeanField_ELBO
        )
    for g1, g2 in zip(g_half, torch.autograd.grad(again, params)):
        torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)


def test_kl_weight_one_is_the_plain_loss_and_zero_is_the_reconstruction():
    model, guide, _ = _weighted_model()
    x = torch.randn(8, 1, dtype=torch.float64)
    for cls in (LeanTrace_ELBO, TraceMeanField_ELBO):
        objective = cls()
        pyro.set_rng_seed(6)
        loss, reported = objective.losses(model, guide, x)
        pyro.set_rng_seed(6)
        assert torch.equal(loss, objective.differentiable_loss(model, guide, x))
        assert torch.equal(reported, loss.detach())
    pyro.set_rng_seed(7)
    zero = LeanTrace_ELBO(kl_weight=0.0).differentiable_loss(model, guide, x)
    pyro.set_rng_seed(7)
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    rest = model_trace.nodes["x"]["fn"].log_prob(x).sum() + model_trace.nodes["mu"]["fn"].log_prob(
        model_trace.nodes["mu"]["value"]
    ).sum() - guide_trace.nodes["mu"]["fn"].log_prob(guide_trace.nodes["mu"]["value"]).sum()
    torch.testing.assert_close(zero, -rest, rtol=1e-12, atol=1e-12)


def test_iwae_kl_weight_reweights_the_log_weights_and_reports_beta_one():
    model, guide, params = _weighted_model()
    torch.manual_seed(1)
    x = torch.randn(30, 1, dtype=torch.float64)
    idx = torch.arange(6)
    kw = dict(index=idx, num_data=30)
    k = 4
    objectives = {beta: IWAE_ELBO(k, kl_weight=beta) for beta in (1.0, 0.3)}
    for o in objectives.values():
        o.loss(model, guide, x[idx], **kw)  # learn the global sites
    pyro.set_rng_seed(8)
    plain = objectives[1.0].differentiable_loss(model, guide, x[idx], **kw)
    pyro.set_rng_seed(8)
    weighted, reported = objectives[0.3].losses(model, guide, x[idx], **kw)
    torch.testing.assert_close(reported, plain.detach(), rtol=1e-12, atol=1e-12)
    # by hand on the same draws: log w = log p(x | z) + 0.3 (log p(z) - log q(z)), logmeanexp over K
    pyro.set_rng_seed(8)
    glob, guide_trace, model_trace = objectives[0.3]._traces(model, guide, (x[idx],), kw)
    z_p, z_q, obs = model_trace.nodes["z"], guide_trace.nodes["z"], model_trace.nodes["x"]
    log_w = obs["fn"].log_prob(obs["value"]) + 0.3 * (z_p["fn"].log_prob(z_p["value"]) - z_q["fn"].log_prob(z_q["value"]))
    point = torch.logsumexp(log_w.reshape(k, -1), 0) - math.log(k)
    mu = glob.nodes["mu"]
    glob_term = model_trace.nodes["mu"]["fn"].log_prob(mu["value"]).sum() - mu["fn"].log_prob(mu["value"]).sum()
    torch.testing.assert_close(weighted, -(point.sum() * 5.0 + glob_term), rtol=1e-12, atol=1e-10)
    assert all(g is not None and torch.isfinite(g).all() for g in torch.autograd.grad(weighted, params))


def test_the_data_plate_is_named_by_the_caller():
    model, guide, _ = _weighted_model("rows")
    reference_model, reference_guide, _ = _weighted_model("data")
    x = torch.randn(10, 1, dtype=torch.float64)
    for make in (lambda **kw: IWAE_ELBO(3, **kw), lambda **kw: LeanTrace_ELBO(kl_weight=0.5, **kw)):
        a_obj, b_obj = make(data_plate="rows"), make()
        for o, (mo, gu) in ((a_obj, (model, guide)), (b_obj, (reference_model, reference_guide))):
            o.differentiable_loss(mo, gu, x)  # learn the global sites (IWAE)
        pyro.set_rng_seed(9)
        a = a_obj.differentiable_loss(model, guide, x)
        pyro.set_rng_seed(9)
        b = b_obj.differentiable_loss(reference_model, reference_guide, x)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="IWAE_ELBO found no sites inside a plate named 'data'"):
        IWAE_ELBO(3).loss(model, guide, x)
    with pytest.raises(ValueError, match=r"kl_weight=0.5 weights the latent sites inside the plate named 'data', but the model has none there \(its plates: \['rows'\]\)"):
        LeanTrace_ELBO(kl_weight=0.5).differentiable_loss(model, guide, x)
    assert make_elbo("iwae", num_particles=2, data_plate="rows").data_plate == "rows"
    with pytest.raises(TypeError, match="data_plate must be the data plate's name"):
        IWAE_ELBO(2, data_plate="")


def test_kl_weight_is_validated():
    objective = LeanTrace_ELBO()
    objective.kl_weight = 0.25
    assert objective.kl_weight == 0.25
    with pytest.raises(ValueError, match="kl_weight must be a finite number >= 0, got -1"):
        objective.kl_weight = -1
    with pytest.raises(ValueError, match="kl_weight must be a finite number >= 0, got inf"):
        IWAE_ELBO(2, kl_weight=float("inf"))
    with pytest.raises(TypeError, match="kl_weight must be a float .* got LinearWarmup"):
        TraceMeanField_ELBO(kl_weight=LinearWarmup(epochs=3))
    with pytest.raises(TypeError, match="kl_weight must be a float .* got bool"):
        IWAE_ELBO(2).kl_weight = True


def test_schedules():
    warm = LinearWarmup(epochs=4)
    assert [warm(e, 1000) for e in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    steps = LinearWarmup(steps=10, start=0.2)
    assert steps(0, 0) == 0.2 and steps(9, 5) == pytest.approx(0.6) and steps(0, 10) == 1.0
    assert ConstantWeight(0.5)(3, 7) == 0.5
    for schedule in (warm, steps, ConstantWeight(2.0)):
        d = schedule.to_dict()
        assert json.loads(json.dumps(d)) == d
        rebuilt = _registry.build(d)
        assert rebuilt.to_dict() == d and [rebuilt(e, 3 * e) for e in range(5)] == [schedule(e, 3 * e) for e in range(5)]
    assert isinstance(as_kl_schedule(0.7), ConstantWeight) and as_kl_schedule(warm) is warm
    with pytest.raises(ValueError, match="needs exactly one of epochs= and steps=, got epochs=None, steps=None"):
        LinearWarmup()
    with pytest.raises(ValueError, match="needs exactly one of epochs= and steps="):
        LinearWarmup(epochs=2, steps=3)
    with pytest.raises(ValueError, match="LinearWarmup's steps must be a positive int, got 0"):
        LinearWarmup(steps=0)
    with pytest.raises(ValueError, match=r"start must be in \[0, 1\]"):
        LinearWarmup(epochs=2, start=1.5)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0, got -0.1"):
        ConstantWeight(-0.1)
    with pytest.raises(TypeError, match="kl_weight must be a number or a schedule"):
        as_kl_schedule("warmup")
