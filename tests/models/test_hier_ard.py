"""ARDPrior and its scale hyperpriors: exact densities, the acceptance fit, bad input.

Acceptance (issue 10): a linear-Gaussian model with 3 true factors (D = 20, N = 2000,
noise 0.5) fitted with 10 candidate factors and a linear decoder switches off the 7 unused
factors (posterior mean tau < 0.1 x the smallest used one) and recovers the true column
space (largest principal angle < 5 degrees).
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import scipy.linalg
import scipy.stats
import torch
from pyro import poutine

import bayesvae as bv
from bayesvae._registry import build
from bayesvae.guides import AmortizedGuide
from bayesvae.models import VAE, Gaussian
from bayesvae.models.hierarchical import (
    ARD_SCALE,
    ARD_WEIGHT,
    ARDDecoder,
    ARDPrior,
    GroupPrior,
    ScalePrior,
)
from bayesvae.models.priors import Z

# ------------------------------------------------------------------------------------------
# Scale hyperpriors: known densities


@pytest.mark.parametrize(
    ("prior", "reference"),
    [
        (ScalePrior("half_cauchy", scale=2.0), scipy.stats.halfcauchy(scale=2.0).logpdf),
        (ScalePrior("half_normal", scale=0.5), scipy.stats.halfnorm(scale=0.5).logpdf),
        # tau^2 ~ InvGamma(a, b)  =>  p(tau) = 2 tau InvGamma(tau^2; a, b)
        (
            ScalePrior("inverse_gamma", concentration=3.0, rate=2.0),
            lambda t: scipy.stats.invgamma(3.0, scale=2.0).logpdf(t**2) + np.log(2 * t),
        ),
    ],
)
def test_scale_prior_log_density_matches_scipy(prior, reference):
    tau = torch.tensor([0.1, 0.7, 1.0, 3.5], dtype=torch.float64)
    d = prior.distribution(tau, (4,))
    np.testing.assert_allclose(d.log_prob(tau).numpy(), reference(tau.numpy()), rtol=1e-10)
    draw = d.sample((1000,))
    assert bool((draw > 0).all())


def test_scale_prior_round_trips_through_config():
    sp = ScalePrior("inverse_gamma", concentration=0.5, rate=0.25)
    assert build(sp.to_config()) == sp
    prior = ARDPrior(4, width=6, scale_prior=sp)
    again = build(prior.to_config())
    assert again.scale_prior == sp and again.num_factors == 4 and again.latent_dim == 6


@pytest.mark.parametrize(
    "make",
    [
        lambda: ARDPrior(3, width=5, scale_prior="half_student"),
        lambda: GroupPrior(2, groups=3, within_prior="gamma"),
        lambda: GroupPrior(2, groups=3, between_prior="Cauchy"),
        lambda: ScalePrior("exponential"),
    ],
)
def test_unknown_hyperprior_name_is_a_clear_value_error(make):
    with pytest.raises(ValueError, match=r"unknown hyperprior '\w+' for a scale; choose one of 'half_cauchy', 'half_normal', 'inverse_gamma'"):
        make()


def test_bad_hyperprior_parameters_and_types():
    with pytest.raises(ValueError, match="ScalePrior scale must be a positive finite number, got -1.0"):
        ScalePrior("half_cauchy", scale=-1.0)
    with pytest.raises(ValueError, match="ScalePrior rate must be a positive finite number"):
        ScalePrior("inverse_gamma", rate=float("nan"))
    with pytest.raises(TypeError, match="scale_prior must be a ScalePrior or one of the names"):
        ARDPrior(3, width=5, scale_prior=1.0)
    with pytest.raises(ValueError, match="num_factors must be a positive int, got 0"):
        ARDPrior(0, width=5)
    with pytest.raises(ValueError, match="width must be a positive int"):
        ARDPrior(2, width=-3)


# ------------------------------------------------------------------------------------------
# The model's densities on a replayed guide draw


def particles(fn, num: int):
    """``fn`` inside a particle plate at dim -2, as Pyro's vectorized ELBOs run it."""

    def wrapped(*args, **kwargs):
        with pyro.plate("particles", num, dim=-2):
            return fn(*args, **kwargs)

    return wrapped


