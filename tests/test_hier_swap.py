"""Every prior of the package in the same decoder, likelihood and guide, under both objectives.

The list is built from what is importable: the IBP prior (bayesvae.models.ibp) joins when it
exists. Each prior must fit with minibatches (global sites unscaled, local ones scaled by
N / batch), give a finite held-out ELBO, sample, and survive save / load.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from pyro import poutine

import bayesvae as bv
from bayesvae.guides import AmortizedGuide
from bayesvae.models import VAE, Bernoulli, GaussianPrior
from bayesvae.models.hierarchical import (
    ARDPrior,
    GroupPrior,
    HierarchicalLatentPrior,
    MixturePrior,
)
from bayesvae.nn import MLP

H, D, N, G = 4, 12, 60, 3


def _priors() -> dict[str, object]:
    makers = {
        "gaussian": lambda: GaussianPrior(H),
        "ard": lambda: ARDPrior(3, width=H),
        "ard_inverse_gamma": lambda: ARDPrior(3, width=H, scale_prior="inverse_gamma"),
        "groups": lambda: GroupPrior(H, groups=G),
        "two_level": lambda: HierarchicalLatentPrior(dims=(2, H)),
        "mixture": lambda: MixturePrior(H, components=3),
    }
    try:
        ibp = importlib.import_module("bayesvae.models.ibp")
    except ImportError:
        ibp = None
    if ibp is not None and hasattr(ibp, "IBPPrior"):
        makers["ibp"] = lambda: ibp.IBPPrior(2.0, truncation=H)
    return makers


PRIORS = _priors()


def _data():
    rng = np.random.default_rng(0)
    x = (rng.random((N, D)) < 0.3).astype(np.float32)
    return x, np.arange(N) % G


def _model(name):
    torch.manual_seed(0)
    model = VAE(prior=PRIORS[name](), likelihood=Bernoulli(), decoder=MLP(H, D, hidden=(16,)))
    return model, AmortizedGuide(model, hidden=(16,))


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
@pytest.mark.parametrize("name", sorted(PRIORS))
def test_every_prior_fits_in_the_same_model(name, elbo, tmp_path):
    x, g = _data()
    model, guide = _model(name)
    fit = bv.fit(model, guide, x, groups=g, elbo=elbo, epochs=3, batch_size=16, lr=1e-2, seed=0)
    assert np.isfinite(fit.history["elbo"]).all()
    # a 12-pixel Bernoulli model: worse than 12 log 2 = 8.3 nats would mean a broken ELBO
    before = bv.evaluate_elbo(model, guide, x, groups=g, elbo=elbo, num_particles=4, seed=1)
    assert -15.0 < before < 0.0
    draws = model.sample(5, groups=torch.tensor([0, 1, 2, 0, 1]))
    assert draws["x"].shape == (5, D) and draws["z"].shape == (5, H)
    fit.save(tmp_path / "fit")
    loaded = bv.load(tmp_path / "fit")
    assert type(loaded.model.prior) is type(model.prior)
    after = bv.evaluate_elbo(loaded.model, loaded.guide, x, groups=g, elbo=elbo, num_particles=4, seed=1)
    assert after == pytest.approx(before, rel=1e-6)


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_minibatch_scales_local_sites_by_n_over_b_and_not_global_ones(name):
    x, g = _data()
    model, guide = _model(name)
    idx = torch.tensor([1, 7, 8, 30, 59])
    kw = {"index": idx, "num_data": N, "groups": torch.as_tensor(g)[idx]}
    xb = torch.as_tensor(x)[idx]
    gtr = poutine.trace(guide).get_trace(xb, **kw)
    mtr = poutine.trace(poutine.replay(model, trace=gtr)).get_trace(xb, **kw)
    globals_ = {s.name for s in model.prior.global_sites()}
    locals_ = {s.name for s in model.prior.local_sites()}
    for tr in (gtr, mtr):
        for site in globals_:
            assert tr.nodes[site]["scale"] == 1.0, site
        for site in locals_:
            assert tr.nodes[site]["scale"] == pytest.approx(N / 5), site


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
@pytest.mark.parametrize("name", sorted(n for n in PRIORS if n != "ibp"))
def test_hierarchical_priors_with_vectorized_particles(name, elbo):
    x, g = _data()
    model, guide = _model(name)
    fit = bv.fit(model, guide, x, groups=g, elbo=elbo, epochs=1, batch_size=20, num_particles=3, seed=0)
    assert np.isfinite(fit.history["elbo"]).all()
