"""Tabular data: negative binomial, categorical and per-column mixed likelihoods."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

import bayesvae as bv
from bayesvae.models import Categorical, Columns, NegativeBinomial


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    n = 600
    z = rng.normal(size=n)
    return pd.DataFrame({
        "height": 170 + 10 * z + rng.normal(scale=3, size=n),
        "smoker": (rng.uniform(size=n) < 1 / (1 + np.exp(-2 * z))).astype(float),
        "visits": rng.poisson(np.exp(1 + 0.5 * z)).astype(float),
        "region": rng.integers(0, 4, size=n).astype(float),
        "weight": 70 + 8 * z + rng.normal(scale=4, size=n),
    })


def _fit(frame, likelihood, epochs=30):
    torch.manual_seed(0)
    d = frame.shape[1]
    model = bv.VAE(prior=bv.GaussianPrior(2), likelihood=likelihood, decoder=bv.MLP(2, likelihood.num_outputs(d), hidden=(32,)))
    guide = bv.AmortizedGuide(model, hidden=(32,))
    # standardize the Gaussian columns only through the data, not the model: keep raw units
    return bv.fit(model, guide, frame, epochs=epochs, lr=1e-2, batch_size=100, seed=0)


def test_infer_picks_a_likelihood_per_column(frame):
    lik = Columns.infer(frame, categorical={"region": 4})
    kinds = {type(p).__name__: [frame.columns[c] for c in cols] for p, cols in zip(lik.parts, lik.columns)}
    assert kinds == {"Gaussian": ["height", "weight"], "Bernoulli": ["smoker"], "Poisson": ["visits"], "Categorical": ["region"]}
    nb = Columns.infer(frame, categorical={"region": 4}, counts="negative-binomial")
    assert any(isinstance(p, NegativeBinomial) for p in nb.parts)
    with pytest.raises(ValueError, match=r"categorical names unknown columns \['town'\]"):
        Columns.infer(frame, categorical={"town": 3})


def test_mixed_frame_fits_saves_and_reloads(frame, tmp_path):
    lik = Columns.infer(frame, categorical={"region": 4})
    result = _fit(frame, lik)
    assert result.data.columns == tuple(frame.columns)
    # the schema standardizes height and weight, so the first epoch is already near -8.4
    # nats per row; 30 epochs must learn the shared latent (about 2 nats per row here)
    assert result.history["elbo"].iloc[-1] > result.history["elbo"].iloc[0] + 1.5
    result.save(tmp_path / "run")
    again = bv.load(tmp_path / "run")
    assert isinstance(again.model.likelihood, Columns)
    a = bv.evaluate_elbo(result.model, result.guide, frame, seed=1)
    assert bv.evaluate_elbo(again.model, again.guide, frame, seed=1) == a
    # prior predictive draws have the right columns in the right places
    draw = again.model.sample(200)["x"]
    assert draw.shape == (200, 5)
    assert set(draw[:, 1].unique().tolist()) <= {0.0, 1.0}
    assert set(draw[:, 3].unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}


def test_columns_joint_log_prob_is_the_sum_of_the_blocks():
    lik = Columns([(bv.Gaussian(scale=2.0), [2, 0]), (Categorical(3), [1])])
    out = torch.randn(4, 2 + 3)
    x = torch.tensor([[0.5, 2.0, -1.0]] * 4)
    expected = (
        torch.distributions.Normal(out[:, :2], 2.0).log_prob(x[:, [2, 0]]).sum(-1)
        + torch.distributions.Categorical(logits=out[:, 2:]).log_prob(torch.full((4,), 2))
    )
    torch.testing.assert_close(lik.distribution(out).log_prob(x), expected)
    assert lik.mean(out).shape == (4, 3)


def test_negative_binomial_log_prob_matches_scipy():
    lik = NegativeBinomial(data_dim=2, init_dispersion=3.0)
    out = torch.log(torch.tensor([[2.0, 5.0]]))
    x = torch.tensor([[1.0, 7.0]])
    r, mu = 3.0, np.array([2.0, 5.0])
    # scipy's nbinom(n=r, p=r/(r+mu)) has mean mu
    expected = stats.nbinom.logpmf([1, 7], r, r / (r + mu)).sum()
    assert float(lik.distribution(out).log_prob(x).detach()) == pytest.approx(expected, rel=1e-5)
    assert math.isclose(float(lik.distribution(out).mean.sum().detach()), 7.0, rel_tol=1e-5)


def test_negative_binomial_learns_overdispersion():
    rng = np.random.default_rng(1)
    r_true, mu = 2.0, 6.0
    counts = rng.negative_binomial(r_true, r_true / (r_true + mu), size=(2000, 3)).astype(float)
    torch.manual_seed(0)
    lik = NegativeBinomial(data_dim=3)
    model = bv.VAE(prior=bv.GaussianPrior(1), likelihood=lik, decoder=bv.MLP(1, 3, hidden=()))
    guide = bv.AmortizedGuide(model, hidden=(8,))
    bv.fit(model, guide, counts, epochs=60, lr=2e-2, batch_size=250, seed=0)
    # The dispersion MLE from 6000 draws has a standard error of roughly 0.1 at r = 2;
    # a fitted decoder can also absorb some variance, so allow 40%.
    assert lik.dispersion().mean().item() == pytest.approx(r_true, rel=0.4)


def test_tabular_support_errors_name_the_columns(frame):
    lik = Columns.infer(frame, categorical={"region": 4})
    bad = frame.copy()
    bad.loc[3, "region"] = 7
    with pytest.raises(ValueError, match=r"column 'region' of the data has level 7.0, which was not seen when the schema was inferred"):
        _fit(bad, lik, epochs=1)
    bad.loc[4, "visits"] = 1.5
    with pytest.raises(ValueError, match=r"column 'visits' of the data is modelled as counts \(poisson\) but has 1 non-integer values \(e.g. 1.5\)"):
        _fit(bad, lik, epochs=1)
    # a likelihood without a schema still checks the codes of the raw frame
    plain = Columns(list(zip(lik.parts, lik.columns)))
    with pytest.raises(ValueError, match=r"Poisson likelihood needs non-negative integer counts; found 1 values in 1 rows, columns \[visits\]"):
        _fit(bad, plain, epochs=1)
    with pytest.raises(ValueError, match="num_categories must be an int >= 2"):
        Categorical(1)
    with pytest.raises(ValueError, match="must cover columns 0..d-1 exactly once"):
        Columns([(bv.Bernoulli(), [0, 2])])


def test_student_t_log_prob_matches_scipy():
    from bayesvae.models import StudentT

    lik = StudentT(data_dim=2, df=3.0, init_scale=2.0)
    out = torch.tensor([[0.5, -1.0]])
    x = torch.tensor([[1.5, 2.0]])
    expected = stats.t.logpdf([1.5, 2.0], df=3.0, loc=[0.5, -1.0], scale=2.0).sum()
    assert float(lik.distribution(out).log_prob(x).detach()) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="StudentT df must be a positive number, got -1"):
        StudentT(data_dim=1, df=-1)


def test_a_frame_of_labels_fits_saves_and_comes_back_as_a_frame(tmp_path):
    from bayesvae.tabular import impute, sample_frame

    rng = np.random.default_rng(4)
    n = 300
    z = rng.normal(size=n)
    frame = pd.DataFrame({
        "size": 3 + z + 0.3 * rng.normal(size=n),
        "colour": pd.Categorical(np.where(z > 0, "red", np.where(z > -1, "green", "blue")), categories=["red", "green", "blue"]),
        "grade": pd.Series(np.where(z > 0.5, "high", "low"), dtype="str"),
        "alive": rng.uniform(size=n) < 1 / (1 + np.exp(-z)),
    })
    lik = Columns.infer(frame)
    torch.manual_seed(0)
    model = bv.VAE(prior=bv.GaussianPrior(1), likelihood=lik, decoder=bv.MLP(1, lik.num_outputs(4), hidden=(16,)))
    guide = bv.AmortizedGuide(model, hidden=(16,))
    result = bv.fit(model, guide, frame, epochs=5, lr=1e-2, batch_size=100, seed=0)
    result.save(tmp_path / "run")
    again = bv.load(tmp_path / "run")
    assert again.model.likelihood.schema.to_config() == lik.schema.to_config()
    draw = sample_frame(again.model, 20, seed=1)
    assert dict(draw.dtypes.astype(str)) == dict(frame.dtypes.astype(str))
    pd.testing.assert_frame_equal(again.sample(20, seed=1), draw)  # FitResult.sample is the same draw
    assert list(draw["colour"].cat.categories) == ["red", "green", "blue"]
    holes = frame.assign(grade=frame["grade"].mask(frame.index % 4 == 0))
    a = impute(result, holes, num_imputations=2, num_particles=10, seed=3)
    b = impute(again, holes, num_imputations=2, num_particles=10, seed=3)
    pd.testing.assert_frame_equal(a.frames[1], b.frames[1])
    pd.testing.assert_frame_equal(a.point(), b.point())
