"""Every prior of the package in the same decoder, likelihood and guide, under both objectives.

The list is built from what is importable: the IBP prior (bayesvae.models.ibp) joins when it
exists. Each prior must fit with minibatches (global sites unscaled, local ones scaled by
N / batch), give a finite held-out ELBO, sample, and survive save / load.
"""

from __future__ import annotations

import contextlib
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


# --------------------------------------------------------------------------- scoring and report hooks

#: The report sections each prior asks for (Prior.summaries) when every group has data.
SUMMARIES = {
    "gaussian": set(),
    "ard": {"ard_relevance"},
    "ard_inverse_gamma": {"ard_relevance"},
    "groups": {"group_effects", "group_pooling"},
    "two_level": set(),
    "mixture": set(),
    "ibp": {"ibp_usage"},
}


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_every_prior_answers_the_scoring_and_report_hooks(name):
    from matplotlib.figure import Figure

    from bayesvae import plots
    from bayesvae.models import PriorSummary

    x, g = _data()
    model, guide = _model(name)
    context = model.prior.scoring_context()
    # only the IBP prior scores differently from how it trains (its discrete indicators)
    assert isinstance(context, contextlib.nullcontext) == (name != "ibp")
    summaries = model.prior.summaries(guide, torch.as_tensor(x), groups=torch.as_tensor(g))
    assert {s.name for s in summaries} == SUMMARIES[name]
    for s in summaries:
        assert isinstance(s, PriorSummary) and s.caption and len(s.frame)
        fig = plots.plot_prior_summary(s)
        assert (fig is None) == (s.kind == "table")
        assert fig is None or isinstance(fig, Figure)


def test_ibp_scoring_context_is_its_discrete_mode_and_evaluation_enters_it():
    ibp = pytest.importorskip("bayesvae.models.ibp")
    from bayesvae.scoring import evaluation_mode

    model = VAE(prior=ibp.IBPPrior(2.0, truncation=3), likelihood=Bernoulli(), decoder=MLP(3, D))
    prior = model.prior
    assert not isinstance(prior.active_estimator, ibp.ExactBernoulli)
    with prior.scoring_context():
        assert isinstance(prior.active_estimator, ibp.ExactBernoulli)
    assert not isinstance(prior.active_estimator, ibp.ExactBernoulli)
    with evaluation_mode(model):
        assert isinstance(prior.active_estimator, ibp.ExactBernoulli)
    assert not isinstance(prior.active_estimator, ibp.ExactBernoulli)


def test_prior_summaries_are_the_priors_own_reports():
    from types import SimpleNamespace

    from scipy.stats import norm

    x, g = _data()
    xt, gt = torch.as_tensor(x), torch.as_tensor(g)
    model, guide = _model("ard")
    (rel,) = model.prior.summaries(guide, xt)
    pd_testing = pytest.importorskip("pandas").testing
    pd_testing.assert_frame_equal(rel.frame, model.prior.relevance(SimpleNamespace(guide=guide), level=0.9))
    assert rel.kind == "relevance" and rel.frame.attrs["level"] == 0.9
    model, guide = _model("groups")
    effects, pooling = model.prior.summaries(guide, xt, groups=gt)
    q = guide.globals.distribution("group_mean")
    q = q.base_dist if hasattr(q, "base_dist") else q
    loc, scale = (t.detach().double().flatten().numpy() for t in (q.loc, q.scale))
    # Normal factors: the 90% interval is loc -+ z_0.95 scale exactly
    np.testing.assert_allclose(effects.frame["mean"], loc, rtol=1e-6)
    np.testing.assert_allclose(effects.frame["lower"], loc + norm.ppf(0.05) * scale, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(effects.frame["upper"], loc + norm.ppf(0.95) * scale, rtol=1e-5, atol=1e-6)
    assert list(effects.frame["element"][:2]) == ["0,0", "0,1"] and len(effects.frame) == G * H
    expected = model.prior.pooling(SimpleNamespace(guide=guide), xt, gt)[["n", "shrinkage", "expected"]]
    pd_testing.assert_frame_equal(pooling.frame, expected)
    # a group without rows: no pooling table (its code average is undefined), effects still shown
    names = [s.name for s in model.prior.summaries(guide, xt[g != 2], groups=gt[g != 2])]
    assert names == ["group_effects"]


def test_prior_summary_checks_its_kind_and_frame():
    import pandas as pd

    from bayesvae.models import PriorSummary

    with pytest.raises(ValueError, match=r"PriorSummary kind must be one of \('usage', 'relevance', 'intervals', 'table'\), got 'violin'"):
        PriorSummary("a", "A", "violin", pd.DataFrame({"x": [1]}))
    with pytest.raises(TypeError, match="PriorSummary frame must be a pandas DataFrame, got list"):
        PriorSummary("a", "A", "table", [1, 2])


def test_make_decoder_gives_each_prior_the_decoder_it_needs():
    from bayesvae.models.hierarchical import ARDDecoder

    assert isinstance(GaussianPrior(3).make_decoder(D, hidden=(8,)), MLP)
    ard = ARDPrior(2, width=8).make_decoder(D, hidden=(8, 5))
    assert isinstance(ard, ARDDecoder) and ard.deep and ard.hidden == (5,) and ard.out_features == D
    bpca = ARDPrior(2, width=D).make_decoder(D)
    assert isinstance(bpca, ARDDecoder) and not bpca.deep
    with pytest.raises(ValueError, match=r"ARDPrior\(width=8\) needs a decoder whose first layer has width 8; hidden=\(16,\)"):
        ARDPrior(2, width=8).make_decoder(D, hidden=(16,))


def test_no_module_above_models_names_a_concrete_prior():
    """Issue 13: evaluation, diagnostics, plots, report and the CLI ask a prior through its
    hooks; only models/, guides/ and the package root (its exports) name prior classes."""
    import ast
    from pathlib import Path

    names = {"IBPPrior", "ARDPrior", "GroupPrior", "HierarchicalLatentPrior", "MixturePrior", "GaussianPrior", "StandardNormal"}
    root = Path(bv.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in ("models", "guides") or rel == Path("__init__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            used = {
                ast.Name: lambda n: n.id,
                ast.Attribute: lambda n: n.attr,
                ast.alias: lambda n: n.name.rsplit(".", 1)[-1],
            }.get(type(node))
            if used is not None and used(node) in names:
                offenders.append(f"{rel}:{node.lineno}: {used(node)}")
            if isinstance(node, ast.Constant) and node.value in names:  # importlib / getattr by string
                offenders.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not offenders, offenders
