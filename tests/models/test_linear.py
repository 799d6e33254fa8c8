"""Factor analysis and probabilistic PCA: exact likelihoods, closed form, EM, and SVI recovering them.

Known-answer tests compare with scikit-learn's ``PCA`` / ``FactorAnalysis`` and with a
brute-force D x D ``MultivariateNormal``; identities check that the exact-posterior guide makes
the ELBO equal the log-likelihood; statistical tests check that SVI on a linear VAE reaches the
maximum-likelihood solution (Lucas et al. 2019, arXiv:1911.02469).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from scipy.linalg import subspace_angles
from sklearn.decomposition import PCA, FactorAnalysis
from torch.distributions import kl_divergence

import bayesvae
from bayesvae._registry import build
from bayesvae.datasets import linear_gaussian
from bayesvae.guides import AmortizedGuide, ExactPosteriorGuide
from bayesvae.models import VAE, Bernoulli, Gaussian, GaussianPrior
from bayesvae.models.linear import (
    ConvergenceWarning,
    IsotropicGaussian,
    exact_log_likelihood,
    exact_posterior,
    factor_analysis,
    factor_analysis_em,
    linear_parameters,
    model_log_likelihood,
    ppca,
    ppca_mle,
)
from bayesvae.nn import MLP

D, L, N = 20, 3, 2000
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ppca_data():
    """PPCA data (D=20, L=3, N=2000, sigma=0.5) and its truth."""
    return linear_gaussian(N, D, L, noise=0.5, seed=0)


@pytest.fixture(scope="module")
def fa_data(ppca_data):
    """Factor-analysis data: the PPCA data plus independent noise of a different scale per feature."""
    data, _ = ppca_data
    rng = np.random.default_rng(1)
    extra = rng.uniform(0.0, 1.0, D)
    return (data.x + extra * rng.standard_normal(data.x.shape)).astype(np.float32)


def _degrees(a, b) -> np.ndarray:
    return np.degrees(subspace_angles(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)))


def _random_model(seed: int, d: int = 12, latent: int = 4, n: int = 50):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, latent, generator=g, dtype=torch.float64)
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    psi = 0.1 + torch.rand(d, generator=g, dtype=torch.float64)
    x = 2 * torch.randn(n, d, generator=g, dtype=torch.float64) + mu
    return W, mu, psi, x


# ---------------------------------------------------------------------------------------------
# Exact kernels against brute force


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("isotropic", [False, True])
def test_exact_log_likelihood_equals_full_covariance_mvn(seed, isotropic):
    W, mu, psi, x = _random_model(seed)
    if isotropic:
        psi = psi[0]  # a scalar sigma^2
    cov = W @ W.T + torch.diag(psi.expand(W.shape[0]))
    brute = dist.MultivariateNormal(mu, covariance_matrix=cov).log_prob(x)
    fast = exact_log_likelihood(W, mu, psi, x)
    assert fast.dtype == torch.float64 and fast.shape == (x.shape[0],)
    # Both are float64 evaluations of the same quantity (values ~ -30): the Woodbury and
    # determinant-lemma rewrites lose at most a few ulps times the condition number (~1e2).
    torch.testing.assert_close(fast, brute, rtol=0, atol=1e-10)


def test_exact_log_likelihood_gradients_equal_brute_force():
    W, mu, psi, x = _random_model(3)
    params = [t.clone().requires_grad_() for t in (W, mu, psi)]
    exact_log_likelihood(*params, x).sum().backward()
    fast = [p.grad for p in params]
    params = [t.clone().requires_grad_() for t in (W, mu, psi)]
    cov = params[0] @ params[0].T + torch.diag(params[2])
    dist.MultivariateNormal(params[1], covariance_matrix=cov).log_prob(x).sum().backward()
    for a, p in zip(fast, params):
        # float64 gradients of sums over 50 points (magnitudes ~10): 1e-8 is ~1e5 ulps.
        torch.testing.assert_close(a, p.grad, rtol=1e-8, atol=1e-8)


def test_exact_posterior_equals_gaussian_conditioning():
    W, mu, psi, x = _random_model(4)
    mean, cov = exact_posterior(W, mu, psi, x)
    # Condition the joint Gaussian of (z, x): Cov(z, x) = W^T, Cov(x) = C.
    C = W @ W.T + torch.diag(psi)
    gain = torch.linalg.solve(C, W).T  # W^T C^-1
    torch.testing.assert_close(mean, (x - mu) @ gain.T, rtol=0, atol=1e-10)
    torch.testing.assert_close(cov, torch.eye(W.shape[1], dtype=W.dtype) - gain @ W, rtol=0, atol=1e-10)


def test_mean_log_likelihood_from_covariance_equals_mean_of_per_point_values(ppca_data):
    data, _ = ppca_data
    est = ppca_mle(data.x, L)
    # est.log_likelihood is computed from the sample covariance, log_prob point by point.
    assert est.log_prob(data.x).mean().item() == pytest.approx(est.log_likelihood, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Closed-form PPCA and EM for FA against scikit-learn


def test_ppca_mle_matches_sklearn_pca_score(ppca_data):
    data, truth = ppca_data
    x = data.x.astype(np.float64)
    est = ppca_mle(x, L)
    pca = PCA(n_components=L).fit(x)
    ours = est.log_prob(x).mean().item()
    # scikit-learn's PPCA uses the (n-1)-normalized covariance, i.e. C * N/(N-1). The MLE is a
    # stationary point, so this moves the mean log-likelihood only at second order:
    # D/4 * (1/(N-1))^2 = 1.25e-6 nats = 6e-8 relative, below the 1e-6 we ask for.
    assert ours == pytest.approx(pca.score(x), rel=1e-6)
    assert est.sigma2 == pytest.approx(pca.noise_variance_ * (N - 1) / N, rel=1e-10)
    assert _degrees(est.W, pca.components_.T).max() < 1e-6
    assert est.sigma2 == pytest.approx(truth["noise"] ** 2, rel=0.05)  # 5% ~ 3.5 s.e. of a variance from 34 000 d.o.f.
    assert est.n_iter == 0 and est.converged and est.method == "ppca"


def test_factor_analysis_em_matches_sklearn(fa_data):
    x = fa_data.astype(np.float64)
    est = factor_analysis_em(x, L, tol=1e-9, max_iter=20_000)
    assert est.converged
    sk = FactorAnalysis(n_components=L, svd_method="lapack", tol=1e-8, max_iter=20_000).fit(x)
    ours = est.log_prob(x).mean().item()
    # Both iterate to the same maximum; EM stops when a step gains < 1e-9 nats/point and, being
    # linearly convergent, is then within ~1e-9 / (1 - rate) of it. 1e-4 relative (~2e-3
    # nats) is 10x tighter than the acceptance criterion (1e-3) and far above both stopping
    # slacks (measured: 6e-10 relative; at the default tol=1e-6, 4e-7).
    assert ours == pytest.approx(sk.score(x), rel=1e-4)
    assert _degrees(est.W, sk.components_.T).max() < 2.0
    torch.testing.assert_close(est.psi, torch.as_tensor(sk.noise_variance_), rtol=1e-2, atol=1e-3)
    assert est.method == "factor_analysis" and est.sigma2 is None


@pytest.mark.parametrize("latent", [1, 3, 6])
@pytest.mark.parametrize("seed", [0, 1])
def test_em_log_likelihood_never_decreases(fa_data, latent, seed):
    with warnings.catch_warnings():  # a fixed budget of iterations, converged or not
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = factor_analysis_em(fa_data[:500], latent, tol=1e-10, max_iter=400, seed=seed)
    steps = torch.diff(est.trace)
    assert len(est.trace) == est.n_iter + 1
    # EM cannot lower the likelihood; allow only float64 round-off of values ~ -30.
    assert float(steps.min()) >= -1e-12 * abs(est.log_likelihood)
    assert float(est.trace[-1]) > float(est.trace[0])


def test_em_warns_when_max_iter_is_hit(fa_data):
    with pytest.warns(ConvergenceWarning, match=r"did not converge in max_iter=3 iterations") as rec:
        est = factor_analysis_em(fa_data, L, max_iter=3)
    assert rec[0].filename == __file__  # stacklevel points at the caller
    assert not est.converged and est.n_iter == 3 and len(est.trace) == 4


def test_em_does_not_warn_when_converged(fa_data):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est = factor_analysis_em(fa_data, L)
    assert est.converged and est.n_iter < 1000


def test_fa_on_ppca_data_has_nearly_equal_noise_variances(ppca_data):
    data, truth = ppca_data
    fa = factor_analysis_em(data.x, L)
    pp = ppca_mle(data.x, L)
    # FA nests PPCA: its maximum is at least as high, and on isotropic data barely higher.
    assert pp.log_likelihood <= fa.log_likelihood < pp.log_likelihood + 0.02
    # Each psi_d is estimated from 2000 points: s.e. ~ 0.25 * sqrt(2/2000) ~ 0.008; 0.05 ~ 6 s.e.
    torch.testing.assert_close(fa.psi, torch.full((D,), 0.25, dtype=torch.float64), rtol=0, atol=0.05)


# ---------------------------------------------------------------------------------------------
# Linear models as VAEs


@pytest.mark.parametrize("method", [ppca_mle, factor_analysis_em])
def test_estimate_to_vae_keeps_the_exact_log_likelihood(fa_data, method):
    est = method(fa_data, L)
    model = est.to_vae()
    W, mu, psi = linear_parameters(model)
    assert W.shape == (D, L) and mu.shape == (D,) and psi.shape == (D,)
    # The VAE holds float32 copies of the parameters: relative rounding 6e-8 moves a per-point
    # log-likelihood (gradient norm ~10-100 per parameter block) by < 1e-4.
    torch.testing.assert_close(model_log_likelihood(model, fa_data), est.log_prob(fa_data), rtol=0, atol=1e-4)
    if est.sigma2 is not None:
        assert isinstance(model.likelihood, IsotropicGaussian)


def test_linear_vae_configs_round_trip(tmp_path, ppca_data):
    data, _ = ppca_data
    for model in (ppca(D, L, init_scale=0.7), factor_analysis(D, L)):
        clone = build(model.to_config())
        clone.load_state_dict(model.state_dict())
        torch.testing.assert_close(model_log_likelihood(clone, data.x), model_log_likelihood(model, data.x))
    model = ppca(D, L)
    fit = bayesvae.fit(model, ExactPosteriorGuide(model), data, epochs=3, batch_size=None, lr=0.05)
    fit.save(tmp_path / "fit")
    loaded = bayesvae.load(tmp_path / "fit")
    assert isinstance(loaded.guide, ExactPosteriorGuide) and loaded.guide.model is loaded.model
    torch.testing.assert_close(model_log_likelihood(loaded.model, data.x), model_log_likelihood(model, data.x))


def test_isotropic_gaussian_likelihood():
    lik = IsotropicGaussian(init_scale=0.5)
    out = torch.zeros(4, 7)
    d = lik.distribution(out)
    assert d.event_shape == (7,) and d.batch_shape == (4,)
    torch.testing.assert_close(d.base_dist.scale, torch.full((4, 7), 0.5))
    assert lik.noise_scale().requires_grad and not lik.feature_scale().requires_grad
    assert sum(p.numel() for p in lik.parameters()) == 1
    with pytest.raises(ValueError, match=r"0 < min_scale < init_scale"):
        IsotropicGaussian(init_scale=1e-4)


# ---------------------------------------------------------------------------------------------
# The exact-posterior guide


def test_trace_elbo_with_exact_guide_is_the_exact_log_likelihood(ppca_data):
    data, _ = ppca_data
    model = ppca_mle(data.x, L).to_vae()
    guide = ExactPosteriorGuide(model)
    assert list(guide.parameters()) == []
    exact = model_log_likelihood(model, data.x).mean().item()
    # log p(x, z) - log q(z | x) = log p(x) for every z: one particle, any seed, same value up
    # to float32 rounding of per-point terms ~ -20 (summed over 2000 points, ~1e-5 per point).
    for seed in (0, 1):
        elbo = bayesvae.evaluate_elbo(model, guide, data, elbo="trace", num_particles=1, seed=seed)
        assert elbo == pytest.approx(exact, abs=1e-4)


def test_exact_guide_gradient_is_the_log_likelihood_gradient(ppca_data):
    data, _ = ppca_data
    x = torch.as_tensor(data.x[:200], dtype=torch.float64)
    model = factor_analysis(D, L).double()
    guide = ExactPosteriorGuide(model)
    params = list(model.parameters())
    loss = Trace_ELBO().differentiable_loss(model, guide, x)
    elbo_grads = torch.autograd.grad(-loss, params)
    ll = model_log_likelihood(model, x).sum()
    ll_grads = torch.autograd.grad(ll, params)
    loss, ll = loss.detach(), ll.detach()
    assert -loss.item() == pytest.approx(ll.item(), rel=1e-10)
    for a, b in zip(elbo_grads, ll_grads):
        # float64; the two differ only by the reparameterized path's cancellation (~1e-12).
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)


def test_no_analytic_kl_so_meanfield_elbo_with_exact_guide_is_exact(ppca_data):
    data, _ = ppca_data
    x = torch.as_tensor(data.x[:100], dtype=torch.float64)
    model = ppca_mle(data.x, L).to_vae().double()
    guide = ExactPosteriorGuide(model)
    # The guide's "z" (MultivariateNormal) against the prior's Normal.to_event(1) has no
    # registered KL (the package deliberately registers none) ...
    q = guide.posterior(x)["z"]
    prior = dist.Normal(torch.zeros(100, L, dtype=torch.float64), 1.0).to_event(1)
    with pytest.raises(NotImplementedError):
        kl_divergence(q, prior)
    # ... so TraceMeanField_ELBO takes the Monte Carlo term log p(x, z) - log q(z | x), which is
    # log p(x) for every draw: exact in float64 for any seed (values ~ -2000; 1e-9 relative).
    exact = model_log_likelihood(model, x).sum().item()
    for seed in (0, 1):
        pyro.set_rng_seed(seed)
        value = -TraceMeanField_ELBO(max_plate_nesting=1).loss(model, guide, x)
        assert value == pytest.approx(exact, rel=1e-9)


def test_exact_guide_in_importance_sampling_gives_constant_weights(ppca_data):
    evaluation = pytest.importorskip("bayesvae.evaluation")
    log_marginal_likelihood = getattr(evaluation, "log_marginal_likelihood", None)
    if log_marginal_likelihood is None:
        pytest.skip("bayesvae.evaluation.log_marginal_likelihood is not available yet")
    data, _ = ppca_data
    est = ppca_mle(data.x, L)
    model = est.to_vae()
    result = log_marginal_likelihood((model, ExactPosteriorGuide(model)), data.x[:300], num_samples=10)
    # With the exact posterior as proposal every weight is p(x): ESS = K and log p-hat exact
    # up to float32 evaluation of terms ~ -20 (1e-4).
    torch.testing.assert_close(result.ess.double(), torch.full((300,), 10.0, dtype=torch.float64), rtol=1e-4, atol=0)
    torch.testing.assert_close(result.per_point.double(), est.log_prob(data.x[:300]), rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# SVI recovers maximum likelihood (Lucas et al. 2019)


def _exact_elbo(model, guide, x) -> torch.Tensor:
    """Per-point ELBO of a diagonal-Gaussian encoder, exactly: log p(x) - KL(q(z|x) || p(z|x))."""
    xt = torch.as_tensor(x)
    with torch.no_grad():
        q = guide.posterior(xt)["z"]
        q_full = dist.MultivariateNormal(
            q.base_dist.loc.double(), covariance_matrix=torch.diag_embed(q.base_dist.scale.double() ** 2)
        )
        W, mu, psi = (t.double() for t in linear_parameters(model))
        mean, cov = exact_posterior(W, mu, psi, xt.double())
        posterior = dist.MultivariateNormal(mean, covariance_matrix=cov)
        return model_log_likelihood(model, x).detach() - kl_divergence(q_full, posterior)


def test_svi_with_exact_guide_reaches_the_ppca_mle(ppca_data):
    data, truth = ppca_data
    mle = ppca_mle(data.x, L).log_likelihood
    model = ppca(D, L)
    # Full batch: with the exact guide the ELBO gradient is the exact log-likelihood gradient
    # (no Monte Carlo noise), so Adam converges like deterministic ascent (~3 s).
    bayesvae.fit(model, ExactPosteriorGuide(model), data, epochs=1000, batch_size=None, lr=0.05)
    ll = model_log_likelihood(model, data.x).mean().item()
    # No parameter setting beats the MLE (up to float32 parameters, ~1e-6); acceptance: 0.02.
    assert -1e-6 < mle - ll < 0.02
    assert _degrees(linear_parameters(model)[0].detach(), truth["W"]).max() < 5.0


def test_svi_linear_vae_with_amortized_guide_recovers_ppca(ppca_data):
    data, truth = ppca_data
    est = ppca_mle(data.x, L)
    model = ppca(D, L)
    guide = AmortizedGuide(model, hidden=())
    # Analytic KL ("meanfield") halves the gradient noise; a second stage at a tenth of the
    # learning rate shrinks the stationary SGD noise, which is what keeps q off the optimum
    # (one stage at lr=0.01: ~0.02 nats of KL; measured here: ELBO 0.010 nats below the MLE).
    # ~5 s single-threaded.
    bayesvae.fit(model, guide, data, epochs=2000, batch_size=None, lr=0.02, elbo="meanfield", seed=0)
    bayesvae.fit(model, guide, data, epochs=1000, batch_size=None, lr=0.002, elbo="meanfield", seed=1)
    elbo = _exact_elbo(model, guide, data.x)
    # The diagonal encoder is exact at a rotated MLE whose columns are orthogonal
    # (M = I + W^T W / sigma^2 diagonal), so the ELBO can reach the MLE (Lucas et al. 2019).
    assert est.log_likelihood - elbo.mean().item() < 0.05
    ll = model_log_likelihood(model, data.x).mean().item()
    assert -1e-6 < est.log_likelihood - ll < 0.02
    W = linear_parameters(model)[0].detach()
    assert _degrees(W, truth["W"]).max() < 5.0
    # The posterior covariance at the learned W is nearly diagonal (what the encoder exploits).
    _, cov = exact_posterior(W.double(), torch.zeros(D, dtype=torch.float64), linear_parameters(model)[2].detach().double(), torch.zeros(1, D))
    corr = cov / cov.diagonal().sqrt().outer(cov.diagonal().sqrt())
    assert (corr - torch.eye(L, dtype=torch.float64)).abs().max() < 0.1
    # The Monte Carlo ELBO that evaluate_elbo reports agrees: per-point log-weights have sd
    # ~ sqrt(2 KL) ~ 0.15, so 20 particles x 2000 points give s.e. ~ 8e-4; 5e-3 is > 6 s.e.
    mc = bayesvae.evaluate_elbo(model, guide, data, elbo="trace", num_particles=20, seed=0)
    assert mc == pytest.approx(elbo.mean().item(), abs=5e-3)


def test_svi_with_exact_guide_reaches_the_fa_em_solution(fa_data):
    em = factor_analysis_em(fa_data, L, tol=1e-10, max_iter=10_000)
    model = factor_analysis(D, L)
    bayesvae.fit(model, ExactPosteriorGuide(model), fa_data, epochs=1500, batch_size=None, lr=0.05)
    ll = model_log_likelihood(model, fa_data).mean().item()
    assert abs(em.log_likelihood - ll) < 0.02
    assert _degrees(linear_parameters(model)[0].detach(), em.W).max() < 2.0


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("method", [ppca_mle, factor_analysis_em])
def test_latent_dim_not_below_data_dim(method, ppca_data):
    data, _ = ppca_data
    with pytest.raises(ValueError, match=r"latent_dim=20 must be smaller than the data dimension 20"):
        method(data.x, 20)


@pytest.mark.parametrize("method", [ppca_mle, factor_analysis_em])
def test_fewer_rows_than_latent_dim(method, ppca_data):
    data, _ = ppca_data
    with pytest.raises(ValueError, match=r"needs more rows than latent_dim; the data have 3 rows"):
        method(data.x[:3], 3)


@pytest.mark.parametrize("method", [ppca_mle, factor_analysis_em])
def test_nan_is_rejected(method, ppca_data):
    data, _ = ppca_data
    x = data.x.copy()
    x[5, 2] = np.nan
    with pytest.raises(ValueError, match=r"contains NaN or inf in 1 rows \(columns \[2\]\)"):
        method(x, L)


@pytest.mark.parametrize("method", [ppca_mle, factor_analysis_em])
def test_latent_dim_type_and_sign(method, ppca_data):
    data, _ = ppca_data
    with pytest.raises(TypeError, match=r"latent_dim must be an int, got 2.0"):
        method(data.x, 2.0)
    with pytest.raises(ValueError, match=r"latent_dim must be a positive int, got 0"):
        method(data.x, 0)


def test_constant_column_under_factor_analysis(ppca_data):
    data, _ = ppca_data
    x = data.x.copy()
    x[:, 4] = 1.5
    x[:, 7] = 0.0
    with pytest.raises(ValueError, match=r"column\(s\) \[4, 7\] are constant \(zero variance\)"):
        factor_analysis_em(x, L)
    ppca_mle(x, L)  # one shared noise variance stays positive: PPCA is fine


def test_rank_deficient_data_under_ppca():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 2, generator=g) @ torch.randn(2, 6, generator=g)  # rank 2
    with pytest.raises(ValueError, match=r"covariance has rank <= latent_dim=2"):
        ppca_mle(x, 2)


def test_bad_em_settings(fa_data):
    with pytest.raises(ValueError, match=r"tol must be a positive finite number, got 0"):
        factor_analysis_em(fa_data, L, tol=0)
    with pytest.raises(ValueError, match=r"max_iter must be a positive int, got 0"):
        factor_analysis_em(fa_data, L, max_iter=0)


def test_bad_model_dimensions():
    with pytest.raises(ValueError, match=r"latent_dim=5 must be smaller than the data dimension 5"):
        ppca(5, 5)
    with pytest.raises(ValueError, match=r"latent_dim=6 must be smaller than the data dimension 5"):
        factor_analysis(5, 6)
    with pytest.raises(TypeError, match=r"data_dim must be an int, got '5'"):
        factor_analysis("5", 2)


def test_kernel_shape_and_positivity_errors():
    W, mu, psi, x = _random_model(0)
    with pytest.raises(ValueError, match=r"psi \(the noise variances\) must be positive; got minimum 0"):
        exact_log_likelihood(W, mu, psi * 0, x)
    with pytest.raises(ValueError, match=r"mu must have shape \(12,\)"):
        exact_log_likelihood(W, mu[:3], psi, x)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 12\)"):
        exact_posterior(W, mu, psi, x[:, :5])
    with pytest.raises(ValueError, match=r"psi must be a scalar or have shape \(12,\)"):
        exact_log_likelihood(W, mu, psi[:4], x)
    with pytest.raises(ValueError, match=r"x has 5 columns but the model has data_dim=20"):
        model_log_likelihood(ppca(20, 3), torch.zeros(4, 5))


def test_non_linear_models_are_rejected():
    nonlinear = VAE(prior=GaussianPrior(2), likelihood=Gaussian(data_dim=6), decoder=MLP(2, 6, hidden=(8,)))
    with pytest.raises(ValueError, match=r"needs an affine decoder"):
        linear_parameters(nonlinear)
    with pytest.raises(ValueError, match=r"needs an affine decoder"):
        ExactPosteriorGuide(nonlinear)
    binary = VAE(prior=GaussianPrior(2), likelihood=Bernoulli(), decoder=MLP(2, 6))
    with pytest.raises(ValueError, match=r"homoscedastic Gaussian likelihood .* this model's likelihood is Bernoulli"):
        model_log_likelihood(binary, torch.zeros(3, 6))
    hetero = VAE(prior=GaussianPrior(2), likelihood=Gaussian(heteroscedastic=True), decoder=MLP(2, 12))
    with pytest.raises(ValueError, match=r"is Gaussian \(heteroscedastic\)"):
        linear_parameters(hetero)
    with pytest.raises(TypeError, match=r"expected a bayesvae VAE with a linear decoder, got function"):
        linear_parameters(lambda x: x)


# ---------------------------------------------------------------------------------------------
# The example


def test_example_runs_with_tiny_arguments():
    script = ROOT / "examples" / "linear_vs_vae.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--n", "200", "--epochs", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    for label in ("PPCA (closed form)", "FA (EM)", "linear VAE (SVI)", "non-linear VAE"):
        assert label in proc.stdout
    numbers = [float(tok) for line in proc.stdout.splitlines() for tok in line.split() if _is_float(tok)]
    assert numbers and all(math.isfinite(v) for v in numbers)


def _is_float(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True
