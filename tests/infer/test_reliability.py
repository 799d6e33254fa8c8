"""Nothing lost, nothing silently wrong: the state guard, digests, honest resume, occupied paths,
untrusted files."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import pytest
import torch
from torch import nn

import bayesvae as bv
from bayesvae.infer.io import FIT_FILE, PREVIOUS_FILE


@pytest.fixture(scope="module")
def digits():
    return torch.as_tensor(bv.datasets.digits(binarize=True).x, dtype=torch.float32)


def _vae(seed=0, decoder=None, latent=4, likelihood=None, hidden=(16,)):
    torch.manual_seed(seed)
    likelihood = likelihood or bv.Bernoulli()
    model = bv.VAE(
        prior=bv.GaussianPrior(latent),
        likelihood=likelihood,
        decoder=decoder or bv.MLP(latent, likelihood.num_outputs(64), hidden=hidden),
    )
    return model, bv.AmortizedGuide(model, hidden=hidden)


def _flat(*modules):
    return torch.cat([p.detach().flatten() for m in modules for p in m.parameters()])


class _GradBomb(nn.Module):
    """A decoder whose gradient turns NaN on its ``at``-th backward pass (the loss stays finite)."""

    def __init__(self, at: int):
        super().__init__()
        self.inner = bv.MLP(4, 64, hidden=(16,))
        self.in_features, self.out_features = 4, 64
        self.at, self.backwards = at, 0

    def forward(self, z):
        out = self.inner(z)
        if out.requires_grad:
            out.register_hook(self._hook)
        return out

    def _hook(self, grad):
        self.backwards += 1
        return grad * float("nan") if self.backwards == self.at else grad


# 1797 rows in batches of 256: 8 steps an epoch.
@pytest.mark.parametrize("at, where", [(4, "mid-epoch"), (8, "last step of an epoch"), (16, "last step of the fit")])
def test_nan_gradient_never_reaches_the_parameters(digits, tmp_path, at, where):
    model, guide = _vae(decoder=_GradBomb(at))
    with pytest.raises(bv.DivergenceError, match="gradient became non-finite") as err:
        bv.fit(model, guide, digits, epochs=2, batch_size=256, lr=1e-2, jit=False, checkpoint=tmp_path / "ck")
    assert bool(torch.isfinite(_flat(err.value.result.model, err.value.result.guide)).all()), where
    if (tmp_path / "ck" / FIT_FILE).exists():
        fresh, _ = _vae(decoder=_GradBomb(10**9))
        saved = bv.load(tmp_path / "ck", model=fresh)
        assert bool(torch.isfinite(_flat(saved.model, saved.guide)).all())


def test_natural_divergence_keeps_a_finite_state_on_disk(tmp_path):
    x = torch.as_tensor(bv.datasets.digits().x, dtype=torch.float32) * 16
    lik = bv.Gaussian(heteroscedastic=True)
    model, guide = _vae(latent=2, likelihood=lik, hidden=(32,))
    with pytest.raises(bv.DivergenceError) as err:
        bv.fit(model, guide, x, epochs=20, batch_size=128, lr=100, checkpoint=tmp_path / "ck")
    assert bool(torch.isfinite(_flat(err.value.result.model, err.value.result.guide)).all())
    if (tmp_path / "ck" / FIT_FILE).exists():
        saved = bv.load(tmp_path / "ck")
        assert bool(torch.isfinite(_flat(saved.model, saved.guide)).all())


def test_a_callback_that_writes_nan_is_caught(digits, tmp_path):
    model, guide = _vae()

    def poison(record):
        if record["epoch"] == 2:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    with pytest.raises(bv.DivergenceError, match="end of epoch 2") as err:
        bv.fit(model, guide, digits, epochs=3, lr=1e-2, checkpoint=tmp_path / "ck", callback=poison)
    assert bool(torch.isfinite(_flat(err.value.result.model, err.value.result.guide)).all())
    saved = bv.load(tmp_path / "ck")
    assert len(saved.history) == 1 and bool(torch.isfinite(_flat(saved.model, saved.guide)).all())


def test_skip_mode_drops_bad_updates_and_counts_them(digits):
    model, guide = _vae(decoder=_GradBomb(3))
    before = None
    result = bv.fit(model, guide, digits, epochs=2, batch_size=256, lr=1e-2, jit=False, on_nonfinite="skip")
    assert list(result.history["skipped"]) == [1, 0]
    assert bool(torch.isfinite(_flat(model, guide)).all()) and before is None
    with pytest.raises(ValueError, match="on_nonfinite must be one of"):
        bv.fit(model, guide, digits, epochs=1, on_nonfinite="ignore")


def _flip(path, rng, *, in_tensor_data=True):
    """Flip one random bit in the tensor data (after the header) of a safetensors file."""
    raw = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(raw[:8], "little")
    pos = rng.randrange(header, len(raw)) if in_tensor_data else rng.randrange(8, header)
    raw[pos] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(raw))


def test_bit_flips_in_a_saved_fit_are_refused(digits, tmp_path):
    model, guide = _vae()
    bv.fit(model, guide, digits[:300], epochs=1).save(tmp_path / "run")
    good = (tmp_path / "run" / FIT_FILE).read_bytes()
    rng = random.Random(0)
    refused = 0
    for _ in range(60):
        (tmp_path / "run" / FIT_FILE).write_bytes(good)
        _flip(tmp_path / "run" / FIT_FILE, rng)
        with pytest.raises(ValueError, match=r"tensor '.*' does not match its SHA-256 digest|non-finite values in tensor"):
            bv.load(tmp_path / "run")
        refused += 1
    assert refused == 60
    for _ in range(10):  # the metadata too
        (tmp_path / "run" / FIT_FILE).write_bytes(good)
        _flip(tmp_path / "run" / FIT_FILE, rng, in_tensor_data=False)
        with pytest.raises(ValueError):
            bv.load(tmp_path / "run")


def test_bit_flips_in_a_checkpoint_fall_back_to_the_previous_one(digits, tmp_path, caplog):
    model, guide = _vae(seed=3)
    bv.fit(model, guide, digits, epochs=3, seed=1, checkpoint=tmp_path / "ck")
    latest = (tmp_path / "ck" / FIT_FILE).read_bytes()
    previous = (tmp_path / "ck" / PREVIOUS_FILE).read_bytes()
    rng = random.Random(1)
    for i in range(60):
        (tmp_path / "ck" / FIT_FILE).write_bytes(latest)
        (tmp_path / "ck" / PREVIOUS_FILE).write_bytes(previous)
        _flip(tmp_path / "ck" / FIT_FILE, rng)
        with pytest.raises(ValueError, match="does not match its SHA-256 digest|non-finite values in tensor"):
            bv.load(tmp_path / "ck")
        if i < 3:  # resume goes on from the previous checkpoint (epoch 2) and says so
            m, g = _vae(seed=50)
            caplog.clear()
            resumed = bv.fit(m, g, digits, epochs=3, seed=1, checkpoint=tmp_path / "ck", resume=True)
            assert "resuming from the previous checkpoint" in caplog.text
            assert len(resumed.history) == 3


def test_resume_refuses_changed_settings_and_other_data(digits, tmp_path):
    model, guide = _vae()
    bv.fit(model, guide, digits, epochs=1, lr=1e-3, checkpoint=tmp_path / "ck")
    with pytest.raises(ValueError, match=r"checkpoint was made with lr=0.001 but this fit has lr=0.01 \(pass resume='new-lr'"):
        bv.fit(model, guide, digits, epochs=2, lr=1e-2, checkpoint=tmp_path / "ck", resume=True)
    other = digits.flip(0)
    with pytest.raises(ValueError, match="checkpoint was made on other data"):
        bv.fit(model, guide, other, epochs=2, lr=1e-3, checkpoint=tmp_path / "ck", resume=True)
    result = bv.fit(model, guide, digits, epochs=2, lr=1e-2, checkpoint=tmp_path / "ck", resume="new-lr")
    assert list(result.history["lr"]) == [1e-3, 1e-2]


def test_an_existing_run_is_not_overwritten_and_paths_are_checked(digits, tmp_path):
    model, guide = _vae()
    bv.fit(model, guide, digits[:200], epochs=1, checkpoint=tmp_path / "ck")
    before = (tmp_path / "ck" / FIT_FILE).read_bytes()
    with pytest.raises(ValueError, match="already holds a fit; pass resume=True to continue it or overwrite=True"):
        bv.fit(model, guide, digits[:200], epochs=1, checkpoint=tmp_path / "ck")
    assert (tmp_path / "ck" / FIT_FILE).read_bytes() == before
    bv.fit(model, guide, digits[:200], epochs=1, checkpoint=tmp_path / "ck", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is an existing file, not a directory"):
        bv.fit(model, guide, digits[:200], epochs=1, checkpoint=tmp_path / "file")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="dangling symbolic link"):
        bv.fit(model, guide, digits[:200], epochs=1, checkpoint=tmp_path / "dangling")


def test_a_second_process_on_one_checkpoint_is_refused(digits, tmp_path):
    from bayesvae.infer.io import checkpoint_lock

    with checkpoint_lock(tmp_path / "ck"):
        model, guide = _vae()
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        q = ctx.Queue()

        def other():
            try:
                with checkpoint_lock(tmp_path / "ck"):
                    q.put("acquired")
            except ValueError as exc:
                q.put(str(exc))

        p = ctx.Process(target=other)
        p.start()
        p.join(30)
        message = q.get(timeout=5)
    assert "is in use by another fit (pid" in message


def test_orphan_temporaries_are_removed_by_the_next_write(digits, tmp_path):
    model, guide = _vae()
    (tmp_path / "ck").mkdir()
    orphan = tmp_path / "ck" / f".{FIT_FILE}.abc123.tmp"
    orphan.write_bytes(b"partial")
    bv.fit(model, guide, digits[:200], epochs=1, checkpoint=tmp_path / "ck")
    assert not orphan.exists()
    assert not list((tmp_path / "ck").glob(".*.tmp"))


def _edit_meta(path, edit):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as h:
        header = h.metadata()
    meta = json.loads(header["bayesvae"])
    edit(meta)
    text = json.dumps(meta)
    import hashlib

    save_file(load_file(str(path)), str(path), metadata={"bayesvae": text, "bayesvae_sha256": hashlib.sha256(text.encode()).hexdigest()})


def test_untrusted_files_build_nothing_before_they_are_checked(digits, tmp_path):
    model, guide = _vae()
    bv.fit(model, guide, digits[:200], epochs=1).save(tmp_path / "run")
    file = tmp_path / "run" / FIT_FILE
    good = file.read_bytes()

    def huge(meta):
        meta["model"]["decoder"]["hidden"] = [20000, 20000]

    _edit_meta(file, huge)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="the configuration asks for model.decoder"):
        bv.load(tmp_path / "run")
    assert time.perf_counter() - t0 < 5  # nothing of 1.8 GiB was allocated
    cases = {
        "lr": lambda m: m["config"].update(lr="fast"),
        "num_data": lambda m: m["data"].update(num_data="many"),
        "history": lambda m: m.update(history={"a": 1}),
        "deep": lambda m: m.update(extra=json.loads("[" * 40 + "]" * 40)),
        "format": lambda m: m.update(format_version="2"),
        "config key": lambda m: m["config"].update(surprise=1),
    }
    for name, edit in cases.items():
        file.write_bytes(good)
        _edit_meta(file, edit)
        with pytest.raises(ValueError, match="not a readable bayesvae fit|corrupted"):
            bv.load(tmp_path / "run")
        assert file.exists(), name


def test_numpy_scalars_and_bad_seeds(digits):
    model, guide = _vae()
    bv.fit(model, guide, digits[:100], epochs=1, lr=np.float32(1e-3))
    with pytest.raises(ValueError, match="seed must be an integer"):
        bv.fit(model, guide, digits[:100], epochs=1, seed=2**70)
    with pytest.raises(ValueError, match="seed must be an integer"):
        bv.fit(model, guide, digits[:100], epochs=1, seed="a")
    with pytest.raises(ValueError, match="lr must be a positive finite number"):
        bv.fit(model, guide, digits[:100], epochs=1, lr=float("nan"))