def _ard_model(num_factors=3, width=5, scale_prior="half_cauchy"):
    torch.manual_seed(0)
    prior = ARDPrior(num_factors, width=width, scale_prior=scale_prior)
    model = VAE(prior=prior, likelihood=Gaussian(scale=0.5), decoder=ARDDecoder(width)).double()
    guide = AmortizedGuide(model, hidden=()).double()
    return model, guide


@pytest.mark.parametrize("scale_prior", ["half_cauchy", "inverse_gamma"])
def test_ard_log_joint_on_a_replayed_draw_is_the_hand_computed_one(scale_prior):
    model, guide = _ard_model(scale_prior=scale_prior)
    x = torch.randn(7, 5, dtype=torch.float64)
    with torch.no_grad():
        gtr = poutine.trace(guide).get_trace(x)
        mtr = poutine.trace(poutine.replay(model, trace=gtr)).get_trace(x)
    tau = mtr.nodes[ARD_SCALE]["value"].numpy()
    w = mtr.nodes[ARD_WEIGHT]["value"].numpy()
    z = mtr.nodes[Z]["value"].numpy()
    assert tau.shape == (3,) and w.shape == (3, 5) and z.shape == (7, 3)
    if scale_prior == "half_cauchy":
        lp_tau = scipy.stats.halfcauchy.logpdf(tau).sum()
    else:
        lp_tau = (scipy.stats.invgamma(1e-3, scale=1e-3).logpdf(tau**2) + np.log(2 * tau)).sum()
    # row k of W ~ N(0, tau_k^2); z ~ N(0, I); x ~ N(z W + b, 0.25)
    lp_w = scipy.stats.norm.logpdf(w, scale=tau[:, None]).sum()
    lp_z = scipy.stats.norm.logpdf(z).sum()
    mean = z @ w + model.decoder.bias.detach().numpy()
    lp_x = scipy.stats.norm.logpdf(x.numpy(), loc=mean, scale=0.5).sum()
    mtr.compute_log_prob()
    got = {name: float(mtr.nodes[name]["log_prob_sum"]) for name in (ARD_SCALE, ARD_WEIGHT, Z, "x")}
    np.testing.assert_allclose(
        [got[ARD_SCALE], got[ARD_WEIGHT], got[Z], got["x"]], [lp_tau, lp_w, lp_z, lp_x], rtol=1e-9
    )


def test_ard_minibatch_scales_locals_by_n_over_b_and_not_the_globals():
    model, guide = _ard_model()
    x = torch.randn(4, 5, dtype=torch.float64)
    idx = torch.tensor([3, 10, 11, 40])
    gtr = poutine.trace(guide).get_trace(x, index=idx, num_data=50)
    mtr = poutine.trace(poutine.replay(model, trace=gtr)).get_trace(x, index=idx, num_data=50)
    for tr in (gtr, mtr):
        assert tr.nodes[ARD_SCALE]["scale"] == 1.0 and tr.nodes[ARD_WEIGHT]["scale"] == 1.0
        assert tr.nodes[Z]["scale"] == pytest.approx(50 / 4)


def test_ard_decoder_input_broadcasts_over_vectorized_particles():
    # under P vectorized particles W has shape (P, 1, L, H), z (P, B, L): u must be (P, B, H)
    model, guide = _ard_model()
    x = torch.randn(6, 5, dtype=torch.float64)
    gtr = poutine.trace(particles(guide, 3)).get_trace(x)
    mtr = poutine.trace(poutine.replay(particles(model, 3), trace=gtr)).get_trace(x)
    w, z = mtr.nodes[ARD_WEIGHT]["value"], mtr.nodes[Z]["value"]
    out = mtr.nodes["_RETURN"]["value"]
    assert w.shape == (3, 1, 3, 5) and z.shape == (3, 6, 3) and out.shape == (3, 6, 5)
    for p in range(3):
        expected = z[p] @ w[p, 0] + model.decoder.bias
        torch.testing.assert_close(out[p], expected)


