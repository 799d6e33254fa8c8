"""The trace kernel: per-point log weights read from traces of the same model and guide."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from _eval_helpers import (
    DTYPE,
    ExactPosteriorGuide,
    GlobalExactGuide,
    GlobalScalePrior,
    exact_log_px,
    linear_problem,
    linear_vae,
)
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch import nn

import bayesvae
from bayesvae.evaluation import importance_log_weights, log_marginal_likelihood
from bayesvae.scoring import TraceScorer


def _binary_vae(d=6, k=2, seed=0):
    torch.manual_seed(seed)
    model = bayesvae.VAE(
        prior=bayesvae.GaussianPrior(k), likelihood=bayesvae.Bernoulli(), decoder=bayesvae.MLP(k, d, hidden=(7,))
    ).to(DTYPE)
    guide = bayesvae.AmortizedGuide(model, hidden=(5,)).to(DTYPE)
    x = (torch.rand(9, d, generator=torch.Generator().manual_seed(seed)) < 0.4).to(DTYPE)
    return model, guide, x


def test_reference_oracle_loop_equals_vectorized():
    """Same seed: IWAE recomputed one sample at a time, by hand, equals the vectorized estimate."""
    model, guide, x = _binary_vae()
    iw = importance_log_weights(model, guide, x, num_samples=13, seed=3, chunk_size=20, return_samples=True)
    assert iw.vectorized
    fast = log_marginal_likelihood((model, guide), x, num_samples=13, seed=3, chunk_size=20)
    z = iw.samples["z"]
    assert z.shape == (13, 9, 2)
    with torch.no_grad():
        for n in range(x.shape[0]):
            q = guide.posterior(x[n : n + 1])["z"]
            logs = []
            for s in range(13):
                zs = z[s, n]
                lw = (
                    dist.Normal(0.0, 1.0).log_prob(zs).sum()
                    + dist.Bernoulli(logits=model.decoder(zs)).log_prob(x[n]).sum()
                    - q.log_prob(zs[None])[0]
                )
                assert float(lw) == pytest.approx(float(iw.log_weights[s, n]), abs=1e-10)
                logs.append(float(lw))
            top = max(logs)
            slow = top + math.log(sum(math.exp(v - top) for v in logs) / len(logs))
            assert slow == pytest.approx(float(fast.per_point[n]), abs=1e-10)
            assert sum(logs) / len(logs) == pytest.approx(float(fast.elbo[n]), abs=1e-10)


def test_streaming_equals_materialized_and_k1_is_elbo():
    model, guide, x = _binary_vae(seed=1)
    iw = importance_log_weights(model, guide, x, num_samples=40, seed=5, chunk_size=33)
    lml = log_marginal_likelihood((model, guide), x, num_samples=40, seed=5, chunk_size=33)
    torch.testing.assert_close(lml.per_point, iw.iwae(), rtol=0, atol=1e-12)
    torch.testing.assert_close(lml.elbo, iw.log_weights.mean(0), rtol=0, atol=1e-12)
    one = log_marginal_likelihood((model, guide), x, num_samples=1, seed=5)
    torch.testing.assert_close(one.per_point, one.elbo, rtol=0, atol=0)
    assert torch.all(lml.per_point >= lml.elbo - 1e-12)  # Jensen, on the same draws
    assert torch.all((lml.ess >= 1 - 1e-9) & (lml.ess <= 40 + 1e-9))


@pytest.mark.parametrize("subsample", [False, True])
def test_k1_equals_pyro_trace_elbo_on_the_same_draw(subsample):
    """IWAE with K=1, summed over points (scaled like a minibatch), is Pyro's Trace_ELBO on that draw."""
    model, guide, x = _binary_vae(seed=2)
    iw = importance_log_weights(model, guide, x, num_samples=1, seed=0, return_samples=True)
    replay = poutine.trace(guide).get_trace(x)
    replay.nodes["z"]["value"] = iw.samples["z"][0]
    fixed = poutine.replay(guide, trace=replay)
    if subsample:  # a minibatch of the 9 rows scored as part of N = 30: Pyro scales by 30/9
        loss = Trace_ELBO().loss(model, fixed, x, index=torch.arange(9), num_data=30)
        expected = 30 / 9 * float(iw.log_weights[0].sum())
    else:
        loss = Trace_ELBO().loss(model, fixed, x)
        expected = float(iw.log_weights[0].sum())
    assert -loss == pytest.approx(expected, abs=1e-9)


