"""A user's own Pyro model and guide, written the way Pyro's tutorial writes them: no silent
wrong numbers (scales read from the trace), load restores the networks, a second fit trains."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import bayesvae as bv
from tests._tutorial import TutorialVAE, pyro_elbo


@pytest.fixture(scope="module")
def digits():
    return torch.as_tensor(bv.datasets.digits(binarize=True).x, dtype=torch.float32)


def _tolerance(sd: float, repeats: int) -> float:
    # One epoch of minibatch estimates is one single-sample estimate of the full-data ELBO per
    # point (a partition of the rows), whose sd is about one full-batch estimate's; the truth is
    # the mean of `repeats` of those. Three SE of the difference: a 0.3% false-failure rate,
    # while the batch/N bug (an error of ~18 nats per point) is hundreds of SE away.
    return 3 * math.sqrt(sd**2 + sd**2 / repeats)


def test_tutorial_model_minibatch_elbo_matches_pyro_on_all_rows(digits):
    torch.manual_seed(0)
    vae = TutorialVAE(input_dim=digits.shape[1])
    bv.fit(vae.model, vae.guide, digits, epochs=5, batch_size=128, lr=3e-3, seed=0)
    # One more epoch at a negligible learning rate: the epoch's minibatch estimates all see
    # (nearly) the fitted parameters.
    result = bv.fit(vae.model, vae.guide, digits, epochs=1, batch_size=128, lr=1e-9, seed=1)
    assert result.config.rescaled and result.config.data_plate == "data"
    truth, sd = pyro_elbo(vae.model, vae.guide, digits)
    assert truth < -15  # a real VAE ELBO on 64 binary pixels, far from the -1.6 of the bug
    assert abs(result.history["elbo"].iloc[-1] - truth) < _tolerance(sd, 20)


def test_validation_and_evaluate_elbo_in_chunks_match_pyro(digits):
    torch.manual_seed(1)
    vae = TutorialVAE(input_dim=digits.shape[1])
    big = torch.cat([digits, digits])  # 3 594 rows: scored in two chunks of at most 2 048
    result = bv.fit(vae.model, vae.guide, digits, epochs=2, batch_size=None, lr=3e-3, validation=big, seed=0)
    truth, sd = pyro_elbo(vae.model, vae.guide, big)
    assert abs(result.history["val_elbo"].iloc[-1] - truth) < _tolerance(sd, 20)
    assert abs(bv.evaluate_elbo(vae.model, vae.guide, big) - truth) < _tolerance(sd, 20)


def test_kwargs_swallowing_model_gets_correct_numbers(digits):
    dec, enc = nn.Linear(2, 64), nn.Linear(64, 4)

    def model(x, **kw):  # accepts num_data/index but scales nothing
        pyro.module("dec", dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(1), obs=x)

    def guide(x, **kw):
        pyro.module("enc", enc)
        with pyro.plate("data", x.shape[0]):
            loc, raw = enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))

    bv.fit(model, guide, digits, epochs=3, batch_size=128, lr=1e-2, seed=0)
    result = bv.fit(model, guide, digits, epochs=1, batch_size=128, lr=1e-9, seed=1)
    truth, sd = pyro_elbo(model, guide, digits)
    assert abs(result.history["elbo"].iloc[-1] - truth) < _tolerance(sd, 20)


def test_subsample_size_plate_uses_the_fits_rows(digits):
    dec, enc = nn.Linear(2, 64), nn.Linear(64, 4)
    seen = []

    def model(x, *, num_data, index=None):
        pyro.module("dec", dec)
        with pyro.plate("data", num_data, subsample_size=x.shape[0]) as rows:
            seen.append(rows)
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(1), obs=x)

    def guide(x, *, num_data, index=None):
        pyro.module("enc", enc)
        with pyro.plate("data", num_data, subsample_size=x.shape[0]):
            loc, raw = enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))

    result = bv.fit(model, guide, digits, epochs=1, batch_size=100, lr=1e-2, seed=0, jit=False)
    assert not result.config.rescaled
    # the plate's indices are the fit's rows, not Pyro's own random draw
    assert all(len(r) in (100, digits.shape[0] % 100) for r in seen)
    assert all(r.max() < digits.shape[0] for r in seen)
    perm_rows = torch.cat(seen[-18:])
    assert sorted(perm_rows.tolist()) == list(range(digits.shape[0]))


def test_unverifiable_scales_are_refused(digits):
    dec = nn.Linear(2, 64)

    def model(x, **kw):
        pyro.module("dec", dec)
        with pyro.plate("data", 60000, subsample_size=x.shape[0]):  # a hard-coded, wrong N
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(1), obs=x)

    def guide(x, **kw):
        with pyro.plate("data", 60000, subsample_size=x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))

    with pytest.raises(ValueError, match="data plate 'data' has full size 60000, but the data have 1797 rows"):
        bv.fit(model, guide, digits, epochs=1, batch_size=100)

    def scaled_global(x, **kw):
        pyro.module("dec", dec)
        with pyro.poutine.scale(scale=2.0):
            pyro.sample("g", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(1), obs=x)

    def guide_g(x, **kw):
        pyro.sample("g", dist.Normal(pyro.param("g_loc", torch.tensor(0.0)), 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))

    with pytest.raises(ValueError, match="model site 'g' is global .* with scale 2, expected 1"):
        bv.fit(scaled_global, guide_g, digits, epochs=1, batch_size=100)


def test_load_restores_the_networks_of_hand_written_functions(digits, tmp_path):
    torch.manual_seed(2)
    vae = TutorialVAE(input_dim=digits.shape[1])
    result = bv.fit(vae.model, vae.guide, digits, epochs=3, lr=3e-3, seed=0)
    before = bv.evaluate_elbo(result.model, result.guide, digits, seed=3)
    result.save(tmp_path / "run")
    torch.manual_seed(99)
    fresh = TutorialVAE(input_dim=digits.shape[1])  # random weights
    assert bv.evaluate_elbo(fresh.model, fresh.guide, digits, seed=3) < before - 5
    loaded = bv.load(tmp_path / "run", model=fresh.model, guide=fresh.guide)
    assert bv.evaluate_elbo(loaded.model, loaded.guide, digits, seed=3) == before
    from bayesvae.evaluation import log_marginal_likelihood

    held_out = digits[1500:]
    a = log_marginal_likelihood(result, held_out, num_samples=50, seed=4)
    b = log_marginal_likelihood(loaded, held_out, num_samples=50, seed=4)
    assert torch.equal(a.per_point, b.per_point)
    for a, b in zip(vae.parameters(), fresh.parameters()):
        assert torch.equal(a, b)


def test_closure_modules_and_params_are_restored_by_load(digits, tmp_path):
    def make():
        dec, enc = nn.Linear(2, 64), nn.Linear(64, 4)

        def model(x, *, index=None, num_data=None):
            pyro.module("dec", dec)
            bias = pyro.param("bias", torch.zeros(64))
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
                pyro.sample("x", dist.Bernoulli(logits=dec(z) + bias).to_event(1), obs=x)

        def guide(x, *, index=None, num_data=None):
            pyro.module("enc", enc)
            with pyro.plate("data", x.shape[0]):
                loc, raw = enc(x).chunk(2, -1)
                pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))

        return model, guide, dec

    model, guide, dec = make()
    result = bv.fit(model, guide, digits, epochs=2, lr=1e-2, seed=0)
    before = bv.evaluate_elbo(result.model, result.guide, digits, seed=3)
    result.save(tmp_path / "run")
    model2, guide2, dec2 = make()
    loaded = bv.load(tmp_path / "run", model=model2, guide=guide2)
    assert torch.equal(dec2.weight, dec.weight)
    torch.testing.assert_close(loaded.params["bias"], result.params["bias"])
    assert bv.evaluate_elbo(loaded.model, loaded.guide, digits, seed=3) == before


def test_a_second_fit_in_the_same_session_trains(digits):
    first = TutorialVAE(input_dim=digits.shape[1])
    bv.fit(first.model, first.guide, digits, epochs=3, lr=3e-3, seed=0)
    second = TutorialVAE(input_dim=digits.shape[1])  # same pyro.module names
    start = [p.detach().clone() for p in second.parameters()]
    result = bv.fit(second.model, second.guide, digits, epochs=6, lr=3e-3, seed=0)
    assert result.history["elbo"].iloc[-1] > result.history["elbo"].iloc[0] + 3
    assert all(not torch.equal(a, b) for a, b in zip(start, second.parameters()))


def test_two_fits_with_one_param_name_do_not_share_values(digits):
    def make(init):
        def model(x, **kw):
            w = pyro.param("w", torch.full((64,), init))
            with pyro.plate("data", x.shape[0]):
                pyro.sample("x", dist.Bernoulli(logits=w.expand(x.shape[0], 64)).to_event(1), obs=x)

        def guide(x, **kw):
            pass

        return model, guide

    a = bv.fit(*make(0.0), digits, epochs=1, lr=1e-9)
    b = bv.fit(*make(3.0), digits, epochs=1, lr=1e-9)
    torch.testing.assert_close(a.params["w"], torch.zeros(64), atol=1e-6, rtol=0)
    torch.testing.assert_close(b.params["w"], torch.full((64,), 3.0), atol=1e-6, rtol=0)
    # each fit keeps scoring with its own values, whatever ran after it
    assert bv.evaluate_elbo(a.model, a.guide, digits) != bv.evaluate_elbo(b.model, b.guide, digits)


def test_user_functions_take_the_traced_fast_path(digits):
    torch.manual_seed(4)
    vae = TutorialVAE(input_dim=digits.shape[1])
    state = {}
    traced = bv.fit(vae.model, vae.guide, digits, epochs=2, lr=3e-3, seed=0, callback=lambda r: state.update(r))
    torch.manual_seed(4)
    vae2 = TutorialVAE(input_dim=digits.shape[1])
    eager = bv.fit(vae2.model, vae2.guide, digits, epochs=2, lr=3e-3, seed=0, jit=False)
    np.testing.assert_allclose(traced.history["elbo"], eager.history["elbo"], rtol=1e-5)
    for a, b in zip(vae.parameters(), vae2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_prediction_api_on_a_fit(digits):
    import pandas as pd

    torch.manual_seed(5)
    vae = TutorialVAE(input_dim=digits.shape[1])
    result = bv.fit(vae.model, vae.guide, digits, epochs=2, lr=3e-3, seed=0)
    frame = pd.DataFrame(digits[:10].numpy(), index=[f"r{i}" for i in range(10)])
    enc = result.encode(frame)
    assert list(enc.index) == list(frame.index)
    assert enc.shape == (10, 2 * vae.z_dim) and (enc.filter(like="sd") > 0).all().all()
    loc, scale = vae.encoder(digits[:10])
    np.testing.assert_allclose(enc["latent[0] mean"], loc[:, 0].detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(enc["latent[1] sd"], scale[:, 1].detach().numpy(), rtol=1e-6)
    draws = result.sample(7)
    assert tuple(draws.shape) == (7, 64) and set(torch.unique(torch.as_tensor(np.asarray(draws))).tolist()) <= {0.0, 1.0}
    rec = result.reconstruct(digits[:5].numpy())
    assert tuple(rec.shape) == (5, 64) and bool(((rec > 0) & (rec < 1)).all())


def _global_model():
    dec = nn.Linear(2, 64)

    def model(x, *, index, num_data):
        pyro.module("dec", dec)
        s = pyro.sample("s", dist.LogNormal(0.0, 1.0))  # one global site
        with pyro.plate("data", num_data, subsample=index):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), s).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(1), obs=x)

    return model


def _pyro_truth(model, guide, x, repeats=20):
    from pyro.infer import Trace_ELBO

    n = x.shape[0]
    vals = torch.tensor([-Trace_ELBO().loss(model, guide, x, index=torch.arange(n), num_data=n) / n for _ in range(repeats)])
    return float(vals.mean()), float(vals.std())


def test_pyro_autonormal_as_a_per_point_guide(digits):
    from pyro.infer.autoguide import AutoNormal

    x = digits[:400]
    model = _global_model()
    # non-amortized: one (loc, scale) per data point over the full plate; create_plates is
    # Pyro's documented way for an autoguide to use the model's subsample
    guide = AutoNormal(model, create_plates=lambda x, *, index, num_data: pyro.plate("data", num_data, subsample=index))
    first = bv.fit(model, guide, x, epochs=6, batch_size=100, lr=2e-2, seed=0)
    assert first.history["elbo"].iloc[-1] > first.history["elbo"].iloc[0] + 1
    result = bv.fit(model, guide, x, epochs=1, batch_size=100, lr=1e-9, seed=1)
    truth, sd = _pyro_truth(model, guide, x)
    assert abs(result.history["elbo"].iloc[-1] - truth) < _tolerance(sd, 20)


def test_pyro_autonormal_for_globals_beside_an_amortized_local_guide(digits):
    from pyro import poutine
    from pyro.infer.autoguide import AutoNormal

    x = digits[:400]
    model = _global_model()
    enc = nn.Linear(64, 4)
    globals_guide = AutoNormal(poutine.block(model, expose=["s"]))

    def guide(x, *, index, num_data):
        globals_guide(x, index=index, num_data=num_data)
        pyro.module("enc", enc)
        with pyro.plate("data", num_data, subsample=index):
            loc, raw = enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))

    first = bv.fit(model, guide, x, epochs=5, batch_size=100, lr=1e-2, seed=0)
    assert {"AutoNormal.locs.s", "AutoNormal.scales.s"} <= set(first.params)
    assert first.history["elbo"].iloc[-1] > first.history["elbo"].iloc[0] + 2
    result = bv.fit(model, guide, x, epochs=1, batch_size=100, lr=1e-9, seed=1)
    truth, sd = _pyro_truth(model, guide, x)
    assert abs(result.history["elbo"].iloc[-1] - truth) < _tolerance(sd, 20)
    assert abs(bv.evaluate_elbo(result.model, result.guide, x) - truth) < _tolerance(sd, 20)


def test_inference_data_report_and_compare_for_the_tutorial_model(digits, tmp_path):
    from bayesvae.compare import compare
    from bayesvae.diagnostics import to_inference_data
    from bayesvae.report import report

    torch.manual_seed(6)
    vae = TutorialVAE(input_dim=digits.shape[1])
    result = bv.fit(vae.model, vae.guide, digits[:600], epochs=3, lr=3e-3, seed=0)
    idata = to_inference_data(result, digits[:20], num_samples=10)
    assert {"posterior", "observed_data", "log_likelihood", "posterior_predictive"} <= set(idata.groups())
    assert "obs" in idata.observed_data and "obs" in idata.log_likelihood  # the tutorial's name
    assert "meaningless" in idata.attrs["loo_waic"]
    report(result, digits[600:700], tmp_path / "report.html", num_samples=30, ppc_samples=20)
    assert (tmp_path / "report.html").stat().st_size > 10_000
    table = compare({"tutorial": result, "again": result}, digits[600:660], num_samples=20, gaps=False)
    assert np.isfinite(table["log_px"]).all()  # its gaps: tests/evaluation/test_eval_gaps.py


def test_two_observed_sites_each_get_their_log_likelihood(digits):
    from bayesvae.diagnostics import to_inference_data

    dec, enc = nn.Linear(2, 64), nn.Linear(64, 4)

    def model(x, **kw):
        pyro.module("dec", dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            logits = dec(z)
            pyro.sample("left", dist.Bernoulli(logits=logits[:, :32]).to_event(1), obs=x[:, :32])
            pyro.sample("right", dist.Bernoulli(logits=logits[:, 32:]).to_event(1), obs=x[:, 32:])

    def guide(x, **kw):
        pyro.module("enc", enc)
        with pyro.plate("data", x.shape[0]):
            loc, raw = enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))

    idata = to_inference_data((model, guide), digits[:15], num_samples=8)
    assert {"left", "right"} <= set(idata.log_likelihood.data_vars)
    assert {"left", "right"} <= set(idata.observed_data.data_vars)
    total = idata.log_likelihood["left"] + idata.log_likelihood["right"]
    lw = idata.sample_stats["log_likelihood"] if "log_likelihood" in idata.sample_stats else None
    if lw is not None:
        np.testing.assert_allclose(total.values, lw.values, rtol=1e-5)


def test_numpy_input_to_posterior_and_a_progress_bar(digits, capsys):
    model = bv.VAE(prior=bv.GaussianPrior(2), likelihood=bv.Bernoulli(), decoder=bv.MLP(2, 64))
    guide = bv.AmortizedGuide(model, hidden=(8,))
    q = guide.posterior(digits[:3].numpy())
    assert tuple(q["z"].mean.shape) == (3, 2)
    bv.fit(model, guide, digits[:200], epochs=2, progress=True)
    assert "epoch" in capsys.readouterr().err  # tqdm writes to standard error
