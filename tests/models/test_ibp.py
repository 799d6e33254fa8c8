"""Tests of the Indian buffet process prior, its indicator estimators and its guide head.

Kinds: known answers (IBP prior moments, the Bernoulli KL), same-seed exact gradients (the
estimator each site actually gets under Trace_ELBO / TraceMeanField_ELBO), a reference
oracle (quadrature for the relaxed surrogate's mean), and the bars acceptance experiment.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import kl_divergence
from torch.distributions.relaxed_bernoulli import (
    LogitRelaxedBernoulli as TorchLogitRelaxedBernoulli,
)

import bayesvae as bv
from bayesvae._registry import build
from bayesvae.distributions import BernoulliSurrogate, LogitRelaxedBernoulli, bernoulli_kl
from bayesvae.guides import AmortizedGuide
from bayesvae.guides.ibp import IndicatorHead
from bayesvae.models import VAE, Bernoulli, Gaussian, GaussianPrior
from bayesvae.models.ibp import (
    NU,
    A,
    B,
    ConcreteRelaxation,
    ExactBernoulli,
    IBPPrior,
    IndicatorEstimator,
    RelaxedBernoulliKL,
    TemperatureSchedule,
    feature_usage,
    stick_logits,
)
from bayesvae.models.priors import LocalSite
from bayesvae.nn import MLP
from bayesvae.plots import plot_feature_usage

ESTIMATORS = [RelaxedBernoulliKL, ConcreteRelaxation, ExactBernoulli]


def _hard(estimator_cls, value: torch.Tensor) -> torch.Tensor:
    """The binary indicator of a site value: b itself, or 1[y > 0] for a logit-space one."""
    return value if estimator_cls is ExactBernoulli else (value > 0).to(value.dtype)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"alpha": 0.0}, ValueError, "alpha must be a positive finite number, got 0.0"),
        ({"alpha": -1.5}, ValueError, "alpha must be a positive finite number, got -1.5"),
        ({"alpha": math.inf}, ValueError, "alpha must be a positive finite number"),
        ({"alpha": "2"}, TypeError, "alpha must be a real number"),
        ({"truncation": 0}, ValueError, r"truncation must be a positive int, got 0"),
        ({"truncation": 2.0}, TypeError, "truncation must be an int"),
        ({"stick_init": 0.0}, ValueError, "stick_init must be a positive finite number"),
        ({"weighted": 1}, TypeError, "weighted must be True or False"),
        ({"estimator": "relaxed"}, TypeError, "estimator must be an IndicatorEstimator"),
    ],
)
def test_ibp_prior_rejects_bad_arguments(kwargs, error, match):
    args = {"alpha": 2.0, "truncation": 5, **kwargs}
    alpha = args.pop("alpha")
    with pytest.raises(error, match=match):
        IBPPrior(alpha, **args)


@pytest.mark.parametrize("cls", [RelaxedBernoulliKL, ConcreteRelaxation])
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"temperature": 0.0}, ValueError, "temperature must be a positive finite number, got 0.0"),
        ({"temperature": -1.0}, ValueError, "temperature must be a positive finite number, got -1.0"),
        ({"final_temperature": 0.0}, ValueError, "final_temperature must be a positive finite number"),
        ({"temperature": 0.5, "final_temperature": 1.0}, ValueError, "final_temperature=1.0 exceeds temperature=0.5"),
        ({"anneal_rate": -0.1}, ValueError, "anneal_rate must be finite and >= 0"),
        ({"anneal_rate": None}, TypeError, "anneal_rate must be a real number"),
    ],
)
def test_estimators_reject_bad_temperatures(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**kwargs)


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="prior_temperature must be a positive finite number"):
        ConcreteRelaxation(prior_temperature=0.0)
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        TemperatureSchedule().set_epoch(-1)
    with pytest.raises(ValueError, match="ExactBernoulli has no temperature"):
        ExactBernoulli().temperature(torch.zeros(()))
    with pytest.raises(TypeError, match="the 'ibp_indicator' head needs the IndicatorSite declared by an IBPPrior"):
        IndicatorHead(LocalSite("b", 3, "ibp_indicator"), 4)


# --------------------------------------------------------------------------- prior moments


def _prior_draws(prior: IBPPrior, num_draws: int, num_rows: int) -> torch.Tensor:
    """``num_draws`` independent IBP matrices of ``num_rows`` rows: values (draws, rows, K)."""
    like = torch.zeros((), dtype=torch.float64)
    with pyro.plate("draws", num_draws, dim=-2):
        globals_ = prior.sample_globals(like=like)
        with pyro.plate("data", num_rows, dim=-1):
            locals_ = prior.sample_locals(num_rows, globals_, like=like)
    return locals_[B]


@pytest.mark.parametrize("estimator_cls", ESTIMATORS)
@pytest.mark.parametrize("truncation", [5, 60])
def test_prior_active_features_per_row(estimator_cls, truncation):
    # E[sum_k b_nk] = sum_{k<=K} E[pi_k] = sum_k (a/(1+a))^k, which tends to alpha as K grows
    # (K = 60: 2 (1 - (2/3)^60), within 1e-10 of alpha = 2). Relaxed values are checked
    # through 1[y > 0], which is exactly Bernoulli(pi). Draws of different matrices are
    # independent, so the per-matrix mean has an honest standard error; 3 SE gives a 0.3 %
    # false-failure rate, and SE ~ 0.02 here catches an off-by-one in the stick product
    # (mean 3 instead of 2) or Beta(1, alpha) sticks (mean 0.5).
    alpha = 2.0
    prior = IBPPrior(alpha, truncation=truncation, estimator=estimator_cls())
    b = _hard(estimator_cls, _prior_draws(prior, 4000, 5))
    assert set(torch.unique(b).tolist()) <= {0.0, 1.0}
    per_matrix = b.sum(-1).mean(-1)
    r = alpha / (1 + alpha)
    expected = sum(r**k for k in range(1, truncation + 1))
    se = per_matrix.std() / math.sqrt(len(per_matrix))
    assert abs(float(per_matrix.mean()) - expected) < 3 * float(se)
    if truncation == 60:
        assert abs(expected - alpha) < 1e-9


@pytest.mark.parametrize("estimator_cls", [RelaxedBernoulliKL, ExactBernoulli])
def test_prior_distinct_features_among_rows(estimator_cls):
    # E[K+] among N rows = alpha * H_N for the IBP (Griffiths & Ghahramani 2011, eq. 11);
    # with K = 60 the truncation misses at most N r^61 / (1 - r) < 1e-9 features. 3 SE as
    # above; SE ~ 0.03 catches e.g. alpha * log N (4.6 instead of 5.86).
    alpha, n = 2.0, 10
    prior = IBPPrior(alpha, truncation=60, estimator=estimator_cls())
    b = _hard(estimator_cls, _prior_draws(prior, 4000, n))
    distinct = (b.amax(dim=-2) > 0).sum(-1).double()
    harmonic = sum(1.0 / i for i in range(1, n + 1))
    se = distinct.std() / math.sqrt(len(distinct))
    assert abs(float(distinct.mean()) - alpha * harmonic) < 3 * float(se)


def test_stick_logits_are_the_cumulative_product():
    nu = torch.tensor([[0.9, 0.5, 0.2, 1.0, 0.0]], dtype=torch.float64)
    logits = stick_logits(nu)
    pi = torch.cumprod(nu.clamp(torch.finfo(nu.dtype).tiny, 1 - torch.finfo(nu.dtype).eps), -1)
    assert torch.isfinite(logits).all()
    assert torch.allclose(torch.nn.functional.logsigmoid(logits), pi.log(), rtol=1e-12, atol=0)
    # A stick at exactly 1 or 0 (Beta draws can round there) still gives finite logits.
    assert torch.isfinite(stick_logits(torch.tensor([1.0, 1.0, 0.0]))).all()


# --------------------------------------------------------------------------- distributions


def test_torch_logit_relaxed_bernoulli_still_reports_no_rsample():
    # Why bayesvae.distributions exists: wrapped as it is, Pyro would score it with the
    # score-function estimator. If torch fixes this, our class is still correct.
    assert TorchLogitRelaxedBernoulli.has_rsample is False
    assert LogitRelaxedBernoulli.has_rsample is True
    assert BernoulliSurrogate.has_rsample is True


def test_logit_relaxed_bernoulli_density():
    logits = torch.tensor([-3.0, 0.0, 2.5], dtype=torch.float64)
    temperature = torch.tensor(0.4, dtype=torch.float64)
    d = LogitRelaxedBernoulli(logits, temperature)
    ref = TorchLogitRelaxedBernoulli(temperature, logits=logits)
    y = torch.linspace(-100, 100, 200001, dtype=torch.float64).unsqueeze(-1)
    lp = d.log_prob(y)
    # same density as torch's where torch's is finite, and normalized (trapezoid rule on a
    # grid whose tails hold < e^-35 of the mass: they decay like exp(-T |y| + |a|)).
    mid = y.abs().squeeze(-1) <= 20
    assert torch.allclose(lp[mid], ref.log_prob(y)[mid], rtol=1e-10, atol=1e-10)
    mass = torch.trapezoid(lp.exp(), y.squeeze(-1), dim=0)
    assert torch.allclose(mass, torch.ones(3, dtype=torch.float64), atol=1e-6)
    # in float32 torch's overflows once |a - T y| > 88; ours stays finite.
    far = torch.tensor([-400.0, 0.0, 400.0])
    d32 = LogitRelaxedBernoulli(logits.float(), 0.4)
    ref32 = TorchLogitRelaxedBernoulli(torch.tensor(0.4), logits=logits.float())
    assert torch.isfinite(d32.log_prob(far)).all()
    assert not torch.isfinite(ref32.log_prob(far)).all()


def test_hard_threshold_of_relaxed_sample_is_exact_bernoulli():
    # P((a + L)/T > 0) = sigmoid(a) at every T; 3 SE of a binomial proportion.
    pyro.set_rng_seed(3)
    logits = torch.tensor([-2.0, 0.3, 1.7])
    n = 200_000
    for t in (0.1, 1.0, 5.0):
        y = LogitRelaxedBernoulli(logits, t).rsample((n,))
        freq = (y > 0).double().mean(0)
        p = torch.sigmoid(logits).double()
        assert (freq - p).abs().max() < 3 * (p * (1 - p) / n).sqrt().max()


def test_bernoulli_kl_registered_for_the_surrogate():
    q_logits = torch.tensor([-4.0, -0.5, 0.0, 2.0, 30.0], dtype=torch.float64)
    p_logits = torch.tensor([-1.0, 1.0, 0.0, -3.0, -30.0], dtype=torch.float64)
    expected = kl_divergence(dist.Bernoulli(logits=q_logits), dist.Bernoulli(logits=p_logits))
    assert torch.allclose(bernoulli_kl(q_logits, p_logits), expected, rtol=1e-12)
    q = BernoulliSurrogate(q_logits, 0.5).to_event(1)
    p = BernoulliSurrogate(p_logits, 0.7).to_event(1)
    assert torch.allclose(kl_divergence(q, p), expected.sum(), rtol=1e-12)
    # the Concrete pair has no closed form: TraceMeanField_ELBO falls back to Monte Carlo
    with pytest.raises(NotImplementedError):
        kl_divergence(LogitRelaxedBernoulli(q_logits, 0.5), LogitRelaxedBernoulli(p_logits, 0.5))


def _surrogate_mean(logits: torch.Tensor, t: float) -> torch.Tensor:
    """Oracle: m = E[sigmoid(Y)], Y ~ LogitRelaxedBernoulli(logits, t), by quadrature."""
    y = torch.linspace(-60 / t, 60 / t, 200001, dtype=torch.float64).unsqueeze(-1)
    dens = LogitRelaxedBernoulli(logits, t).log_prob(y).exp()
    return torch.trapezoid(dens * torch.sigmoid(y), y.squeeze(-1), dim=0)


@pytest.mark.parametrize("t", [0.1, 0.5, 1.0])
def test_trace_elbo_surrogate_kl_has_the_documented_mean(t):
    # Under Trace_ELBO the b-site term of RelaxedBernoulliKL estimates
    # KL_Bern(q || p) + (m - q)(a_q - a_p), with m = E[sigmoid(Y)] (docstring of
    # BernoulliSurrogate); m - q = O(T^2): below 0.16 T^2 + 0.05 T^4 (Taylor bound).
    pyro.set_rng_seed(0)
    a_q = torch.tensor([-2.0, 0.5, 3.0], dtype=torch.float64)
    a_p = torch.tensor([-1.0, -0.5, 1.0], dtype=torch.float64)
    q, p = BernoulliSurrogate(a_q, t), BernoulliSurrogate(a_p, t)
    n = 200_000
    y = q.rsample((n,))
    terms = q.log_prob(y) - p.log_prob(y)
    m = _surrogate_mean(a_q, t)
    expected = bernoulli_kl(a_q, a_p) + (m - torch.sigmoid(a_q)) * (a_q - a_p)
    se = terms.std(0) / math.sqrt(n)
    assert ((terms.mean(0) - expected).abs() < 3 * se).all()
    assert ((m - torch.sigmoid(a_q)).abs() < 0.16 * t**2 + 0.05 * t**4).all()


# --------------------------------------------------------------------------- the estimator each site gets


class _NotReparameterized(BernoulliSurrogate):
    """The failure the issue describes: a relaxed sampler that says has_rsample = False."""

    has_rsample = False


class _BrokenRelaxedKL(RelaxedBernoulliKL):
    def posterior(self, logits):
        return _NotReparameterized(logits, self.temperature(logits)).to_event(1)


def _small_model(estimator, weighted=False, seed=0):
    torch.manual_seed(seed)
    prior = IBPPrior(1.5, truncation=3, weighted=weighted, estimator=estimator)
    model = VAE(prior=prior, likelihood=Gaussian(scale=0.5), decoder=MLP(3, 4)).double()
    guide = AmortizedGuide(model, hidden=(5,)).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    return model, guide, x


def _traces(model, guide, x, seed):
    pyro.set_rng_seed(seed)
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    return model_trace, guide_trace


def _log_prob(site) -> torch.Tensor:
    """Per-datapoint (or scalar, for a global site) log-probability of a trace site."""
    return site["fn"].log_prob(site["value"])


def _hand_trace_elbo_loss(model_trace, guide_trace) -> torch.Tensor:
    """Trace_ELBO's loss written out: value -ELBO, gradient of the surrogate.

    The surrogate keeps the pathwise terms of reparameterized sites and replaces the
    log q of a non-reparameterized site by ``log_r * log q`` (score function, no
    baseline), with log_r per data point = local terms + the broadcast global ones.
    """
    latent = [n for n, s in guide_trace.nodes.items() if s["type"] == "sample"]
    reparam = {n: guide_trace.nodes[n]["fn"].has_rsample for n in latent}
    model_lp = sum(_log_prob(s).sum() for s in model_trace.nodes.values() if s["type"] == "sample")
    value = model_lp - sum(_log_prob(guide_trace.nodes[n]).sum() for n in latent)
    local = _log_prob(model_trace.nodes["x"]) + sum(
        _log_prob(model_trace.nodes[n]) - _log_prob(guide_trace.nodes[n]) for n in latent if n != NU
    )
    log_r = (local + _log_prob(model_trace.nodes[NU]) - _log_prob(guide_trace.nodes[NU])).detach()
    surrogate = model_lp
    for n in latent:
        lq = _log_prob(guide_trace.nodes[n])
        surrogate = surrogate - lq.sum() if reparam[n] else surrogate + (log_r * lq).sum()
    return -value.detach() - (surrogate - surrogate.detach())


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("estimator_cls", ESTIMATORS)
def test_trace_elbo_gradient_is_the_documented_estimator(estimator_cls, weighted):
    # Same seed, same draws: Pyro's Trace_ELBO loss and gradient must equal the hand-written
    # ones, pathwise for nu, a and the relaxed b, score-function for the discrete b.
    model, guide, x = _small_model(estimator_cls(), weighted)
    params = list(guide.parameters()) + list(model.parameters())
    pyro.set_rng_seed(0)
    loss = Trace_ELBO().differentiable_loss(model, guide, x)
    pyro_grads = torch.autograd.grad(loss, params)
    model_trace, guide_trace = _traces(model, guide, x, seed=0)
    site = guide_trace.nodes[B]
    if estimator_cls is ExactBernoulli:
        assert not site["fn"].has_rsample and not site["value"].requires_grad
        assert set(torch.unique(site["value"]).tolist()) <= {0.0, 1.0}
    else:
        assert site["fn"].has_rsample and site["value"].requires_grad
        score = site["fn"].score_parts(site["value"])
        assert isinstance(score.score_function, int) and score.score_function == 0
    hand = _hand_trace_elbo_loss(model_trace, guide_trace)
    assert torch.allclose(loss.detach(), hand.detach(), rtol=1e-10)
    hand_grads = torch.autograd.grad(hand, params)
    for g, h in zip(pyro_grads, hand_grads):
        assert torch.allclose(g, h, rtol=1e-8, atol=1e-10)


def test_the_gradient_test_catches_a_relaxed_site_scored_as_non_reparameterized():
    # The harness above, run on the broken sampler: Pyro then scores the relaxed site with
    # the score function (no pathwise gradient), which differs from the pathwise gradient.
    model, guide, x = _small_model(_BrokenRelaxedKL())
    pyro.set_rng_seed(0)
    loss = Trace_ELBO().differentiable_loss(model, guide, x)
    head = guide.heads[B].linear.weight
    (pyro_grad,) = torch.autograd.grad(loss, [head])
    model, guide, x = _small_model(RelaxedBernoulliKL())
    pyro.set_rng_seed(0)
    loss = Trace_ELBO().differentiable_loss(model, guide, x)
    (pathwise,) = torch.autograd.grad(loss, [guide.heads[B].linear.weight])
    assert not torch.allclose(pyro_grad, pathwise, rtol=1e-3)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("estimator_cls", [RelaxedBernoulliKL, ConcreteRelaxation])
def test_meanfield_elbo_uses_analytic_kl_where_registered(estimator_cls, weighted):
    # TraceMeanField_ELBO: analytic KL for nu (Beta-Beta, torch), a (Normal-Normal, torch)
    # and b under RelaxedBernoulliKL (Bernoulli KL, registered here); Monte Carlo for b
    # under ConcreteRelaxation (no closed form).
    model, guide, x = _small_model(estimator_cls(), weighted)
    pyro.set_rng_seed(0)
    loss = TraceMeanField_ELBO().differentiable_loss(model, guide, x)
    mt, gt = _traces(model, guide, x, seed=0)
    elbo = _log_prob(mt.nodes["x"]).sum() - kl_divergence(gt.nodes[NU]["fn"], mt.nodes[NU]["fn"])
    if estimator_cls is RelaxedBernoulliKL:
        q_logits = gt.nodes[B]["fn"].base_dist.logits
        p_logits = mt.nodes[B]["fn"].base_dist.logits
        elbo = elbo - bernoulli_kl(q_logits, p_logits).sum()
    else:
        elbo = elbo + (_log_prob(mt.nodes[B]) - _log_prob(gt.nodes[B])).sum()
    if weighted:
        elbo = elbo - kl_divergence(gt.nodes[A]["fn"], mt.nodes[A]["fn"]).sum()
    assert torch.allclose(loss.detach(), -elbo.detach(), rtol=1e-10)


def test_meanfield_elbo_refuses_the_discrete_estimator():
    model, guide, x = _small_model(ExactBernoulli())
    with pytest.raises(NotImplementedError, match="reparameterized"):
        TraceMeanField_ELBO().differentiable_loss(model, guide, x)


@pytest.mark.parametrize("weighted", [False, True])
def test_minibatch_scales_local_sites_only(weighted):
    model, guide, _ = _small_model(RelaxedBernoulliKL(), weighted)
    n, idx = 60, torch.tensor([3, 17, 42, 5])
    x = torch.randn(len(idx), 4, dtype=torch.float64)
    guide_trace = poutine.trace(guide).get_trace(x, index=idx, num_data=n)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, index=idx, num_data=n)
    local = [B, "x"] + ([A] if weighted else [])
    for trace in (model_trace, guide_trace):
        assert trace.nodes[NU]["scale"] == 1.0
        for name in local:
            if name in trace.nodes:
                assert trace.nodes[name]["scale"] == pytest.approx(n / len(idx))


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
@pytest.mark.parametrize("estimator_cls", [RelaxedBernoulliKL, ConcreteRelaxation])
def test_vectorized_particles_and_minibatches_on_a_device(estimator_cls, elbo, device):
    # the stick logits broadcast over the particle dimension (-2) and the data plate (-1)
    ds, _ = bv.datasets.bars(120, seed=0)
    pyro.set_rng_seed(0)
    prior = IBPPrior(2.0, truncation=6, weighted=True, estimator=estimator_cls())
    model = VAE(prior=prior, likelihood=Gaussian(scale=0.5), decoder=MLP(6, 36))
    guide = AmortizedGuide(model, hidden=(16,))
    res = bv.fit(model, guide, ds, elbo=elbo, epochs=2, batch_size=40, num_particles=3, device=device, callback=prior.anneal)
    assert np.isfinite(res.history["elbo"]).all()
    with prior.discrete():
        assert math.isfinite(bv.evaluate_elbo(model, guide, ds, num_particles=4))
    assert len(feature_usage(res, ds)) == 6


# --------------------------------------------------------------------------- modes, annealing, persistence


def test_discrete_context_switches_model_and_guide_together():
    model, guide, x = _small_model(RelaxedBernoulliKL())
    prior = model.prior
    relaxed_logits = guide.heads[B].logits(guide.trunk(x))
    with prior.discrete():
        assert prior.temperature is None
        mt, gt = _traces(model, guide, x, seed=2)
        assert isinstance(gt.nodes[B]["fn"].base_dist, dist.Bernoulli)
        assert isinstance(mt.nodes[B]["fn"].base_dist, dist.Bernoulli)
        assert torch.allclose(gt.nodes[B]["fn"].base_dist.logits, relaxed_logits)
        assert set(torch.unique(gt.nodes[B]["value"]).tolist()) <= {0.0, 1.0}
        # the ELBO of the discrete model: proper log-masses, finite
        assert math.isfinite(Trace_ELBO().loss(model, guide, x))
    assert prior.temperature == 1.0
    with pytest.raises(RuntimeError, match="boom"), prior.discrete():
        raise RuntimeError("boom")
    mt, gt = _traces(model, guide, x, seed=2)
    assert isinstance(gt.nodes[B]["fn"].base_dist, BernoulliSurrogate)


def test_annealing_schedule_and_the_guide_follows_it():
    prior = IBPPrior(2.0, truncation=3, estimator=RelaxedBernoulliKL(1.0, 0.3, 0.1))
    model = VAE(prior=prior, likelihood=Gaussian(scale=0.5), decoder=MLP(3, 4))
    guide = AmortizedGuide(model, hidden=())
    x = torch.randn(5, 4)
    for epoch, expected in [(0, 1.0), (5, math.exp(-0.5)), (100, 0.3)]:
        prior.anneal({"epoch": epoch, "elbo": -1.0})
        assert prior.temperature == pytest.approx(expected, rel=1e-12)
        q = poutine.trace(guide).get_trace(x).nodes[B]["fn"].base_dist
        assert torch.allclose(q.temperature, torch.tensor(expected))
    prior.anneal(7)
    state = model.state_dict()
    assert float(state["prior.estimator.schedule.epoch"]) == 7.0
    rebuilt = build(model.to_config())
    assert rebuilt.prior.temperature == 1.0
    rebuilt.load_state_dict(state)
    assert rebuilt.prior.temperature == pytest.approx(math.exp(-0.7))
    assert rebuilt.prior.to_config() == prior.to_config()
    # the guide does not carry a second copy of the schedule
    assert not any("schedule" in k for k in guide.state_dict())


def test_fit_anneals_and_save_load_restores_the_temperature(tmp_path):
    ds, _ = bv.datasets.bars(60, seed=1)
    pyro.set_rng_seed(0)
    prior = IBPPrior(2.0, truncation=6, estimator=ConcreteRelaxation(1.0, 0.5, 0.2, prior_temperature=0.6))
    model = VAE(prior=prior, likelihood=Gaussian(scale=0.5), decoder=MLP(6, 36))
    guide = AmortizedGuide(model, hidden=(16,))
    res = bv.fit(model, guide, ds, epochs=3, batch_size=20, lr=0.01)  # fit advances the schedule itself
    assert prior.temperature == pytest.approx(math.exp(-0.6))
    res.save(tmp_path / "fit")
    loaded = bv.load(tmp_path / "fit")
    assert loaded.model.prior.temperature == pytest.approx(math.exp(-0.6))
    assert loaded.model.prior.to_config() == prior.to_config()
    # the rebuilt guide's head follows the rebuilt prior
    x = torch.as_tensor(ds.x[:5])
    with loaded.model.prior.discrete():
        fn = poutine.trace(loaded.guide).get_trace(x).nodes[B]["fn"]
    assert isinstance(fn.base_dist, dist.Bernoulli)
    e1 = bv.evaluate_elbo(model, guide, ds, seed=3)
    e2 = bv.evaluate_elbo(loaded.model, loaded.guide, ds, seed=3)
    assert e1 == pytest.approx(e2, rel=1e-6)


def test_resume_with_annealing_is_bit_identical(tmp_path):
    ds, _ = bv.datasets.bars(100, seed=0)

    def build_fit():
        pyro.set_rng_seed(0)
        prior = IBPPrior(2.0, truncation=5, estimator=RelaxedBernoulliKL(1.0, 0.1, 0.5))
        model = VAE(prior=prior, likelihood=Gaussian(scale=0.5), decoder=MLP(5, 36))
        return model, AmortizedGuide(model, hidden=(8,))

    model, guide = build_fit()
    full = bv.fit(model, guide, ds, epochs=4, batch_size=50)  # fit anneals by itself
    model, guide = build_fit()
    bv.fit(model, guide, ds, epochs=2, batch_size=50, callback=model.prior.anneal, checkpoint=tmp_path / "ck")
    model, guide = build_fit()
    resumed = bv.fit(
        model, guide, ds, epochs=4, batch_size=50, callback=model.prior.anneal, checkpoint=tmp_path / "ck", resume=True
    )
    np.testing.assert_array_equal(resumed.history["elbo"], full.history["elbo"])


# --------------------------------------------------------------------------- swapping priors


@pytest.fixture(scope="module")
def digits():
    return bv.datasets.digits(binarize=True)


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
@pytest.mark.parametrize("prior_name", ["gaussian", "ibp-binary", "ibp-weighted"])
def test_swapping_the_prior_on_the_same_decoder_and_likelihood(digits, prior_name, elbo):
    latent = 10
    prior = {
        "gaussian": lambda: GaussianPrior(latent),
        "ibp-binary": lambda: IBPPrior(3.0, truncation=latent),
        "ibp-weighted": lambda: IBPPrior(3.0, truncation=latent, weighted=True),
    }[prior_name]()
    pyro.set_rng_seed(0)
    model = VAE(prior=prior, likelihood=Bernoulli(), decoder=MLP(latent, 64, hidden=(64,)))
    guide = AmortizedGuide(model, hidden=(64,))
    res = bv.fit(model, guide, digits, elbo=elbo, epochs=5, batch_size=128, lr=3e-3)
    h = res.history["elbo"].to_numpy()
    assert np.isfinite(h).all()
    # improving: the last epoch beats the first by more than the epoch-to-epoch noise
    assert h[-1] > h[0] + 1.0
    if isinstance(prior, IBPPrior):
        with prior.discrete():
            assert math.isfinite(bv.evaluate_elbo(model, guide, digits, elbo="trace", seed=1))


# --------------------------------------------------------------------------- bars acceptance


def _bars_fit(seed: int, elbo: str, estimator: IndicatorEstimator | None = None):
    ds, truth = bv.datasets.bars(1000, seed=0)
    pyro.set_rng_seed(seed)
    prior = IBPPrior(2.0, truncation=20, estimator=estimator)
    model = VAE(prior=prior, likelihood=Gaussian(scale=0.5), decoder=MLP(20, 36))
    guide = AmortizedGuide(model, hidden=(100,))
    res = bv.fit(model, guide, ds, elbo=elbo, epochs=100, batch_size=100, lr=0.01, seed=seed, callback=prior.anneal)
    usage = feature_usage(res, ds)
    weights = model.decoder.net[-1].weight.detach().double().numpy()  # (36, K)
    used = usage["fraction_used"].to_numpy() > 0.05
    learned = weights[:, used] / np.linalg.norm(weights[:, used], axis=0, keepdims=True)
    true = truth["A"] / np.linalg.norm(truth["A"], axis=1, keepdims=True)
    # |cos|: the decoder's free bias allows the flip b -> 1 - b of a feature
    best = np.abs(true @ learned).max(axis=1) if used.any() else np.zeros(len(true))
    with prior.discrete():
        score = bv.evaluate_elbo(model, guide, ds, elbo="trace", num_particles=10, seed=1)
    return {"worst_cos": float(best.min()), "num_used": int(used.sum()), "elbo": score, "usage": usage}


@pytest.mark.slow  # 20-35 s each on 2 busy cores
@pytest.mark.parametrize("elbo", ["meanfield", "trace"])
def test_bars_features_are_recovered(elbo):
    # Issue 9 acceptance: K = 20, alpha = 2, z = b, sigma = 0.5, five seeds.
    runs = [_bars_fit(seed, elbo) for seed in range(5)]
    worst = [r["worst_cos"] for r in runs]
    used = [r["num_used"] for r in runs]
    assert np.median(worst) >= 0.9
    assert 4 <= np.median(used) <= 7
    best = max(runs, key=lambda r: r["elbo"])
    assert best["worst_cos"] >= 0.9
    assert 4 <= best["num_used"] <= 6
    # the discrete ELBO of the best seed is close to the ideal value for these data:
    # -36 (log(2 pi 0.25)/2 + 1/2) = -26.1 nats of noise, plus about 4 log 2 = 2.8 of KL
    assert -30.0 < best["elbo"] < -28.0


def test_feature_usage_and_its_plot():
    run = _bars_fit(0, "meanfield")
    usage = run["usage"]
    assert list(usage.columns) == ["feature", "usage", "fraction_used", "expected_pi", "prior_pi", "active"]
    assert len(usage) == 20 and usage["feature"].tolist() == list(range(1, 21))
    assert usage.attrs["num_active"] == int(usage["active"].sum()) == run["num_used"]
    assert usage.attrs["threshold"] == 0.05
    assert np.allclose(usage["prior_pi"], (2 / 3) ** np.arange(1, 21))
    # E_q[pi_k] is a product of stick means, so it decreases with k
    assert np.all(np.diff(usage["expected_pi"]) < 0)
    # on bars each of the four features is in about half the images (Binomial(1000, 1/2))
    top = usage.sort_values("fraction_used", ascending=False)["fraction_used"].to_numpy()[:4]
    assert np.all(np.abs(top - 0.5) < 0.08)
    fig = plot_feature_usage(usage)
    assert "active of 20" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="usage lacks the columns"):
        plot_feature_usage(usage.drop(columns=["expected_pi"]))


def test_feature_usage_rejects_other_priors(digits):
    model = VAE(prior=GaussianPrior(2), likelihood=Bernoulli(), decoder=MLP(2, 64))
    guide = AmortizedGuide(model, hidden=())
    res = bv.fit(model, guide, digits, epochs=1, batch_size=None)
    with pytest.raises(TypeError, match="feature_usage needs a fit whose model has an IBPPrior"):
        feature_usage(res, digits)
