"""fit's training options: learning-rate schedules, Adam's epsilon, dynamic binarization, KL
warm-up (reported at beta = 1), early stopping and the convergence verdict."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import bayesvae as bv
from bayesvae.infer import StagedLR, check_convergence


@pytest.fixture(scope="module")
def digits():
    return torch.as_tensor(bv.datasets.digits(binarize=True).x, dtype=torch.float32)


def _vae(seed=0, d=64, latent=4, hidden=(32,)):
    torch.manual_seed(seed)
    model = bv.VAE(prior=bv.GaussianPrior(latent), likelihood=bv.Bernoulli(), decoder=bv.MLP(latent, d, hidden=hidden))
    return model, bv.AmortizedGuide(model, hidden=hidden)


def test_burda_staged_schedule():
    s = StagedLR()
    assert s.total_epochs == 3280
    # stage i runs 3**i epochs at 1e-3 * 10**(-i/7)
    assert s(0) == 1e-3 and s(1) == pytest.approx(1e-3 * 10 ** (-1 / 7)) and s(3) == pytest.approx(1e-3 * 10 ** (-1 / 7))
    assert s(4) == pytest.approx(1e-3 * 10 ** (-2 / 7)) and s(3279) == pytest.approx(1e-3 * 10 ** (-1.0))


def test_lr_schedule_and_adam_eps_are_applied_and_recorded(digits):
    model, guide = _vae()
    seen = []
    result = bv.fit(model, guide, digits[:300], epochs=4, lr=lambda e: 1e-3 * 0.5**e, adam_eps=1e-4, callback=lambda r: seen.append(r["lr"]))
    assert list(result.history["lr"]) == [1e-3, 5e-4, 2.5e-4, 1.25e-4] == seen
    assert result.config.adam_eps == 1e-4 and result.config.lr_schedule["type"] == "callable"
    with pytest.raises(ValueError, match="learning rate must be positive and finite; the schedule gave -1"):
        bv.fit(model, guide, digits[:300], epochs=2, lr=lambda e: -1.0)
    with pytest.raises(ValueError, match="adam_eps must be a positive finite number"):
        bv.fit(model, guide, digits[:300], epochs=1, adam_eps=0)


def test_dynamic_binarization_redraws_rows_every_time(digits):
    gray = torch.as_tensor(bv.datasets.digits().x, dtype=torch.float32)[:256]
    assert bool(((gray > 0) & (gray < 1)).any())
    model, guide = _vae()
    seen = []
    model_forward = model.forward

    def spy(x, **kw):
        seen.append(x.detach().clone())
        return model_forward(x, **kw)

    model.forward = spy
    bv.fit(model, guide, gray, epochs=2, batch_size=None, dynamic_binarization=True, jit=False)
    training = seen[-2:]  # the last two model calls are the two epochs' steps
    for x in training:
        assert set(torch.unique(x).tolist()) <= {0.0, 1.0}
    assert not torch.equal(training[0], training[1])
    # the draw is unbiased for the intensity: mean over both draws is close to the gray mean
    assert abs(float(torch.stack(training).mean()) - float(gray.mean())) < 0.01
    with pytest.raises(ValueError, match="Bernoulli likelihood needs binary data"):
        bv.fit(model, guide, gray, epochs=1)
    with pytest.raises(ValueError, match="intensities in"):
        bv.fit(model, guide, gray * 2, epochs=1, dynamic_binarization=True)


def test_kl_warmup_reports_the_elbo_at_beta_one(digits):
    from bayesvae.objectives import LinearWarmup

    model, guide = _vae()
    x, v = digits[:1200], digits[1200:]
    result = bv.fit(model, guide, x, epochs=3, validation=v, kl_weight=LinearWarmup(epochs=4), seed=0)
    assert list(result.history["kl_weight"]) == pytest.approx([0.0, 0.25, 0.5])
    # the reported validation ELBO is the plain beta = 1 ELBO at the final parameters
    again = bv.evaluate_elbo(model, guide, v, seed=0)
    pyro_seeded = result.history["val_elbo"].iloc[-1]
    assert abs(pyro_seeded - again) < 0.5  # two single-sample estimates on 597 points (sd ~0.1)
    beta_half = bv.fit(model, guide, x, epochs=1, kl_weight=0.5, seed=3, lr=1e-12)
    plain = bv.fit(model, guide, x, epochs=1, seed=3, lr=1e-12)
    # the history is the beta = 1 ELBO whatever the gradient used: same draws, same number
    assert beta_half.history["elbo"].iloc[0] == pytest.approx(plain.history["elbo"].iloc[0], rel=1e-6)


def test_early_stopping_restores_the_best_epoch(digits):
    model, guide = _vae(hidden=(64,))
    x, v = digits[:200], digits[1200:]  # a small training set: the validation ELBO turns down
    states = {}

    def keep(record):
        states[record["epoch"]] = [p.detach().clone() for p in [*model.parameters(), *guide.parameters()]]

    result = bv.fit(model, guide, x, epochs=400, batch_size=50, lr=1e-2, validation=v, patience=10, callback=keep)
    best = result.convergence["best_epoch"]
    assert result.convergence["stopped_early"] and len(result.history) == best + 10 < 400
    assert result.history["val_elbo"].iloc[best - 1] == result.history["val_elbo"].max()
    for a, b in zip(states[best], [*model.parameters(), *guide.parameters()]):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="patience= .* needs validation= data"):
        bv.fit(model, guide, x, epochs=2, patience=3)


def test_convergence_verdict_on_known_series():
    rng = np.random.default_rng(0)
    flat = -20 + 0.05 * rng.standard_normal(200)  # noise only: converged
    assert check_convergence(flat)["converged"] is True
    rising = -20 + 0.02 * np.arange(200) + 0.05 * rng.standard_normal(200)  # 1 nat per 50 epochs
    verdict = check_convergence(rising)
    assert verdict["converged"] is False and verdict["slope"] == pytest.approx(0.02, rel=0.2)
    assert check_convergence([-3.0, -2.0])["converged"] is None


@pytest.mark.slow
def test_a_short_group_fit_warns_that_it_has_not_converged():
    from tests.models.test_hier_groups import D, G, L, _grouped_data

    x, g, _ = _grouped_data()
    verdicts = {}
    for epochs in (400, 3000):
        torch.manual_seed(0)
        model = bv.VAE(prior=bv.GroupPrior(L, groups=G), likelihood=bv.Gaussian(data_dim=D), decoder=bv.MLP(L, D))
        guide = bv.AmortizedGuide(model, hidden=())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = bv.fit(model, guide, x, groups=g, epochs=epochs, batch_size=None, lr=0.01, seed=0)
        verdicts[epochs] = (result.converged, [str(w.message) for w in caught if "still rising" in str(w.message)])
    assert verdicts[400][0] is False and verdicts[400][1]
    assert verdicts[3000][0] is True and not verdicts[3000][1]