def test_ard_decoder_shapes_config_and_errors():
    deep = ARDDecoder(16, 9, hidden=(8,), activation="tanh")
    assert deep(torch.zeros(2, 16)).shape == (2, 9)
    assert build(deep.to_config()).to_config() == deep.to_config()
    flat = ARDDecoder(7)
    assert flat.out_features == 7 and flat(torch.ones(1, 7)).shape == (1, 7)
    with pytest.raises(ValueError, match="ARDDecoder hidden= needs out_features="):
        ARDDecoder(7, hidden=(4,))
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        ARDDecoder(7, 3, activation="swish")
    with pytest.raises(ValueError, match="decoder takes 7 inputs but the prior's latent_dim is 5"):
        VAE(prior=ARDPrior(2, width=5), likelihood=Gaussian(scale=1.0), decoder=ARDDecoder(7))


# ------------------------------------------------------------------------------------------
# Acceptance: switching off unused factors of Bayesian PCA


def _fit_bpca(elbo: str, scale_prior: str = "half_cauchy", epochs: int = 400):
    data, truth = bv.datasets.linear_gaussian(2000, 20, 3, 0.5, seed=0)
    prior = ARDPrior(10, width=20, scale_prior=scale_prior)
    model = VAE(prior=prior, likelihood=Gaussian(data_dim=20), decoder=ARDDecoder(20))
    guide = AmortizedGuide(model, hidden=())
    fit = bv.fit(model, guide, data.x, elbo=elbo, epochs=epochs, batch_size=200, lr=0.02, seed=0)
    return prior, fit, truth


def _check_bpca(prior, fit, truth):
    rel = prior.relevance(fit)
    used = rel["tau_mean"].nlargest(3).index
    unused = rel.index.difference(used)
    ratio = rel.loc[unused, "tau_mean"].max() / rel.loc[used, "tau_mean"].min()
    w = prior.loadings(fit).numpy()[list(used)].T  # (D, 3): the used rows of W as columns
    angle = math.degrees(scipy.linalg.subspace_angles(w, truth["W"]).max())
    # Acceptance thresholds of the issue. Measured: ratio 0.03-0.04, angle ~1 degree. Unused
    # taus fall slowly when two dimensions start out sharing one factor; with lr 0.02 and
    # 400 epochs the ratio was <= 0.04 for each of 14 (meanfield) and 7 (trace) encoder
    # initializations tried, so the 0.1 threshold is not met by a lucky seed alone.
    assert ratio < 0.1, rel
    assert angle < 5.0
    assert list(rel.index[rel["active"]]) == sorted(used)
    assert bool((rel["tau_lower"] < rel["tau_mean"]).all() and (rel["tau_mean"] < rel["tau_upper"]).all())
    return ratio, angle


def test_ard_switches_off_unused_factors_and_recovers_the_column_space():
    prior, fit, truth = _fit_bpca("trace")
    _check_bpca(prior, fit, truth)
    assert np.isfinite(fit.history["elbo"]).all()


@pytest.mark.slow
@pytest.mark.parametrize(("elbo", "scale_prior"), [("meanfield", "half_cauchy"), ("meanfield", "inverse_gamma"), ("trace", "half_normal")])
def test_ard_acceptance_other_objectives_and_hyperpriors(elbo, scale_prior):
    prior, fit, truth = _fit_bpca(elbo, scale_prior)
    _check_bpca(prior, fit, truth)


def test_relevance_report_errors():
    prior, fit, _ = _fit_bpca("trace", epochs=1)
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\), got 1.5"):
        prior.relevance(fit, threshold=1.5)
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\), got 0"):
        prior.relevance(fit, level=0)

    class Bare:
        pass

    with pytest.raises(TypeError, match="needs a guide with a mean-field global part"):
        prior.relevance(type("F", (), {"guide": Bare()})())