def test_global_site_per_point_share_and_exact_conditional():
    """With the exact local posterior given tau, each weight is log p(x_n | tau) + (log p(tau) - log q(tau)) / N."""
    W, mu, sigma, x = linear_problem(n=30, d=4, k=2, seed=3)
    model = linear_vae(W, mu, sigma, prior=GlobalScalePrior(2))
    guide = GlobalExactGuide(W, mu, sigma, loc=0.1, scale=0.2)
    iw = importance_log_weights(model, guide, x, num_samples=6, seed=0, return_samples=True)
    assert iw.global_sites == ("tau",) and iw.local_sites == ("z",) and iw.observed_sites == ("x",)
    tau = iw.samples["tau"]
    assert tau.shape == (6,) and torch.all(tau == tau[0])  # one draw per estimate
    t = tau[0]
    log_pg = dist.LogNormal(torch.tensor(0.0, dtype=DTYPE), 0.5).log_prob(t)
    log_qg = dist.LogNormal(torch.tensor(0.1, dtype=DTYPE), 0.2).log_prob(t)
    torch.testing.assert_close(iw.global_log_prior, log_pg.expand(6))
    torch.testing.assert_close(iw.global_log_q, log_qg.expand(6))
    expected = exact_log_px(W, mu, sigma, x, prior_scale=t) + (log_pg - log_qg) / 30
    torch.testing.assert_close(iw.log_weights, expected.expand(6, 30), rtol=0, atol=1e-8)
    lml = log_marginal_likelihood((model, guide), x, num_samples=6, seed=0, estimand="joint")
    assert lml.global_log_weight == pytest.approx(float(log_pg - log_qg), abs=1e-10)
    torch.testing.assert_close(lml.per_point, expected, rtol=0, atol=1e-8)


def _log_evidence_by_quadrature(W, mu, sigma, x, loc, scale):
    """log p(x_{1:N}) = log int p(tau) prod_n p(x_n | tau) dtau and KL(q(tau) || p(tau | x)) on a grid."""
    u = torch.linspace(-4.0, 3.0, 4001, dtype=DTYPE)  # log tau
    tau = u.exp()
    log_joint = torch.stack([exact_log_px(W, mu, sigma, x, prior_scale=t).sum() for t in tau])
    log_joint = log_joint + dist.LogNormal(torch.tensor(0.0, dtype=DTYPE), 0.5).log_prob(tau) + u  # d tau = tau du
    du = float(u[1] - u[0])
    log_evidence = torch.logsumexp(log_joint, 0) + math.log(du)
    log_post_u = log_joint - log_evidence  # density of u = log tau
    log_q_u = dist.Normal(torch.tensor(loc, dtype=DTYPE), scale).log_prob(u)
    kl = float((log_q_u.exp() * (log_q_u - log_post_u)).sum() * du)
    return float(log_evidence), kl


