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
