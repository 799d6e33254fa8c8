"""Known-answer and identity tests of the ELBO on the linear-Gaussian model.

With a linear decoder ``x = W z + b + sigma * eps`` and ``z ~ N(0, I)``, the marginal is
``N(b, W W^T + sigma^2 I)`` and the posterior is Gaussian in closed form, so the ELBO's
relation to log p(x) can be checked exactly.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

import bayesvae as bv
from bayesvae.models.vae import data_plate

D, L, SIGMA = 6, 2, 0.7


def _linear_model(seed: int = 0) -> bv.VAE:
    torch.manual_seed(seed)
    model = bv.VAE(
        prior=bv.GaussianPrior(L),
        likelihood=bv.Gaussian(scale=SIGMA),
        decoder=bv.MLP(L, D, hidden=()),
    ).double()
    return model


def _wb(model):
    lin = model.decoder.net[-1]
    return lin.weight.detach(), lin.bias.detach()


def _exact_log_px(model, x):
    w, b = _wb(model)
    cov = w @ w.T + SIGMA**2 * torch.eye(D, dtype=x.dtype)
    return dist.MultivariateNormal(b, cov).log_prob(x)


def _exact_posterior_guide(model):
    """q(z|x) = p(z|x): N(S W^T (x - b) / sigma^2, S), S = (I + W^T W / sigma^2)^-1."""

    def guide(x, *, index=None, num_data=None):
        w, b = _wb(model)
        prec = torch.eye(L, dtype=x.dtype) + w.T @ w / SIGMA**2
        cov = torch.linalg.inv(prec)
        mean = (x - b) @ w @ cov / SIGMA**2
        with data_plate(x.shape[0], index, num_data):
            pyro.sample("z", dist.MultivariateNormal(mean, covariance_matrix=cov))

    return guide


def _data(model, n=40, seed=1):
    torch.manual_seed(seed)
    return model.sample(n)["x"]


def _elbo_draws(elbo_cls, model, guide, x, draws=400):
    """Independent single-particle estimates of the total ELBO (one per draw)."""
    elbo = elbo_cls(num_particles=draws, vectorize_particles=True, max_plate_nesting=1)
    # Per-draw values: vectorized particles give the mean; use separate calls for the spread.
    single = elbo_cls(num_particles=1, max_plate_nesting=1)
    values = torch.tensor([-single.loss(model, guide, x) for _ in range(draws)], dtype=torch.float64)
    return values, -elbo.loss(model, guide, x)


@pytest.mark.parametrize("elbo_cls", [Trace_ELBO, TraceMeanField_ELBO])
def test_exact_posterior_guide_makes_elbo_equal_log_px(elbo_cls):
    model = _linear_model()
    x = _data(model)
    guide = _exact_posterior_guide(model)
    exact = float(_exact_log_px(model, x).sum())
    # With q = p(z|x), log p(x, z) - log q(z|x) = log p(x) for every z: zero variance.
    for _ in range(3):
        value = -elbo_cls(max_plate_nesting=1).loss(model, guide, x)
        assert value == pytest.approx(exact, abs=1e-8)


@pytest.mark.parametrize("elbo_cls", [Trace_ELBO, TraceMeanField_ELBO])
def test_elbo_is_a_lower_bound(elbo_cls):
    model = _linear_model()
    x = _data(model)
    torch.manual_seed(3)
    guide = bv.AmortizedGuide(model, hidden=(8,)).double()
    exact = float(_exact_log_px(model, x).sum())
    values, _ = _elbo_draws(elbo_cls, model, guide, x, draws=300)
    mean, se = float(values.mean()), float(values.std() / math.sqrt(len(values)))
    # A random encoder is far from the posterior: the bound must hold with a wide margin,
    # and certainly within 3 Monte Carlo standard errors (false-failure rate ~0.1%).
    assert mean <= exact + 3 * se
    assert exact - mean > 1.0


def test_trace_and_meanfield_agree_in_expectation():
    model = _linear_model()
    x = _data(model)
    torch.manual_seed(4)
    guide = bv.AmortizedGuide(model, hidden=(8,)).double()
    a, _ = _elbo_draws(Trace_ELBO, model, guide, x, draws=400)
    b, _ = _elbo_draws(TraceMeanField_ELBO, model, guide, x, draws=400)
    se = math.sqrt(float(a.var()) / len(a) + float(b.var()) / len(b))
    # Same expectation; 4 SE of the difference (false failure ~6e-5). The analytic KL must
    # also *reduce* the variance (the point of TraceMeanField_ELBO).
    assert abs(float(a.mean() - b.mean())) < 4 * se
    assert float(b.var()) < float(a.var())


def test_subsampled_elbo_is_unbiased_for_full_data():
    model = _linear_model()
    x = _data(model, n=60)
    guide = _exact_posterior_guide(model)
    n, batch = x.shape[0], 12
    elbo = Trace_ELBO(max_plate_nesting=1)
    full = -elbo.loss(model, guide, x)
    # Exact identity: the minibatch estimates of one partition average to the full ELBO
    # (per-point terms are deterministic under the exact posterior guide).
    perm = torch.randperm(n)
    parts = [
        -elbo.loss(model, guide, x[idx], index=idx, num_data=n) for idx in perm.split(batch)
    ]
    assert sum(parts) / len(parts) == pytest.approx(full, rel=1e-10)
    # Random batches with an amortized guide: unbiased up to Monte Carlo error.
    torch.manual_seed(5)
    amortized = bv.AmortizedGuide(model, hidden=(8,)).double()
    full_draws = torch.tensor([-elbo.loss(model, amortized, x) for _ in range(300)])
    sub_draws = []
    for _ in range(1500):
        idx = torch.randperm(n)[:batch]
        sub_draws.append(-elbo.loss(model, amortized, x[idx], index=idx, num_data=n))
    sub = torch.tensor(sub_draws)
    se = math.sqrt(float(full_draws.var()) / len(full_draws) + float(sub.var()) / len(sub))
    assert abs(float(sub.mean() - full_draws.mean())) < 4 * se


def test_package_fit_with_exact_guide_recovers_the_marginal_likelihood_objective():
    """Training the decoder through the exact-posterior guide maximizes log p(x) itself."""
    model = _linear_model()
    x = _data(model, n=200)
    guide = _exact_posterior_guide(model)
    before = float(_exact_log_px(model, x).mean())
    # Perturb the decoder; SVI with the exact posterior guide is then gradient ascent on
    # log p(x), so the exact log-likelihood must increase.
    with torch.no_grad():
        model.decoder.net[-1].weight.mul_(0.3)
    perturbed = float(_exact_log_px(model, x).mean())
    result = bv.fit(model, guide, x.numpy(), epochs=300, batch_size=None, lr=0.05, seed=0)
    after = float(_exact_log_px(model, x).mean())
    # The first recorded ELBO is log p(x) at the perturbed parameters (exact guide).
    assert result.history["elbo"].iloc[0] == pytest.approx(perturbed, abs=1e-6)
    # The maximum-likelihood fit is at least as likely as the generating parameters.
    assert perturbed < before - 0.3
    assert after > before
