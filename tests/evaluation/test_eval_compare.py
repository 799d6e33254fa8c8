"""compare / evaluate: ranking with paired standard errors, tables, and the example script."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from _eval_helpers import (
    ExactPosteriorGuide,
    diagonal_guide,
    exact_log_px,
    linear_problem,
    linear_vae,
)

import bayesvae
from bayesvae.compare import compare, to_html, to_markdown
from bayesvae.evaluation import METRICS, evaluate

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def three_factor_data():
    """Data from a 3-factor linear-Gaussian model; fits with 3 and with 1 factor(s)."""
    W, mu, sigma, x = linear_problem(n=300, d=6, k=3, sigma=0.3, seed=11)
    return W, mu, sigma, x[:200], x[200:]


def test_bad_model_ranked_below_good_by_more_than_two_paired_se(three_factor_data):
    W, mu, sigma, _, test = three_factor_data
    good = linear_vae(W, mu, sigma)
    # "far too small latent space": one factor, with the noise that best explains the rest
    W1 = W[:, :1]
    sigma1 = float(math.sqrt(sigma**2 + (W[:, 1:] ** 2).sum() / W.shape[0]))
    bad = linear_vae(W1, mu, sigma1)
    fits = {
        "one_factor": (bad, diagonal_guide(bad, W1, mu, sigma1)),
        "three_factors": (good, ExactPosteriorGuide(W, mu, sigma)),
    }
    table = compare(fits, test, num_samples=200, seed=0, gaps=False)
    assert list(table.index) == ["three_factors", "one_factor"] and table.index.name == "model"
    assert table["rank"].tolist() == [1, 2]
    best, worse = table.loc["three_factors"], table.loc["one_factor"]
    assert best["d_log_px"] == 0.0 and best["d_se"] == 0.0
    assert worse["d_log_px"] > 2 * worse["d_se"] > 0
    # the paired SE is far below the unpaired one (hard points are hard for both models)
    assert worse["d_se"] < math.sqrt(best["log_px_se"] ** 2 + worse["log_px_se"] ** 2)
    # values agree with the exact log-likelihoods (exact posterior: zero variance)
    exact = exact_log_px(W, mu, sigma, test)
    assert best["log_px"] == pytest.approx(float(exact.mean()), abs=1e-5)
    per_point = table.attrs["log_px_per_point"]
    d = per_point["three_factors"] - per_point["one_factor"]
    assert worse["d_log_px"] == pytest.approx(d.mean()) and worse["d_se"] == pytest.approx(d.std(ddof=1) / 10)
    assert best["active_units"] == 3 and worse["latent_units"] == 1


def test_compare_fit_results_with_gaps_and_tables():
    data = bayesvae.datasets.digits(binarize=True)
    train, test = data.x[:200], data.x[200:260]
    fits = {}
    for k in (1, 4):
        torch.manual_seed(0)
        model = bayesvae.VAE(prior=bayesvae.GaussianPrior(k), likelihood=bayesvae.Bernoulli(), decoder=bayesvae.MLP(k, 64, hidden=(32,)))
        guide = bayesvae.AmortizedGuide(model, hidden=(32,))
        fits[f"k{k}"] = bayesvae.fit(model, guide, train, epochs=2, seed=0)
    table = compare(fits, test, num_samples=20, gap_points=10, elbo_samples=10)
    assert set(table.columns) >= set(METRICS) | {"rank", "d_log_px", "d_se"}
    for name, fit in fits.items():
        assert table.loc[name, "num_parameters"] == fit.num_parameters
        assert table.loc[name, "training_seconds"] == pytest.approx(fit.elapsed)
        assert not math.isnan(table.loc[name, "amortization_gap"])
        assert table.loc[name, "num_data"] == 60 and table.loc[name, "num_samples"] == 20
    md = to_markdown(table, digits=2)
    lines = md.splitlines()
    assert lines[0].startswith("| model | rank | log_px |") and lines[1].startswith("| :--- | ---: |")
    assert len(lines) == 4 and all(line.count("|") == len(table.columns) + 2 for line in lines)
    assert f"| {table.index[0]} | 1 | {table['log_px'].iloc[0]:.2f} |" in md
    html = to_html(table)
    assert html.startswith("<table") and "bayesvae-table" in html and table.index[0] in html


def test_evaluate_one_row(three_factor_data):
    W, mu, sigma, _, test = three_factor_data
    model = linear_vae(W, mu, sigma)
    frame = evaluate((model, ExactPosteriorGuide(W, mu, sigma)), test, num_samples=50, gaps=True, gap_points=20)
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(METRICS) and len(frame) == 1
    row = frame.iloc[0]
    exact = exact_log_px(W, mu, sigma, test)
    assert row["log_px"] == pytest.approx(float(exact.mean()), abs=1e-5)
    assert row["elbo"] == pytest.approx(row["reconstruction"] - row["kl"] - row["global_kl"] / 100, abs=1e-9)
    # an exact full-covariance guide: its local family is the same MVN, so the gap is ~0
    assert abs(row["amortization_gap"]) < 0.01
    assert math.isnan(row["training_seconds"])
    assert frame.attrs["log_px_per_point"].shape == (100,)
    # an amortized guide at the exact posterior mean: gaps computed
    frame = evaluate((model, diagonal_guide(model, W, mu, sigma)), test, num_samples=50, gaps=True, gap_points=20)
    assert not math.isnan(frame.iloc[0]["amortization_gap"]) and frame.iloc[0]["amortization_gap"] > -0.01


def test_errors(three_factor_data):
    W, mu, sigma, _, test = three_factor_data
    pair = (linear_vae(W, mu, sigma), ExactPosteriorGuide(W, mu, sigma))
    with pytest.raises(ValueError, match="fits must be a non-empty mapping"):
        compare({}, test)
    with pytest.raises(ValueError, match="model names must be non-empty strings, got 3"):
        compare({3: pair}, test)
    with pytest.raises(TypeError, match="to_markdown takes a pandas DataFrame, got list"):
        to_markdown([1, 2])
    with pytest.raises(TypeError, match="to_html takes a pandas DataFrame, got dict"):
        to_html({})
    with pytest.raises(ValueError, match="elbo_samples must be a positive int"):
        evaluate(pair, test, elbo_samples=0)
    with pytest.raises(ValueError, match="gap_points must be a positive int"):
        evaluate(pair, test, gap_points=0)


def test_example_runs_with_tiny_arguments(tmp_path):
    out = tmp_path / "table.md"
    args = ["--epochs", "1", "--num-samples", "5", "--gap-points", "3", "--priors", "gaussian,gaussian_1", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "model_comparison.py"), *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "| model | rank |" in proc.stdout and "nats below" in proc.stdout
    assert out.read_text().startswith("| model |")
