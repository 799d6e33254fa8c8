"""HierarchicalLatentPrior and MixturePrior: exact densities, which KL each objective uses,
training on digits under both objectives, and the prior-comparison example."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import kl_divergence

import bayesvae as bv
from bayesvae.guides import AmortizedGuide
from bayesvae.models import VAE, Bernoulli, Gaussian, GaussianPrior
from bayesvae.models.hierarchical import Z1, Z2, HierarchicalLatentPrior, MixturePrior
from bayesvae.models.priors import Z
from bayesvae.nn import MLP

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "prior_comparison.py"


def _model(prior, data_dim=5):
    torch.manual_seed(0)
    model = VAE(prior=prior, likelihood=Gaussian(scale=0.8), decoder=MLP(prior.latent_dim, data_dim, hidden=(6,))).double()
    return model, AmortizedGuide(model, hidden=(7,)).double()


def _traces(model, guide, x):
    gtr = poutine.trace(guide).get_trace(x)
    mtr = poutine.trace(poutine.replay(model, trace=gtr)).get_trace(x)
    return gtr, mtr


# ------------------------------------------------------------------------------------------
# Two-level hierarchy


def test_two_level_sites_and_guide_factorisation():
    prior = HierarchicalLatentPrior(dims=(2, 4))
    assert prior.latent_dim == 4 and prior.dims == (2, 4)
    (top, bottom) = prior.local_sites()
    assert (top.name, top.dim, top.conditions_on) == (Z2, 2, ())
    assert (bottom.name, bottom.dim, bottom.conditions_on) == (Z1, 4, (Z2,))
    model, guide = _model(prior)
    # q(z1 | x, z2): the head sees the trunk's 7 features and the 2 values of z2
    assert guide.heads[Z1].in_features == 7 + 2 and guide.heads[Z2].in_features == 7
    gtr, _ = _traces(model, guide, torch.randn(3, 5, dtype=torch.float64))
    assert [n for n in gtr.stochastic_nodes if n != "data"] == [Z2, Z1]  # z2 first


def test_two_level_conditional_prior_is_the_hand_computed_one():
    prior = HierarchicalLatentPrior(dims=(2, 3), hidden=(4,)).double()
    z2 = torch.randn(5, 2, dtype=torch.float64)
    z1 = torch.randn(5, 3, dtype=torch.float64)
    lin1, lin2 = prior.conditional.net[0], prior.conditional.net[2]
    out = lin2(torch.tanh(lin1(z2)))
    loc, scale = out[:, :3], F.softplus(out[:, 3:]) + 1e-3
    expected = (-0.5 * ((z1 - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(prior.conditional_prior(z2).log_prob(z1), expected)


def test_two_level_meanfield_loss_is_the_analytic_kl_given_the_sampled_top():
    # Same seed, same guide draw: TraceMeanField_ELBO's loss must be
    # -[log p(x | z1) - KL(q(z2|x) || N(0, I)) - KL(q(z1|x,z2) || p(z1|z2))], both KLs in
    # closed form between diagonal Gaussians, the second at the sampled z2.
    model, guide = _model(HierarchicalLatentPrior(dims=(2, 3)))
    x = torch.randn(8, 5, dtype=torch.float64)
    pyro.set_rng_seed(3)
    loss = TraceMeanField_ELBO().differentiable_loss(model, guide, x)
    pyro.set_rng_seed(3)
    gtr, mtr = _traces(model, guide, x)
    z2 = gtr.nodes[Z2]["value"]
    kl2 = kl_divergence(gtr.nodes[Z2]["fn"], dist.Normal(torch.zeros_like(z2), 1.0).to_event(1))
    kl1 = kl_divergence(gtr.nodes[Z1]["fn"], model.prior.conditional_prior(z2))
    loglik = mtr.nodes["x"]["fn"].log_prob(x)
    torch.testing.assert_close(loss, -(loglik - kl2 - kl1).sum())
    # and Trace_ELBO on the same draw is the single-sample Monte Carlo version
    pyro.set_rng_seed(3)
    mc = Trace_ELBO().differentiable_loss(model, guide, x)
    gtr.compute_log_prob()
    mtr.compute_log_prob()
    lw = sum(mtr.nodes[n]["log_prob_sum"] for n in ("x", Z2, Z1)) - gtr.nodes[Z2]["log_prob_sum"] - gtr.nodes[Z1]["log_prob_sum"]
    torch.testing.assert_close(mc, -lw)


def test_two_level_constructor_errors():
    with pytest.raises(ValueError, match=r"dims must be a pair \(top, bottom\) of positive ints, got 3"):
        HierarchicalLatentPrior(dims=3)
    with pytest.raises(ValueError, match=r"dims\[1\] \(bottom\) must be a positive int, got 0"):
        HierarchicalLatentPrior(dims=(2, 0))


# ------------------------------------------------------------------------------------------
# Mixture prior


def test_mixture_log_density_is_the_hand_computed_logsumexp():
    prior = MixturePrior(2, components=3).double()
    z = torch.randn(4, 2, dtype=torch.float64)
    comp = dist.Normal(prior.loc, prior.scale).to_event(1).log_prob(z[:, None, :])  # (4, 3)
    expected = torch.logsumexp(comp + prior.weights.log(), dim=-1)
    torch.testing.assert_close(prior.distribution(4).log_prob(z), expected)
    assert prior.distribution(4).batch_shape == (4,) and prior.distribution(4).event_shape == (2,)


def test_mixture_kl_is_monte_carlo_under_both_objectives():
    # No KL(Normal || MixtureSameFamily) is registered, so TraceMeanField_ELBO falls back to
    # log q - log p at the draw: on the same seed its loss equals Trace_ELBO's exactly. The
    # Gaussian prior (analytic KL) is the contrast: there the two losses differ.
    model, guide = _model(MixturePrior(3, components=4))
    x = torch.randn(6, 5, dtype=torch.float64)
    with pytest.raises(NotImplementedError):
        kl_divergence(guide.posterior(x)[Z], model.prior.distribution(6))
    losses = {}
    for name, elbo in (("trace", Trace_ELBO()), ("meanfield", TraceMeanField_ELBO())):
        pyro.set_rng_seed(5)
        losses[name] = elbo.differentiable_loss(model, guide, x)
    torch.testing.assert_close(losses["trace"], losses["meanfield"], rtol=1e-12, atol=0.0)
    gauss, gguide = _model(GaussianPrior(3))
    pyro.set_rng_seed(5)
    a = Trace_ELBO().differentiable_loss(gauss, gguide, x)
    pyro.set_rng_seed(5)
    b = TraceMeanField_ELBO().differentiable_loss(gauss, gguide, x)
    assert abs(float((a - b).detach())) > 1e-3


def test_evaluation_reports_which_kl_is_monte_carlo():
    elbo_parts = pytest.importorskip("bayesvae.evaluation.elbo_parts")
    x = torch.randn(10, 5)
    for prior, expected in (
        (MixturePrior(3, components=4), {Z: elbo_parts.MONTE_CARLO}),
        (HierarchicalLatentPrior(dims=(2, 3)), {Z2: elbo_parts.ANALYTIC, Z1: elbo_parts.ANALYTIC}),
    ):
        model, guide = _model(prior)
        parts = elbo_parts.elbo_decomposition((model.float(), guide.float()), x, num_samples=4)
        assert {k: parts.kl_method[k] for k in expected} == expected


def test_mixture_constructor_errors():
    with pytest.raises(ValueError, match="components must be a positive int, got 0"):
        MixturePrior(2, components=0)
    with pytest.raises(ValueError, match="init_spread must be a positive finite number"):
        MixturePrior(2, init_spread=-1.0)


# ------------------------------------------------------------------------------------------
# Digits, both objectives


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
@pytest.mark.parametrize("make", [lambda: HierarchicalLatentPrior(dims=(4, 8)), lambda: MixturePrior(8, components=10)], ids=["two_level", "mixture"])
def test_two_level_and_mixture_train_on_digits_without_nan(make, elbo):
    data = bv.datasets.digits(binarize=True)
    train, test = data.split(0.25, seed=0)
    prior = make()
    model = VAE(prior=prior, likelihood=Bernoulli(), decoder=MLP(8, 64, hidden=(64,)))
    guide = AmortizedGuide(model, hidden=(64,))
    fit = bv.fit(model, guide, train.x, elbo=elbo, epochs=8, batch_size=128, lr=3e-3, seed=0, validation=test.x)
    hist = fit.history
    assert np.isfinite(hist[["elbo", "val_elbo"]].to_numpy()).all()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # 64 binary pixels: a random guess costs 64 log 2 = 44 nats; training must beat it well
    assert hist["elbo"].iloc[-1] > hist["elbo"].iloc[0] and hist["val_elbo"].iloc[-1] > -35.0


def _load_example():
    spec = importlib.util.spec_from_file_location("prior_comparison", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("prior_comparison", module)
    spec.loader.exec_module(module)
    return module


def test_prior_comparison_example_reports_every_prior_under_both_objectives(capsys):
    table = _load_example().main(["--epochs", "1", "--rows", "120", "--samples", "5", "--hidden", "16"])
    assert set(table["prior"]) == {"gaussian", "ard", "two_level", "mixture"}
    assert set(table["objective"]) == {"trace", "meanfield"} and len(table) == 8
    assert np.isfinite(table["test_elbo"]).all()
    assert "Held-out ELBO" in capsys.readouterr().out
