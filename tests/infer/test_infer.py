"""fit / save / load: training, reproducibility, checkpoints, divergence and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import bayesvae as bv
from bayesvae.models.vae import data_plate


@pytest.fixture(scope="module")
def digits():
    return bv.datasets.digits(binarize=True)


def _vae(d=64, latent=4, hidden=(32,), likelihood=None, seed=0):
    torch.manual_seed(seed)
    likelihood = likelihood or bv.Bernoulli()
    model = bv.VAE(
        prior=bv.GaussianPrior(latent),
        likelihood=likelihood,
        decoder=bv.MLP(latent, likelihood.num_outputs(d), hidden=hidden),
    )
    return model, bv.AmortizedGuide(model, hidden=hidden)


def _params(*modules):
    return torch.cat([p.detach().flatten() for m in modules for p in m.parameters()])


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
def test_training_on_digits_improves_elbo(digits, elbo, device):
    model, guide = _vae()
    start = bv.evaluate_elbo(model, guide, digits.x, num_particles=4)
    result = bv.fit(model, guide, digits, elbo=elbo, epochs=8, batch_size=128, lr=3e-3, seed=0, device=device)
    end = bv.evaluate_elbo(result.model, result.guide, digits.x, num_particles=4)
    # At initialization the logits are ~0: about 64 log 2 = 44.4 nats per image. A few
    # epochs of a small VAE reach about -25; require a 12-nat improvement.
    assert start < -40
    assert end > start + 12
    assert result.history["elbo"].iloc[-1] > result.history["elbo"].iloc[0] + 8
    assert list(result.history["epoch"]) == list(range(1, 9))
    assert result.data.image_shape == (8, 8)


def test_same_seed_same_result(digits):
    runs = []
    for _ in range(2):
        model, guide = _vae(seed=1)
        result = bv.fit(model, guide, digits.x, epochs=2, seed=7)
        runs.append((_params(model, guide), result.history["elbo"].to_numpy()))
    assert torch.equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    model, guide = _vae(seed=1)
    bv.fit(model, guide, digits.x, epochs=2, seed=8)
    assert not torch.equal(runs[0][0], _params(model, guide))


def test_save_load_evaluate_identical(digits, tmp_path):
    model, guide = _vae()
    result = bv.fit(model, guide, digits.x, epochs=2, seed=0, validation=digits.x[:200])
    result.save(tmp_path / "run")
    loaded = bv.load(tmp_path / "run")
    assert isinstance(loaded.model, bv.VAE) and isinstance(loaded.guide, bv.AmortizedGuide)
    a = bv.evaluate_elbo(result.model, result.guide, digits.x, seed=3)
    b = bv.evaluate_elbo(loaded.model, loaded.guide, digits.x, seed=3)
    assert a == b
    pd.testing.assert_frame_equal(result.history, loaded.history)
    assert loaded.config == result.config
    assert loaded.data == result.data
    assert (tmp_path / "run" / "history.csv").exists() and (tmp_path / "run" / "config.json").exists()
    # a single-file save works too
    result.save(tmp_path / "single.safetensors")
    again = bv.load(tmp_path / "single.safetensors")
    assert bv.evaluate_elbo(again.model, again.guide, digits.x, seed=3) == a


def test_saved_file_loads_without_unpickling(digits, tmp_path, monkeypatch):
    model, guide = _vae()
    bv.fit(model, guide, digits.x, epochs=1).save(tmp_path / "run")
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("load must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    bv.load(tmp_path / "run")


def test_corrupted_or_foreign_file_is_a_clear_error_and_keeps_the_old_save(digits, tmp_path):
    model, guide = _vae()
    result = bv.fit(model, guide, digits.x, epochs=1)
    result.save(tmp_path / "run")
    good = (tmp_path / "run" / "fit.safetensors").read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "fit.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="not a readable bayesvae fit"):
        bv.load(bad)
    (bad / "fit.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable bayesvae fit"):
        bv.load(bad)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(bad / "fit.safetensors"), metadata={"other": "x"})
    with pytest.raises(ValueError, match="not a readable bayesvae fit"):
        bv.load(bad)
    with pytest.raises(FileNotFoundError):
        bv.load(tmp_path / "missing")
    # A save that fails midway leaves the existing file intact.
    class Boom(nn.Module):
        def to_config(self):
            raise RuntimeError("boom")

    broken = bv.FitResult(model=model, guide=Boom(), history=result.history, config=result.config, data=result.data)
    with pytest.raises(RuntimeError, match="boom"):
        broken.save(tmp_path / "run")
    assert (tmp_path / "run" / "fit.safetensors").read_bytes() == good
    # Weights that do not fit the model's shapes are refused by name.
    other, other_guide = _vae(latent=3)
    with pytest.raises(ValueError, match="do not fit the model"):
        bv.load(tmp_path / "run", model=other, guide=other_guide)


def test_resume_after_interruption_is_bit_identical(digits, tmp_path):
    model, guide = _vae(seed=2)
    full = bv.fit(model, guide, digits.x, epochs=4, seed=5)
    reference = _params(model, guide)

    model, guide = _vae(seed=2)
    bv.fit(model, guide, digits.x, epochs=2, seed=5, checkpoint=tmp_path / "ck")
    # "crash": start a new process-like state from fresh objects and resume
    model, guide = _vae(seed=99)
    resumed = bv.fit(model, guide, digits.x, epochs=4, seed=5, checkpoint=tmp_path / "ck", resume=True)
    assert torch.equal(_params(model, guide), reference)
    np.testing.assert_allclose(resumed.history["elbo"], full.history["elbo"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="cannot resume: checkpoint was made with batch_size=128"):
        bv.fit(model, guide, digits.x, epochs=5, batch_size=64, seed=5, checkpoint=tmp_path / "ck", resume=True)


class _ExplodingDecoder(nn.Module):
    """An MLP decoder whose output turns NaN after a given number of training calls."""

    def __init__(self, after: int):
        super().__init__()
        self.inner = bv.MLP(4, 64, hidden=(16,))
        self.in_features, self.out_features = 4, 64
        self.calls, self.after = 0, after

    def forward(self, z):
        self.calls += 1
        out = self.inner(z)
        return out * float("nan") if self.calls > self.after else out


def test_divergence_stops_with_last_finite_state(digits, tmp_path):
    torch.manual_seed(0)
    model = bv.VAE(prior=bv.GaussianPrior(4), likelihood=bv.Bernoulli(), decoder=_ExplodingDecoder(after=20))
    guide = bv.AmortizedGuide(model, hidden=(16,))
    snapshots = []
    with pytest.raises(bv.DivergenceError, match="non-finite.*last finite parameters") as err:
        bv.fit(model, guide, digits.x, epochs=5, batch_size=256, seed=0, checkpoint=tmp_path / "ck",
               callback=lambda rec: snapshots.append(_params(model, guide)))
    state = err.value.result
    params = _params(state.model, state.guide)
    assert bool(torch.isfinite(params).all())
    # The step that produced NaN was not applied; the checkpoint on disk is the last good epoch.
    saved = bv.load(tmp_path / "ck", model=bv.VAE(prior=bv.GaussianPrior(4), likelihood=bv.Bernoulli(), decoder=_ExplodingDecoder(10**9)), guide=None)
    assert torch.equal(_params(saved.model, saved.guide), snapshots[-1])
    assert len(saved.history) == len(snapshots) >= 1


def test_hand_written_pyro_functions(digits):
    x = torch.as_tensor(digits.x)
    n, d = x.shape
    net = nn.Linear(2, d)

    def model(x, *, index=None, num_data=None):
        pyro.module("decoder", net)
        bias = pyro.param("bias", torch.zeros(d))
        with data_plate(x.shape[0], index, num_data):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=net(z) + bias).to_event(1), obs=x)

    enc = nn.Linear(d, 4)

    def guide(x, *, index=None, num_data=None):
        pyro.module("encoder", enc)
        with data_plate(x.shape[0], index, num_data):
            loc, raw = enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-4).to_event(1))

    result = bv.fit(model, guide, digits.x, epochs=3, lr=1e-2, seed=0)
    assert result.history["elbo"].iloc[-1] > result.history["elbo"].iloc[0]
    assert "bias" in result.params and result.params["bias"].abs().sum() > 0
    assert result.num_parameters == sum(p.numel() for p in [*net.parameters(), *enc.parameters()]) + d

    def full_batch_only(x):
        pyro.module("decoder", net)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=net(z)).to_event(1), obs=x)

    def guide_full(x):
        pyro.module("encoder", enc)
        with pyro.plate("data", x.shape[0]):
            loc, raw = enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-4).to_event(1))

    # An unscaled data plate (Pyro's tutorial way) is scaled by the package, and says so.
    scaled = bv.fit(full_batch_only, guide_full, digits.x, epochs=1, batch_size=100)
    assert scaled.config.rescaled and scaled.config.data_plate == "data"
    full = bv.fit(full_batch_only, guide_full, digits.x[:300], epochs=2, batch_size=None)
    assert not full.config.rescaled


def test_meanfield_guide_is_per_datapoint(digits):
    model, _ = _vae()
    x = digits.x[:256]
    guide = bv.MeanFieldGuide(model, num_data=256)
    result = bv.fit(model, guide, x, epochs=30, batch_size=64, lr=1e-2, seed=0)
    assert result.history["elbo"].iloc[-1] > result.history["elbo"].iloc[0] + 5
    with pytest.raises(ValueError, match="cannot be scored with a MeanFieldGuide"):
        bv.fit(model, guide, x, epochs=1, validation=x)
    with pytest.raises(ValueError, match="has parameters for 256 points but got a batch of 10 rows"):
        guide(torch.as_tensor(x[:10]))


# ---------------------------------------------------------------------------------------------
# Bad input


def test_nan_and_inf_are_named(digits):
    model, guide = _vae()
    x = digits.x.copy()
    x[3, 5] = np.nan
    x[7, 5] = np.inf
    x[7, 9] = -np.inf
    with pytest.raises(ValueError, match=r"NaN or inf in 2 rows \(columns \[5, 9\]\)"):
        bv.fit(model, guide, x, epochs=1)
    frame = pd.DataFrame(x, columns=[f"c{i}" for i in range(64)])
    with pytest.raises(ValueError, match=r"columns \[c5, c9\]"):
        bv.fit(model, guide, frame, epochs=1)


def test_non_numeric_column_is_a_type_error():
    frame = pd.DataFrame({"a": [0.0, 1.0], "city": ["x", "y"]})
    model, guide = _vae(d=2)
    with pytest.raises(TypeError, match=r"\['city'\]"):
        bv.fit(model, guide, frame, epochs=1)


def test_likelihood_support_is_checked(digits):
    intensities = bv.datasets.digits()
    model, guide = _vae()
    with pytest.raises(ValueError, match="Bernoulli likelihood needs binary data.*binarize.*ContinuousBernoulli.*Gaussian"):
        bv.fit(model, guide, intensities, epochs=1)
    model, guide = _vae(likelihood=bv.Poisson())
    counts = np.ones((20, 64))
    counts[2, 3] = -1
    with pytest.raises(ValueError, match="non-negative integer counts"):
        bv.fit(model, guide, counts, epochs=1)
    counts[2, 3] = 0.5
    with pytest.raises(ValueError, match="non-negative integer counts"):
        bv.fit(model, guide, counts, epochs=1)
    model, guide = _vae(likelihood=bv.ContinuousBernoulli())
    with pytest.raises(ValueError, match=r"needs data in \[0, 1\]"):
        bv.fit(model, guide, intensities.x * 2, epochs=1)
    bv.fit(model, guide, intensities, epochs=1)


def test_width_mismatch_names_both_numbers(digits):
    model, guide = _vae(d=10)
    with pytest.raises(ValueError, match="data has 64 columns but the model expects data_dim=10"):
        bv.fit(model, guide, digits.x, epochs=1)


def test_unknown_names_list_the_choices(digits):
    model, guide = _vae()
    with pytest.raises(ValueError, match=r"unknown elbo 'tracee'; choose one of \['iwae', 'meanfield', 'trace'\]"):
        bv.fit(model, guide, digits.x, elbo="tracee")
    with pytest.raises(ValueError, match=r"unknown device 'tpu'; choose one of \['cpu', 'cuda'\]"):
        bv.fit(model, guide, digits.x, device="tpu")
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        bv.fit(model, guide, digits.x, epochs=0)
    with pytest.raises(ValueError, match="lr must be a positive finite number"):
        bv.fit(model, guide, digits.x, lr=float("nan"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(digits):
    model, guide = _vae()
    with pytest.raises(ValueError, match="CUDA is not available"):
        bv.fit(model, guide, digits.x, device="cuda")


def test_component_validation():
    with pytest.raises(ValueError, match="latent_dim must be a positive int"):
        bv.GaussianPrior(0)
    with pytest.raises(ValueError, match="exactly one of scale"):
        bv.Gaussian()
    with pytest.raises(ValueError, match="exactly one of scale"):
        bv.Gaussian(scale=1.0, data_dim=3)
    with pytest.raises(ValueError, match="positive finite"):
        bv.Gaussian(scale=-1.0)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        bv.MLP(2, 3, activation="swish")
    with pytest.raises(ValueError, match="decoder outputs 64 values but Gaussian needs 128"):
        bv.VAE(prior=bv.GaussianPrior(2), likelihood=bv.Gaussian(heteroscedastic=True), decoder=bv.MLP(2, 64), data_dim=64)
    with pytest.raises(ValueError, match="decoder takes 3 inputs but the prior's latent_dim is 2"):
        bv.VAE(prior=bv.GaussianPrior(2), likelihood=bv.Bernoulli(), decoder=bv.MLP(3, 64))
    with pytest.raises(TypeError, match="prior must be a bayesvae Prior"):
        bv.VAE(prior="gaussian", likelihood=bv.Bernoulli(), decoder=bv.MLP(3, 64))


@pytest.mark.parametrize(
    "likelihood",
    [bv.Gaussian(data_dim=64), bv.Gaussian(heteroscedastic=True), bv.Gaussian(scale=0.3), bv.ContinuousBernoulli()],
    ids=["gaussian-feature", "gaussian-hetero", "gaussian-fixed", "cbernoulli"],
)
def test_every_likelihood_trains(likelihood):
    data = bv.datasets.digits()
    model, guide = _vae(likelihood=likelihood)
    result = bv.fit(model, guide, data, elbo="meanfield", epochs=4, lr=3e-3, seed=0)
    assert result.history["elbo"].iloc[-1] > result.history["elbo"].iloc[0]


def test_poisson_trains_on_counts():
    rng = np.random.default_rng(0)
    counts = rng.poisson(3.0, size=(400, 12)).astype(float)
    model, guide = _vae(d=12, likelihood=bv.Poisson())
    result = bv.fit(model, guide, counts, epochs=10, lr=1e-2, seed=0)
    # Ideal i.i.d. Poisson(3) log-likelihood per row: 12 * E[log Poisson(X; 3)] ~ -12 * 1.97
    assert result.history["elbo"].iloc[-1] > -12 * 1.97 - 3.0
