"""Held-out log p(x) with global latents is the posterior predictive density: a point's score
does not depend on how many other points are scored, and it matches quadrature."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import bayesvae as bv
from bayesvae.evaluation import evaluate, log_marginal_likelihood

DTYPE = torch.float64
A, B = -0.7, 0.2  # q(log sigma) = N(A, B^2)


def _problem(seed=0, n=30, d=4, k=2):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, k, generator=g, dtype=DTYPE)
    mu = torch.randn(d, generator=g, dtype=DTYPE)
    x = torch.randn(n, k, generator=g, dtype=DTYPE) @ W.T + mu + 0.5 * torch.randn(n, d, generator=g, dtype=DTYPE)
    return W, mu, x


def _functions(W, mu):
    k = W.shape[1]

    def model(x, *, index=None, num_data=None):
        sigma = pyro.sample("sigma", dist.LogNormal(torch.tensor(0.0, dtype=DTYPE), 1.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], k, dtype=DTYPE), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T + mu, sigma.unsqueeze(-1).unsqueeze(-1)).to_event(1), obs=x)

    def guide(x, *, index=None, num_data=None):
        sigma = pyro.sample("sigma", dist.LogNormal(torch.tensor(A, dtype=DTYPE), B))
        with pyro.plate("data", x.shape[0]):
            s2 = (sigma**2).unsqueeze(-1).unsqueeze(-1)
            M = W.T @ W + s2 * torch.eye(k, dtype=DTYPE)
            cov = s2 * torch.linalg.inv(M)
            mean = torch.linalg.solve(M, ((x - mu) @ W).unsqueeze(-1)).squeeze(-1)
            pyro.sample("z", dist.MultivariateNormal(mean, covariance_matrix=cov))

    return model, guide


def _quadrature(W, mu, x, nodes=80):
    """log of E_{log sigma ~ N(A, B^2)} N(x; mu, W W^T + sigma^2 I), by Gauss-Hermite."""
    t, w = np.polynomial.hermite_e.hermegauss(nodes)
    out = []
    for u, wt in zip(A + B * t, w / math.sqrt(2 * math.pi)):
        cov = W @ W.T + math.exp(2 * u) * torch.eye(W.shape[0], dtype=DTYPE)
        out.append(torch.distributions.MultivariateNormal(mu, covariance_matrix=cov).log_prob(x) + math.log(wt))
    return torch.logsumexp(torch.stack(out), 0)


def test_a_point_scores_the_same_alone_and_inside_a_larger_set():
    W, mu, x = _problem()
    fns = _functions(W, mu)
    together = log_marginal_likelihood(fns, x, num_samples=20, global_draws=50, seed=3)
    alone = log_marginal_likelihood(fns, x[5:6], num_samples=20, global_draws=50, seed=3)
    few = log_marginal_likelihood(fns, x[:12], num_samples=20, global_draws=50, seed=3)
    assert together.estimand == "predictive" and together.global_draws == 50
    torch.testing.assert_close(alone.per_point[0], together.per_point[5], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(few.per_point, together.per_point[:12], rtol=1e-9, atol=1e-9)
    # the joint bound is kept under its own name, and it does move with the set's size
    joint_alone = log_marginal_likelihood(fns, x[5:6], num_samples=20, estimand="joint", seed=3)
    joint_all = log_marginal_likelihood(fns, x, num_samples=20, estimand="joint", seed=3)
    assert joint_alone.estimand == "joint"
    assert abs(float(joint_alone.per_point[0] - joint_all.per_point[5])) > 1e-3


def test_predictive_density_matches_quadrature():
    W, mu, x = _problem(seed=1)
    result = log_marginal_likelihood(_functions(W, mu), x, num_samples=5, global_draws=1500, seed=0)
    exact = _quadrature(W, mu, x)
    # exact local weights: the only error is the S = 1500 global draws (relative sd of the
    # density over q(sigma) is ~0.3, so ~0.008 per point); 4 batch-means SE bounds the mean
    assert abs(float((result.per_point - exact).mean())) < 4 * result.se_globals + 1e-3
    assert float((result.per_point - exact).abs().max()) < 0.05
    assert result.se >= result.se_globals > 0


def test_package_model_with_global_sites_is_independent_of_the_test_set_size():
    data = torch.as_tensor(bv.datasets.digits().x[:400], dtype=torch.float32)
    torch.manual_seed(0)
    prior = bv.ARDPrior(3, width=64)  # Bayesian PCA: ARD scales are global sites
    model = bv.VAE(prior=prior, likelihood=bv.Gaussian(data_dim=64), decoder=prior.make_decoder(64))
    guide = bv.AmortizedGuide(model, hidden=(32,))
    fit = bv.fit(model, guide, data[:300], epochs=10, lr=1e-2, seed=0)
    test = data[300:]
    small = log_marginal_likelihood(fit, test[:36], num_samples=200, global_draws=20, seed=1)
    large = log_marginal_likelihood(fit, test, num_samples=200, global_draws=20, seed=1)
    # same global draws; the local draws differ, so agreement is within Monte Carlo error
    # (the joint bound's 1/N share moved these points by tens of nats)
    diff = (small.per_point - large.per_point[:36]).double()
    assert abs(float(diff.mean())) < 0.1
    row = evaluate(fit, test[:36], num_samples=200, elbo_samples=5, seed=1)
    assert abs(float(row["log_px"].iloc[0]) - small.mean) < 0.1


def test_bad_estimand():
    W, mu, x = _problem()
    with pytest.raises(ValueError, match="estimand must be one of"):
        log_marginal_likelihood(_functions(W, mu), x, estimand="posterior")
