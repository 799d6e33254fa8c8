"""Diagnostics: Pareto-k-hat of the guide's importance weights, posterior predictive checks,
ArviZ InferenceData (accepted by ArviZ's functions, netCDF round trip), latent summaries."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy.stats import norm
from torch import nn

import bayesvae as bv
from bayesvae.diagnostics import (
    EXACT_RTOL,
    MIN_SAMPLES,
    PPCResult,
    pareto_smooth,
    posterior_predictive_check,
    ppc_pvalues,
    psis_diagnostic,
    sample_size_threshold,
    to_inference_data,
)
from bayesvae.diagnostics.inference_data import require_arviz
from bayesvae.diagnostics.latents import latent_summary
from bayesvae.evaluation import active_units, elbo_decomposition, log_marginal_likelihood
from bayesvae.models.linear import exact_log_likelihood
from bayesvae.models.vae import data_plate

az = require_arviz()


# ---------------------------------------------------------------------------------------------
# The linear-Gaussian model with its exact posterior as a guide (scaled by a factor)


class ScaledExactGuide(nn.Module):
    r"""q(z | x) = N(S W^T (x - b) / s^2, f^2 S), S = (I + W^T W / s^2)^{-1}: the exact posterior for f = 1."""

    def __init__(self, model: bv.VAE, factor: float = 1.0) -> None:
        super().__init__()
        object.__setattr__(self, "model", model)
        self.factor = factor

    def forward(self, x, *, index=None, num_data=None):
        layer = self.model.decoder.net[0]
        W, b = layer.weight, layer.bias
        s2 = float(self.model.likelihood.scale) ** 2
        cov = torch.linalg.inv(torch.eye(W.shape[1], dtype=W.dtype) + W.T @ W / s2)
        mean = (x - b) @ W @ cov / s2
        with data_plate(x.shape[0], index, num_data):
            return pyro.sample("z", dist.MultivariateNormal(mean, scale_tril=self.factor * torch.linalg.cholesky(cov)))


@pytest.fixture(scope="module")
def linear_data():
    return bv.datasets.linear_gaussian(200, 10, 2, 0.5, seed=0)


def linear_model(truth, noise: float, dtype=torch.float32, shift: float = 0.0) -> bv.VAE:
    """The simulating model itself (W, mu from the truth), with likelihood scale ``noise``."""
    d, L = truth["W"].shape
    model = bv.VAE(prior=bv.GaussianPrior(L), likelihood=bv.Gaussian(scale=noise), decoder=bv.MLP(L, d, hidden=()))
    with torch.no_grad():
        model.decoder.net[0].weight.copy_(torch.as_tensor(truth["W"]))
        model.decoder.net[0].bias.copy_(torch.as_tensor(truth["mu"]))
        model.decoder.net[0].bias[0] += shift
    return model.to(dtype)


def tiny_fit(columns=("a", "b", "c", "d", "e")):
    torch.manual_seed(0)
    model = bv.VAE(prior=bv.GaussianPrior(2), likelihood=bv.Gaussian(scale=1.0), decoder=bv.MLP(2, len(columns), hidden=(8,)))
    guide = bv.AmortizedGuide(model, hidden=(8,))
    x = pd.DataFrame(np.random.default_rng(0).normal(size=(30, len(columns))), columns=list(columns))
    return (model, guide), x


# ---------------------------------------------------------------------------------------------
# k-hat: known answers


@pytest.mark.parametrize("s", [0.5, 0.7, 0.9])
def test_khat_of_normal_proposal_for_normal_target_is_one_minus_s_squared(s):
    # Target N(0, 1), proposal N(0, s^2): w(z) = exp(c z^2) with c = (1/s^2 - 1)/2, so
    # P(w > t) = P(|z| > sqrt(log t / c)) ~ t^{-1/k} / sqrt(log t) with k = 2 c s^2 = 1 - s^2.
    k = 1 - s**2
    S, R = 10_000, 40
    rng = np.random.default_rng(1)
    z = rng.normal(0.0, s, size=(S, R))
    res = pareto_smooth(-0.5 * z**2 + 0.5 * z**2 / s**2)
    assert res.khat.shape == (R,) and not res.exact.any()
    mean = res.khat.mean()
    se = res.khat.std(ddof=1) / math.sqrt(R)
    # Tolerances: (i) 4 standard errors of the mean over R replicates (false failure < 1e-4);
    # (ii) the 1/sqrt(log t) factor makes the tail's local index at the cutoff
    # k_loc = k / (1 + 1/u^2), u the normal quantile of the tail share M / (2S)
    # (M = min(S/5, 3 sqrt S) = 300), so E k-hat lies in [k_loc, k]; (iii) ArviZ shrinks
    # k-hat toward 0.5 with weight 10 / (M + 10).
    M = math.ceil(min(S / 5, 3 * math.sqrt(S)))
    u = norm.isf(M / (2 * S))
    k_loc = k / (1 + 1 / u**2)
    shrink = 10 / (M + 10) * (0.5 - k)
    assert k_loc + min(shrink, 0) - 4 * se <= mean <= k + max(shrink, 0) + 4 * se, (mean, k_loc, k)
    # the estimate would catch a proposal of the wrong width: k(s +- 0.1) is outside
    assert abs(mean - (1 - (s + 0.1) ** 2)) > 4 * se or abs(mean - (1 - (s - 0.1) ** 2)) > 4 * se


def test_constant_log_weights_are_exact_not_infinite():
    # ArviZ returns k = inf for constant weights; that is the best case (proposal = target)
    lw = np.full((100, 3), -12.5)
    lw[:, 1] += np.random.default_rng(0).normal(0, 1e-14, 100)  # rounding-sized noise
    lw[:, 2] += np.random.default_rng(1).normal(0, 1e-3, 100)  # a real (tiny) mismatch
    res = pareto_smooth(lw)
    assert res.exact.tolist() == [True, True, False]
    assert res.khat[0] == -np.inf and res.khat[1] == -np.inf and np.isfinite(res.khat[2])
    np.testing.assert_allclose(res.log_mean[:2], -12.5, atol=1e-12)
    np.testing.assert_allclose(res.ess[:2], 100, rtol=1e-9)
    # the default tolerance scales with the dtype: float32 rounding of the same size is exact
    lw32 = (np.full((100, 1), -12.5) + np.random.default_rng(2).normal(0, 2e-6, (100, 1))).astype(np.float32)
    assert pareto_smooth(lw32).exact.all()
    assert EXACT_RTOL * np.finfo(np.float32).eps * 12.5 > 1e-5


def test_pareto_smooth_input_errors():
    with pytest.raises(ValueError, match=f"PSIS needs at least {MIN_SAMPLES} draws per point"):
        pareto_smooth(np.zeros((10, 3)))
    with pytest.raises(ValueError, match=r"log_weights must have shape \(num_samples, num_points\)"):
        pareto_smooth(np.zeros(100))
    bad = np.zeros((50, 4))
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="log_weights contain NaN for 1 points"):
        pareto_smooth(bad)


def test_sample_size_threshold():
    assert sample_size_threshold(100) == pytest.approx(0.5)
    assert sample_size_threshold(1000) == pytest.approx(1 - 1 / 3)
    assert sample_size_threshold(10**6) == 0.7
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        sample_size_threshold(0)


# ---------------------------------------------------------------------------------------------
# k-hat: acceptance on the linear-Gaussian model


def test_khat_small_for_exact_posterior_guide(linear_data):
    data, truth = linear_data
    model = linear_model(truth, 0.5)
    diag = psis_diagnostic((model, ScaledExactGuide(model, 1.0)), data.x, num_samples=1000, seed=0)
    # float32 log weights are constant up to rounding: every point is "exact", k-hat = -inf
    assert diag.exact.all() and np.all(diag.khat == -np.inf)
    assert np.mean(diag.khat < 0.5) >= 0.95
    # ... and the PSIS and IWAE estimates are the exact log-likelihood (float32 rounding)
    ll = exact_log_likelihood(truth["W"], truth["mu"], np.full(10, 0.25), data.x).numpy()
    np.testing.assert_allclose(diag.log_px_psis, ll, atol=1e-4)
    np.testing.assert_allclose(diag.log_px_iwae, ll, atol=1e-4)
    assert "exact posterior" in diag.verdict()


def test_khat_small_for_overdispersed_guide(linear_data):
    # A non-degenerate check of "k-hat < 0.5 for a good guide": q 1.5x wider than the
    # posterior has bounded weights (true k <= 0).
    data, truth = linear_data
    model = linear_model(truth, 0.5)
    diag = psis_diagnostic((model, ScaledExactGuide(model, 1.5)), data.x, num_samples=4000, seed=0)
    assert not diag.exact.any()
    assert np.mean(diag.khat < 0.5) >= 0.95
    # Relative variance of the weights per dim is f / sqrt(2 - 1/f^2) - 1, so in L = 2 dims
    # Var(w / p(x)) = (1.5 / sqrt(2 - 1/2.25))^2 - 1 = 0.447 and the log estimate has sd
    # sqrt(0.447 / S) = 0.0106: 5 sd bounds every point (failure < 1e-4 over 200 points).
    ll = exact_log_likelihood(truth["W"], truth["mu"], np.full(10, 0.25), data.x).numpy()
    assert np.abs(diag.log_px_iwae - ll).max() < 5 * 0.0106
    assert np.abs(diag.log_px_psis - ll).max() < 5 * 0.0106


def test_khat_detects_a_too_narrow_guide(linear_data):
    # q with 0.1x the posterior scale: in L = 2 whitened dims w = C exp(c |u|^2) with
    # |u|^2 / f^2 ~ chi2_2 (exponential), so P(w > t) = (t / C)^{-1/k} exactly, k = 1 - f^2 = 0.99.
    data, truth = linear_data
    model = linear_model(truth, 0.5)
    diag = psis_diagnostic((model, ScaledExactGuide(model, 0.1)), data.x, num_samples=4000, seed=0)
    # k-hat has sd ~ (1 + k) / sqrt(M) = 0.14 (M = 190 tail draws) and ArviZ's shrinkage moves
    # it by 10/200 * (0.5 - 0.99) = -0.025: P(k-hat < 0.7) = P(Z < -1.8) = 3.5% per point,
    # so >= 90% of 200 points is > 4 binomial sd below the expected 96.5%.
    assert np.mean(diag.khat > 0.7) >= 0.9
    s = diag.summary()
    assert s["share_khat_gt_threshold"] >= 0.9
    verdict = diag.verdict()
    assert "too narrow" in verdict and "k-hat > 0.7 for" in verdict


def test_khat_matches_tail_index_through_the_pipeline(linear_data):
    # f = 0.7: exact Pareto tail with k = 1 - 0.49 = 0.51 (see above); the mean k-hat over 200
    # points has sd ~ 1.5 / sqrt(190) / sqrt(200) = 0.0077; 4 sd + the 0.0005 shrinkage.
    data, truth = linear_data
    model = linear_model(truth, 0.5)
    diag = psis_diagnostic((model, ScaledExactGuide(model, 0.7)), data.x, num_samples=4000, seed=0)
    assert abs(diag.khat.mean() - 0.51) < 4 * 0.0077 + 0.001


def test_iwae_of_diagnostic_equals_log_marginal_likelihood(linear_data):
    # identity: the same seed and draws as bayesvae.evaluation.log_marginal_likelihood
    data, truth = linear_data
    model = linear_model(truth, 0.5)
    guide = ScaledExactGuide(model, 0.8)
    diag = psis_diagnostic((model, guide), data.x, num_samples=300, seed=3)
    lml = log_marginal_likelihood((model, guide), data.x, num_samples=300, seed=3)
    np.testing.assert_allclose(diag.log_px_iwae, lml.per_point.double().numpy(), rtol=0, atol=1e-5)


def test_library_exact_posterior_guide_is_exact(linear_data):
    guides = pytest.importorskip("bayesvae.guides")
    if not hasattr(guides, "ExactPosteriorGuide"):
        pytest.skip("bayesvae.guides.ExactPosteriorGuide is not available")
    data, truth = linear_data
    model = linear_model(truth, 0.5)
    diag = psis_diagnostic((model, guides.ExactPosteriorGuide(model)), data.x, num_samples=200, seed=0)
    assert diag.exact.all()


def test_psis_diagnostic_argument_errors():
    fit, x = tiny_fit()
    with pytest.raises(ValueError, match="PSIS needs at least 25 draws per point"):
        psis_diagnostic(fit, x, num_samples=10)
    with pytest.raises(ValueError, match=r"threshold must be a number in \(0, 1\)"):
        psis_diagnostic(fit, x, num_samples=50, threshold=1.5)
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        psis_diagnostic(fit, x, num_samples=0)
    with pytest.raises(TypeError, match="expected a bayesvae FitResult or a"):
        psis_diagnostic("fit", x)


# ---------------------------------------------------------------------------------------------
# Posterior predictive checks


def test_ppc_passes_well_specified_and_flags_too_small_noise(linear_data):
    data, truth = linear_data
    good = linear_model(truth, 0.5)
    ppc = posterior_predictive_check((good, ScaledExactGuide(good, 1.0)), data.x, num_samples=200, seed=0)
    assert not ppc.fails, ppc.verdict()
    assert ppc.num_extreme <= ppc.chance_limit
    assert "passed" in ppc.verdict()
    # the true noise is 0.5; a model with fixed scale 0.05 cannot produce the data's variance
    bad = linear_model(truth, 0.05)
    ppc = posterior_predictive_check((bad, ScaledExactGuide(bad, 1.0)), data.x, num_samples=200, seed=0)
    assert ppc.fails
    var = ppc.statistics[ppc.statistics["statistic"] == "variance"]
    # the observed variance exceeds every replicate's for most columns: p = 0
    assert (var["p_value"] == 0.0).mean() >= 0.8
    assert (var["observed"] > var["replicated_upper"]).mean() >= 0.8
    verdict = ppc.verdict()
    assert "failed" in verdict and "noise may be too small" in verdict


def test_ppc_flags_a_misspecified_mean(linear_data):
    # the decoder's bias of column 0 is off by 1 (2 noise sd): one statistic far outside
    data, truth = linear_data
    model = linear_model(truth, 0.5, shift=1.0)
    ppc = posterior_predictive_check((model, ScaledExactGuide(model, 1.0)), data.x, num_samples=200, seed=0)
    assert ppc.fails
    top = ppc.extreme().iloc[0]
    assert (top["statistic"], top["column"]) == ("mean", "x0")
    assert top["p_value"] == 1.0 and abs(top["z"]) > ppc.z_limit


def test_ppc_pvalues_known_answers():
    rng = np.random.default_rng(0)
    N, d, S = 100, 40, 200
    obs = rng.normal(size=(N, d))
    reps = rng.normal(size=(S, N, d))
    obs[:, 1] = 0.0
    reps[:, :, 1] = 0.0  # constant everywhere: ties count half
    obs[:, 2] += 3.0  # a shifted column: every replicate's mean is below
    res = ppc_pvalues(obs, reps, alpha=0.01)
    t = res.statistics.set_index(["statistic", "column"])
    assert t.loc[("mean", "x1"), "p_value"] == 0.5 and t.loc[("variance", "x1"), "p_value"] == 0.5
    assert t.loc[("mean", "x2"), "p_value"] == 0.0 and bool(t.loc[("mean", "x2"), "extreme"])
    # replicates from the data's own distribution: p-values are uniform; the mean over the
    # 37 other column means has sd sqrt(1/12/37) = 0.047, so 4 sd = 0.19
    others = [c for c in res.columns if c not in ("x1", "x2")]
    p = t.loc[[("mean", c) for c in others], "p_value"]
    assert abs(p.mean() - 0.5) < 0.19
    assert res.fails  # the shifted column is far beyond the Bonferroni z limit
    assert list(res.statistics.columns) == [
        "statistic", "column", "observed", "replicated_mean", "replicated_lower", "replicated_upper", "z", "p_value", "extreme",
    ]


def test_ppc_errors():
    with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 0.5\)"):
        ppc_pvalues(np.zeros((5, 2)), np.zeros((3, 5, 2)), alpha=0.7)
    with pytest.raises(ValueError, match=r"replicated must have shape \(S, N, d\) matching observed"):
        ppc_pvalues(np.zeros((5, 2)), np.zeros((3, 4, 2)))
    with pytest.raises(ValueError, match="need at least 2 replicated data sets"):
        ppc_pvalues(np.zeros((5, 2)), np.zeros((1, 5, 2)))
    with pytest.raises(ValueError, match="got 1 column names for 2 columns"):
        ppc_pvalues(np.zeros((5, 2)), np.zeros((3, 5, 2)), columns=["a"])


# ---------------------------------------------------------------------------------------------
# InferenceData


@pytest.fixture(scope="module")
def idata_and_fit():
    fit, x = tiny_fit()
    return to_inference_data(fit, x, num_samples=40, seed=0), fit, x


def test_inference_data_groups_dims_and_coords(idata_and_fit):
    idata, fit, x = idata_and_fit
    assert set(idata.groups()) >= {"posterior", "posterior_predictive", "observed_data", "log_likelihood", "sample_stats"}
    assert dict(idata.posterior["z"].sizes) == {"chain": 1, "draw": 40, "obs": 30, "latent": 2}
    assert dict(idata.posterior_predictive["x"].sizes) == {"chain": 1, "draw": 40, "obs": 30, "feature": 5}
    assert idata.observed_data["x"].dims == ("obs", "feature")
    assert list(idata.observed_data["feature"].values) == ["a", "b", "c", "d", "e"]
    np.testing.assert_allclose(idata.observed_data["x"].values, x.to_numpy(), rtol=1e-6)
    assert dict(idata.log_likelihood["x"].sizes) == {"chain": 1, "draw": 40, "obs": 30}
    ss = idata.sample_stats
    np.testing.assert_allclose(ss["log_weight"].values, (ss["log_joint"] - ss["log_q"]).values, atol=1e-5)
    for key in ("model", "guide", "objective", "bayesvae_version", "torch_version", "inference_library_version"):
        assert key in idata.attrs and key in idata.posterior.attrs
    assert idata.posterior.attrs["arviz_version"] == az.__version__
    assert '"GaussianPrior"' in idata.attrs["model"]


def test_inference_data_log_likelihood_is_the_model_density(idata_and_fit):
    # the replayed likelihood: x ~ N(decoder(z), 1) for the stored z draws
    idata, (model, guide), x = idata_and_fit
    z = torch.as_tensor(idata.posterior["z"].values[0])
    with torch.no_grad():
        mean = model.decoder(z)
    xt = torch.tensor(x.to_numpy(), dtype=torch.float32)
    expected = torch.distributions.Normal(mean, 1.0).log_prob(xt).sum(-1).numpy()
    np.testing.assert_allclose(idata.log_likelihood["x"].values[0], expected, rtol=1e-5, atol=1e-4)


def test_arviz_accepts_the_inference_data(idata_and_fit, tmp_path):
    idata, fit, x = idata_and_fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = az.summary(idata, var_names=["z"], kind="stats")
        assert len(summary) == 30 * 2 and {"mean", "sd"} <= set(summary.columns)
        axes = az.plot_posterior(idata, var_names=["z"], coords={"obs": [0, 1]})
        assert np.asarray(axes).size == 4
        assert az.plot_ppc(idata, num_pp_samples=10) is not None
        loo = az.loo(idata, pointwise=True)
        assert loo.pareto_k.shape == (30,)
        assert az.plot_khat(loo) is not None
        diag = psis_diagnostic(fit, x, num_samples=100)
        assert az.plot_khat(diag.khat) is not None
    import matplotlib.pyplot as plt

    plt.close("all")
    path = tmp_path / "fit.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    for group in ("posterior", "posterior_predictive", "observed_data", "log_likelihood", "sample_stats"):
        xr_a, xr_b = getattr(idata, group), getattr(back, group)
        for name in xr_a.data_vars:
            np.testing.assert_array_equal(xr_a[name].values, xr_b[name].values)
    assert back.attrs["model"] == idata.attrs["model"]
    assert list(back.observed_data["feature"].values) == ["a", "b", "c", "d", "e"]


def test_inference_data_with_global_sites_draws_them_jointly():
    ibp = pytest.importorskip("bayesvae.models.ibp")
    torch.manual_seed(0)
    model = bv.VAE(prior=ibp.IBPPrior(2.0, truncation=4), likelihood=bv.Gaussian(scale=0.5), decoder=bv.MLP(4, 6))
    guide = bv.AmortizedGuide(model, hidden=(8,))
    x = np.random.default_rng(0).normal(size=(12, 6)).astype(np.float32)
    idata = to_inference_data((model, guide), x, num_samples=30, seed=0)
    nu = idata.posterior["nu"]
    assert nu.dims == ("chain", "draw", "nu_dim_0") and nu.shape == (1, 30, 4)
    # globals_once=False by default: one fresh g ~ q(g) per draw, so az.summary sees spread
    assert float(nu.std("draw").min()) > 0
    # scored with the discrete indicators
    assert set(np.unique(idata.posterior["b"].values)) <= {0.0, 1.0}
    assert idata.attrs["globals_once"] == 0 and idata.attrs["global_sites"] == "nu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(az.summary(idata, var_names=["nu"], kind="stats")) == 4
    once = to_inference_data((model, guide), x, num_samples=30, seed=0, globals_once=True)
    values = once.posterior["nu"].values[0]
    assert np.all(values == values[0])


def test_inference_data_from_tensor_and_dataframe_index():
    fit, x = tiny_fit()
    idata = to_inference_data(fit, torch.tensor(x.to_numpy(), dtype=torch.float32), num_samples=5)
    np.testing.assert_array_equal(idata.posterior["obs"].values, np.arange(30))
    assert list(idata.observed_data["feature"].values) == ["x0", "x1", "x2", "x3", "x4"]
    named = x.set_index(pd.Index([f"row{i}" for i in range(30)]))
    idata = to_inference_data(fit, named, num_samples=5)
    assert list(idata.posterior["obs"].values[:2]) == ["row0", "row1"]


def test_to_inference_data_errors():
    fit, x = tiny_fit()
    with pytest.raises(TypeError, match="globals_once must be True, False or None"):
        to_inference_data(fit, x, globals_once="yes")
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        to_inference_data(fit, x, num_samples=0)
    with pytest.raises(ValueError, match="has 4 columns but the model expects data_dim=5"):
        to_inference_data(fit, x.iloc[:, :4])


def test_require_arviz_refuses_the_1x_line(monkeypatch):
    monkeypatch.setattr(az, "__version__", "1.3.0")
    with pytest.raises(ImportError, match=r"needs ArviZ 0.x .* found arviz 1.3.0"):
        require_arviz()


def test_ppc_from_inference_data(idata_and_fit):
    idata, _, _ = idata_and_fit
    ppc = PPCResult.from_inference_data(idata)
    assert ppc.columns == ("a", "b", "c", "d", "e") and ppc.num_samples == 40
    with pytest.raises(ValueError, match="observed_data has no variable 'y'"):
        PPCResult.from_inference_data(idata, var_name="y")


# ---------------------------------------------------------------------------------------------
# Latent summaries


def test_latent_summary_kl_adds_up_to_the_elbo_kl_and_activity_matches():
    fit, x = tiny_fit()
    lat = latent_summary(fit, x, num_samples=5, seed=0)
    parts = elbo_decomposition(fit, x, num_samples=5, seed=0)
    # identity: analytic Gaussian KL split over units sums to the ELBO's KL
    assert lat.kl_method == {"z": "analytic"}
    assert lat.kl["z"].sum() == pytest.approx(float(parts.kl.double().mean()), rel=1e-5)
    au = active_units(fit, x)
    np.testing.assert_allclose(lat.activity["z"], au.variance["z"].double().numpy(), rtol=1e-5)
    assert lat.num_active == au.num_active
    assert list(lat.to_frame().columns) == ["site", "unit", "kl", "activity", "active"]
    with pytest.raises(ValueError, match="threshold must be a non-negative number"):
        latent_summary(fit, x, threshold=-1)


def test_diagnostics_on_the_models_device(device):
    # data given as numpy are moved to the model's device; results come back as numpy
    fit, x = tiny_fit()
    model, guide = fit
    model.to(device), guide.to(device)
    diag = psis_diagnostic((model, guide), x.to_numpy(), num_samples=30)
    assert diag.khat.shape == (30,) and np.isfinite(diag.log_px_iwae).all()
    idata = to_inference_data((model, guide), x, num_samples=5)
    assert idata.posterior_predictive["x"].shape == (1, 5, 30, 5)
    ppc = posterior_predictive_check((model, guide), x, num_samples=5)
    assert len(ppc.statistics) == 11
    assert latent_summary((model, guide), x).means["z"].shape == (30, 2)
