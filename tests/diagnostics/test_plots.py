"""Figures: every plot returns a matplotlib Figure that draws the numbers it is given."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import bayesvae as bv
from bayesvae import plots
from bayesvae.diagnostics import ParetoDiagnostic, ppc_pvalues, psis_diagnostic
from bayesvae.diagnostics.latents import latent_summary


def _renders(fig: Figure) -> bytes:
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    png = buf.getvalue()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return png


@pytest.fixture(scope="module")
def digits_fit():
    data = bv.datasets.digits(binarize=True)
    train, valid = data.split(test_fraction=0.2, seed=0)
    torch.manual_seed(0)
    model = bv.VAE(prior=bv.GaussianPrior(3), likelihood=bv.Bernoulli(), decoder=bv.MLP(3, 64, hidden=(32,)))
    guide = bv.AmortizedGuide(model, hidden=(32,))
    with torch.random.fork_rng():
        fit = bv.fit(model, guide, train, epochs=2, validation=valid, seed=0)
    return fit, valid


def test_lead_plots_keep_their_signatures(digits_fit):
    fit, valid = digits_fit
    fig = plots.plot_history(fit)
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.get_lines()] == ["train ELBO", "validation ELBO"]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), fit.history["elbo"])
    _renders(fig)
    _renders(plots.plot_reconstructions(fit, valid))
    _renders(plots.plot_reconstructions(fit, valid, num=4))
    _renders(plots.plot_prior_samples(fit, num=9, seed=1))


def test_kl_per_dimension_draws_the_sorted_kl(digits_fit):
    fit, valid = digits_fit
    lat = latent_summary(fit, valid, seed=0)
    fig = plots.plot_kl_per_dimension(summary=lat)
    heights = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_allclose(heights, np.sort(lat.kl["z"])[::-1])
    assert f"{lat.num_active} of 3 units active" in fig.axes[0].get_title()
    _renders(plots.plot_kl_per_dimension(fit, valid))


def test_latent_embedding_and_traversals(digits_fit):
    fit, valid = digits_fit
    lat = latent_summary(fit, valid, seed=0)
    fig = plots.plot_latent_embedding(summary=lat, labels=valid.labels)
    ax = fig.axes[0]
    assert len(ax.collections) == len(np.unique(valid.labels))  # one scatter per digit
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(valid.x)
    _renders(fig)
    with pytest.raises(ValueError, match="labels has 3 entries but the data have 360 rows"):
        plots.plot_latent_embedding(summary=lat, labels=[1, 2, 3])
    with pytest.raises(ValueError, match="no local latent site 'w'"):
        plots.plot_latent_embedding(summary=lat, site="w")
    fig = plots.plot_latent_traversals(fit, valid, summary=lat, num_steps=5)
    image = fig.axes[0].get_images()[0].get_array()
    # 3 units x (8 + 1) pixel rows, 5 steps x (8 + 1) pixel columns
    assert image.shape == (3 * 9, 5 * 9)
    _renders(fig)
    with pytest.raises(ValueError, match="num_steps must be at least 2"):
        plots.plot_latent_traversals(fit, valid, summary=lat, num_steps=1)
    with pytest.raises(ValueError, match="point must be a row number in 0..359"):
        plots.plot_latent_traversals(fit, valid, summary=lat, point=400)
    with pytest.raises(TypeError, match="latent traversals need a bayesvae VAE"):
        plots.plot_latent_traversals(SimpleNamespace(model=lambda x: x, guide=None), valid)


def test_traversals_of_tabular_data_are_line_plots():
    torch.manual_seed(0)
    model = bv.VAE(prior=bv.GaussianPrior(2), likelihood=bv.Gaussian(scale=1.0), decoder=bv.MLP(2, 4))
    guide = bv.AmortizedGuide(model, hidden=(8,))
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    fig = plots.plot_latent_traversals((model, guide), x, num_steps=6)
    assert len(fig.axes[0].get_lines()) == 4 and len(fig.axes[0].get_lines()[0].get_xdata()) == 6
    _renders(fig)


def test_khat_histogram_counts_every_finite_point():
    rng = np.random.default_rng(0)
    khat = np.concatenate([rng.uniform(-0.3, 1.2, 50), [-np.inf, -np.inf, np.nan]])
    diag = ParetoDiagnostic(
        khat=khat, exact=np.isneginf(khat), log_px_psis=np.zeros(53), log_px_iwae=np.zeros(53), ess=np.ones(53), num_samples=100
    )
    fig = plots.plot_khat(diag)
    assert sum(p.get_height() for p in fig.axes[0].patches) == 50
    title = fig.axes[0].get_title()
    assert "exact 2" in title and "undetermined 1" in title
    _renders(fig)


def test_khat_histogram_of_a_real_diagnostic(digits_fit):
    fit, valid = digits_fit
    _renders(plots.plot_khat(psis_diagnostic(fit, valid, num_samples=30)))


@pytest.fixture(scope="module")
def ppc():
    rng = np.random.default_rng(0)
    obs = np.column_stack([rng.normal(size=60), rng.integers(0, 2, 60), rng.normal(3, 1, 60)])
    reps = np.stack([np.column_stack([rng.normal(size=60), rng.integers(0, 2, 60), rng.normal(size=60)]) for _ in range(50)])
    return ppc_pvalues(obs, reps, columns=["g", "bin", "shifted"])


def test_ppc_column_plots(ppc):
    fig = plots.plot_ppc_columns(ppc, max_columns=3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles[0].startswith("shifted:")  # the most extreme column first
    _renders(fig)
    for kind in ("ecdf", "hist", "freq"):
        _renders(plots.plot_ppc_columns(ppc, columns=["bin"], kind=kind))
    with pytest.raises(ValueError, match="kind must be 'auto', 'ecdf', 'hist' or 'freq'"):
        plots.plot_ppc_columns(ppc, kind="violin")
    with pytest.raises(ValueError, match=r"unknown columns \['nope'\]"):
        plots.plot_ppc_columns(ppc, columns=["nope"])


def test_ppc_statistics_plot_shows_the_observed_values(ppc):
    fig = plots.plot_ppc_statistics(ppc)
    means = ppc.statistics[ppc.statistics["statistic"] == "mean"]["observed"].to_numpy()
    np.testing.assert_allclose(fig.axes[0].collections[-1].get_offsets()[:, 1], means)
    assert "correlation discrepancy" in fig.axes[2].get_title()
    _renders(fig)
    _renders(plots.plot_ppc_statistics(ppc, max_columns=2))


def test_ibp_feature_usage_and_global_sites():
    ibp = pytest.importorskip("bayesvae.models.ibp")
    data, _ = bv.datasets.bars(60, seed=0)
    torch.manual_seed(0)
    model = bv.VAE(prior=ibp.IBPPrior(2.0, truncation=5), likelihood=bv.Gaussian(scale=0.5), decoder=bv.MLP(5, 36))
    guide = bv.AmortizedGuide(model, hidden=(16,))
    fit = bv.fit(model, guide, data, epochs=1, seed=0)
    fig = plots.plot_feature_usage(fit, data)
    usage = ibp.feature_usage(fit, data)
    np.testing.assert_allclose([p.get_height() for p in fig.axes[0].patches], usage["usage"], rtol=1e-6)
    _renders(fig)
    fig = plots.plot_global_sites(fit)
    assert "nu (5,)" in fig.axes[0].get_title()
    means = fig.axes[0].get_lines()[0].get_ydata()
    beta = guide.globals.distribution("nu")
    # Monte Carlo means of 2000 Beta draws: sd <= 0.5 / sqrt(2000) = 0.011; 5 sd
    np.testing.assert_allclose(means, beta.mean.detach().numpy(), atol=0.056)
    _renders(fig)


def test_ard_relevance_plot():
    hier = pytest.importorskip("bayesvae.models.hierarchical")
    data, _ = bv.datasets.linear_gaussian(80, 6, 2, 0.5, seed=0)
    torch.manual_seed(0)
    model = bv.VAE(prior=hier.ARDPrior(3, width=6), likelihood=bv.Gaussian(data_dim=6), decoder=hier.ARDDecoder(6))
    guide = bv.AmortizedGuide(model, hidden=(8,))
    fit = bv.fit(model, guide, data, epochs=1, seed=0)
    fig = plots.plot_relevance(fit)
    rel = model.prior.relevance(fit, level=0.9)
    np.testing.assert_allclose(sorted(p.get_height() for p in fig.axes[0].patches), np.sort(rel["tau_mean"]), rtol=1e-6)
    _renders(fig)
    fig = plots.plot_global_sites(fit, sites=["ard_scale"])
    _renders(fig)
    with pytest.raises(ValueError, match=r"unknown global sites \['tau'\]"):
        plots.plot_global_sites(fit, sites=["tau"])
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\)"):
        plots.plot_global_sites(fit, level=1.5)


def test_global_sites_needs_global_latents(digits_fit):
    fit, _ = digits_fit
    with pytest.raises(ValueError, match="the fit's guide has no mean-field global part"):
        plots.plot_global_sites(fit)


# --------------------------------------------------------------------------- plots draw result objects


def test_reconstructions_and_prior_samples_are_computed_once_and_drawn_as_given(digits_fit):
    from bayesvae.diagnostics.decoded import prior_samples, reconstructions

    fit, valid = digits_fit
    rec = reconstructions(fit, valid, num=4)
    x = torch.as_tensor(valid.x[:4])
    with torch.no_grad():
        expected = fit.model.reconstruct(fit.guide.posterior(x)["z"].mean)
    np.testing.assert_allclose(rec.reconstruction, expected.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(rec.data, valid.x[:4])
    canvas = plots.plot_reconstructions(rec).axes[1].get_images()[0].get_array()
    # image k sits in columns 9k..9k+8 of the canvas (8x8 images, one pixel apart)
    for k in range(4):
        np.testing.assert_allclose(canvas[:8, 9 * k : 9 * k + 8], rec.reconstruction[k].reshape(8, 8), rtol=1e-6)
    a, b = prior_samples(fit, num=9, seed=3), prior_samples(fit, num=9, seed=3)
    np.testing.assert_array_equal(a.mean, b.mean)
    drawn = plots.plot_prior_samples(fit, num=9, seed=3).axes[0].get_images()[0].get_array()
    np.testing.assert_allclose(drawn[:8, :8], a.mean[0].reshape(8, 8), rtol=1e-6)


def test_traversals_span_the_5_to_95_percent_range_of_the_posterior_means(digits_fit):
    from bayesvae.diagnostics.decoded import latent_traversals

    fit, valid = digits_fit
    lat = latent_summary(fit, valid, seed=0)
    t = latent_traversals(fit, valid, summary=lat, num_steps=4, units=[2, 0])
    lo, hi = np.quantile(lat.means["z"], [0.05, 0.95], axis=0)
    assert t.units == [2, 0] and t.site == "z"
    np.testing.assert_allclose([t.values[0][0], t.values[0][-1]], [lo[2], hi[2]])
    assert t.decoded[1].shape == (4, 64)
    _renders(plots.plot_latent_traversals(t))


def test_correlation_discrepancy_plot_draws_the_replicates_the_p_value_used():
    rng = np.random.default_rng(1)
    d = 300  # above MAX_CORRELATION_COLUMNS: the p-value uses a random subset of 256 columns
    obs = rng.normal(size=(40, d))
    reps = rng.normal(size=(20, 40, d))
    ppc = ppc_pvalues(obs, reps, columns=[f"c{j}" for j in range(d)])
    row = ppc.statistics[ppc.statistics["statistic"] == "correlation"].iloc[0]
    d_rep = ppc.replicated_discrepancy
    assert d_rep.shape == (20,)
    # the p-value is the mid-p of the observed discrepancy among exactly these replicates
    assert row["p_value"] == pytest.approx(np.mean(d_rep > row["observed"]) + 0.5 * np.mean(d_rep == row["observed"]))
    fig = plots.plot_ppc_statistics(ppc)
    assert sum(p.get_height() for p in fig.axes[2].patches) == 20


def test_correlation_discrepancy_matches_a_plain_loop():
    rng = np.random.default_rng(2)
    obs = rng.normal(size=(30, 4))
    reps = rng.normal(size=(6, 30, 4))
    ppc = ppc_pvalues(obs, reps)
    corr = [np.corrcoef(r, rowvar=False) for r in reps]
    c_bar = np.mean(corr, axis=0)
    off = ~np.eye(4, dtype=bool)
    expected = [np.sqrt(np.mean((c - c_bar)[off] ** 2)) for c in corr]
    np.testing.assert_allclose(ppc.replicated_discrepancy, expected, rtol=1e-10)


def test_prior_figures_draw_the_tables_they_are_given():
    import pandas as pd

    from bayesvae.models import PriorSummary

    usage = pd.DataFrame(
        {"feature": [1, 2, 3], "usage": [0.9, 0.4, 0.01], "fraction_used": [1.0, 0.3, 0.0], "expected_pi": [0.6, 0.4, 0.2], "prior_pi": [0.67, 0.44, 0.3], "active": [True, True, False]}
    )
    usage.attrs.update(threshold=0.05, num_active=2)
    fig = plots.plot_feature_usage(usage)
    np.testing.assert_allclose([p.get_height() for p in fig.axes[0].patches], usage["usage"])
    assert fig.axes[0].get_title() == "IBP features: 2 active of 3"
    intervals = pd.DataFrame({"site": ["s", "s", "t"], "element": ["0", "1", ""], "mean": [0.5, -1.0, 2.0], "lower": [0.0, -2.0, 1.0], "upper": [1.0, 0.0, 3.0]})
    fig = plots.plot_global_sites(intervals)
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), [0.5, -1.0])
    np.testing.assert_allclose(fig.axes[1].get_lines()[0].get_ydata(), [2.0])
    summary = PriorSummary("t", "T", "intervals", intervals, "caption")
    _renders(plots.plot_prior_summary(summary))
    assert plots.plot_prior_summary(PriorSummary("t", "T", "table", intervals)) is None
    with pytest.raises(TypeError, match="plot_prior_summary draws a PriorSummary, got DataFrame"):
        plots.plot_prior_summary(intervals)
    with pytest.raises(ValueError, match=r"intervals lacks the columns \['upper'\]"):
        plots.plot_global_sites(intervals.drop(columns="upper"))