def test_global_bound_is_the_dataset_bound():
    """Summed over points, the per-point terms estimate log p(x_{1:N}) - KL(q(tau) || p(tau | x)) (quadrature)."""
    W, mu, sigma, x = linear_problem(n=40, d=4, k=2, seed=4)
    loc, scale = 0.05, 0.15
    model = linear_vae(W, mu, sigma, prior=GlobalScalePrior(2))
    guide = GlobalExactGuide(W, mu, sigma, loc=loc, scale=scale)
    log_evidence, kl = _log_evidence_by_quadrature(W, mu, sigma, x, loc, scale)
    # globals_once=False: one tau per sample, so each row sums to an independent draw of the bound
    iw = importance_log_weights(model, guide, x, num_samples=400, seed=1, globals_once=False)
    assert not iw.globals_once
    assert iw.samples is None and len(set(iw.global_log_q.tolist())) == 400
    bounds = iw.log_weights.sum(1)
    mean, se = float(bounds.mean()), float(bounds.std()) / math.sqrt(400)
    # 4 SE: a false failure rate ~6e-5; catches an error in the global share larger than ~4 SE (~0.3 nats here)
    assert abs(mean - (log_evidence - kl)) < 4 * se
    assert mean <= log_evidence + 4 * se
    assert kl > 0


def test_hand_written_pyro_param_model_zero_variance():
    """A hand-written PPCA with pyro.param and its exact posterior: every log weight equals log p(x_n)."""
    W, mu, sigma, x = linear_problem(n=25, d=4, k=2, seed=5)

    def model(x):
        w = pyro.param("W", W.clone())
        m = pyro.param("mu", mu.clone())
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ w.T + m, sigma).to_event(1), obs=x)

    def guide(x):
        w, m = pyro.param("W"), pyro.param("mu")
        cov = torch.linalg.inv(w.T @ w / sigma**2 + torch.eye(2, dtype=DTYPE))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal((x - m) @ w @ cov / sigma**2, covariance_matrix=cov))

    pyro.param("W", W.clone())
    pyro.param("mu", mu.clone())
    lml = log_marginal_likelihood((model, guide), x.numpy(), num_samples=50, seed=0)
    # x arrives as float32 (no module to read the dtype from): compare at float32 precision
    exact = exact_log_px(W, mu, sigma, x.float().double())
    torch.testing.assert_close(lml.per_point.double(), exact, rtol=0, atol=1e-3)
    assert float(lml.ess.min()) == pytest.approx(50, rel=1e-3)


class _PyroExampleVAE(nn.Module):
    """The shape of Pyro's examples/vae/vae.py: pyro.module, a plate, no index/num_data keywords."""

    def __init__(self, d=6, k=2):
        super().__init__()
        self.k = k
        self.dec = nn.Sequential(nn.Linear(k, 8), nn.Tanh(), nn.Linear(8, d))
        self.enc = nn.Linear(d, 2 * k)

    def model(self, x):
        pyro.module("decoder", self.dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.k), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.enc)
        loc, raw = self.enc(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw)).to_event(1))

    def guide_unvectorizable(self, x):
        pyro.module("encoder", self.enc)
        loc, raw = self.enc(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw)).to_event(1))
            z.reshape(x.shape[0], self.k)  # breaks under a particle plate


def test_hand_written_pyro_module_vae_oracle_and_fallback():
    torch.manual_seed(0)
    vae = _PyroExampleVAE().to(DTYPE)
    x = (torch.rand(8, 6, generator=torch.Generator().manual_seed(1)) < 0.5).to(DTYPE)
    iw = importance_log_weights(vae.model, vae.guide, x, num_samples=5, seed=0, return_samples=True)
    assert iw.vectorized
    z = iw.samples["z"]
    with torch.no_grad():
        loc, raw = vae.enc(x).chunk(2, -1)
        q = dist.Normal(loc, nn.functional.softplus(raw)).to_event(1)
        expected = (
            dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
            + dist.Bernoulli(logits=vae.dec(z)).log_prob(x).sum(-1)
            - q.log_prob(z)
        )
    torch.testing.assert_close(iw.log_weights, expected, rtol=0, atol=1e-10)
    slow = importance_log_weights(vae.model, vae.guide_unvectorizable, x, num_samples=5, seed=0, return_samples=True)
    assert not slow.vectorized and slow.samples["z"].shape == (5, 8, 2)
    with torch.no_grad():
        z = slow.samples["z"]
        expected = (
            dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
            + dist.Bernoulli(logits=vae.dec(z)).log_prob(x).sum(-1)
            - q.log_prob(z)
        )
    torch.testing.assert_close(slow.log_weights, expected, rtol=0, atol=1e-10)
    with pytest.raises(RuntimeError):
        importance_log_weights(vae.model, vae.guide_unvectorizable, x, num_samples=5, vectorize=True)


def test_exact_posterior_any_chunking_zero_variance():
    W, mu, sigma, x = linear_problem(n=23, d=5, k=2, seed=6)
    model = linear_vae(W, mu, sigma)
    guide = ExactPosteriorGuide(W, mu, sigma)
    exact = exact_log_px(W, mu, sigma, x)
    for chunk in (1, 7, 1000):
        iw = importance_log_weights(model, guide, x, num_samples=11, seed=0, chunk_size=chunk)
        torch.testing.assert_close(iw.log_weights, exact.expand(11, 23), rtol=0, atol=1e-9)


def test_seed_restores_rng_and_reproduces():
    model, guide, x = _binary_vae()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = importance_log_weights(model, guide, x, num_samples=4, seed=9).log_weights
    assert torch.equal(torch.get_rng_state(), before)
    b = importance_log_weights(model, guide, x, num_samples=4, seed=9).log_weights
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------
# Errors


def test_error_observed_outside_data_plate():
    def model(x):
        z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z.sum() * x.new_ones(x.shape), 1.0).to_event(2), obs=x)

    def guide(x):
        pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))

    with pytest.raises(ValueError, match="observed site 'x' is not inside a plate named 'data'"):
        importance_log_weights(model, guide, torch.zeros(3, 2), num_samples=2)


def test_error_latent_site_missing_from_guide():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        pass

    with pytest.raises(ValueError, match="latent site 'z' of the model has no site in the guide"):
        importance_log_weights(model, guide, torch.zeros(3, 2), num_samples=2)


def test_error_no_observed_site():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))

    with pytest.raises(ValueError, match="the model has no observed site inside the plate 'data'"):
        importance_log_weights(model, guide, torch.zeros(3, 2), num_samples=2)


def test_error_sequential_data_plate():
    def model(x):
        for i in pyro.plate("data", x.shape[0]):
            pyro.sample(f"x{i}", dist.Normal(0.0, 1.0), obs=x[i, 0])

    with pytest.raises(ValueError, match="the plate 'data' is sequential"):
        importance_log_weights(model, lambda x: None, torch.zeros(3, 2), num_samples=2)


def test_error_unplated_batch_dims():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(x.new_zeros(4, x.shape[0]), 1.0), obs=x[:, 0].expand(4, -1))

    def deeper(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(x.new_zeros(5, 4, x.shape[0]), 1.0), obs=x[:, 0].expand(5, 4, -1))

    for fn in (model, deeper):
        with pytest.raises(ValueError, match=r"site 'x' has log-density batch shape \(.*\), with a dimension that none of the 1 plate\(s\)"):
            importance_log_weights(fn, lambda x: None, torch.zeros(3, 2), num_samples=2, vectorize=False)


def test_error_bad_arguments():
    model, guide, x = _binary_vae()
    with pytest.raises(ValueError, match="num_samples must be a positive int, got 0"):
        importance_log_weights(model, guide, x, num_samples=0)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        importance_log_weights(model, guide, x, num_samples=2, chunk_size=0)
    with pytest.raises(TypeError, match=r"x must be a \(N, d\) torch.Tensor"):
        TraceScorer(model, guide, x.numpy())
    with pytest.raises(ValueError, match="covariate 'groups' has 2 entries but x has 9 rows"):
        TraceScorer(model, guide, x, covariates={"groups": torch.zeros(2, dtype=torch.long)})
