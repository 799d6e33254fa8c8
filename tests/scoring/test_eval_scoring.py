"""The scoring engine's boundary: covariates in one Rows record, and the one scoring mode.

Known answer used throughout: z_n ~ N(0, 1), x_n | z_n ~ N(z_n + c_n, s^2) with a per-row
covariate c_n. Then p(x_n) = N(c_n, 1 + s^2) and p(z_n | x_n) = N((x_n - c_n) / (1 + s^2),
s^2 / (1 + s^2)); with that posterior as the guide every importance weight equals p(x_n)
exactly, so a wrong row of the covariate reaching the model or guide shows up as an error of
order (c_n - c_m)^2 / (1 + s^2) in log p(x_n), not as noise.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import bayesvae as bv
from bayesvae.compare import compare
from bayesvae.convention import Rows
from bayesvae.diagnostics import latent_summary, psis_diagnostic
from bayesvae.evaluation import (
    elbo_decomposition,
    evaluate,
    importance_log_weights,
    log_marginal_likelihood,
)
from bayesvae.models.hierarchical import GroupPrior
from bayesvae.scoring import (
    TraceScorer,
    evaluation_mode,
    merge_covariates,
    prepare,
    scoring_context,
    scoring_session,
)

SIGMA = 0.5
N = 11


def _shift_problem():
    gen = torch.Generator().manual_seed(3)
    shift = 3.0 * torch.randn(N, generator=gen, dtype=torch.float64)
    x = (shift + math.sqrt(1 + SIGMA**2) * torch.randn(N, generator=gen, dtype=torch.float64))[:, None]
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def model(x, *, index, num_data, shift):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0]), 1.0))
            pyro.sample("x", dist.Normal(z + shift, SIGMA), obs=x[:, 0])

    def guide(x, *, index, shift):  # no num_data: Call passes only what a function names
        seen.append((index.clone(), shift.clone()))
        post_var = SIGMA**2 / (1 + SIGMA**2)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal((x[:, 0] - shift) / (1 + SIGMA**2), math.sqrt(post_var)))

    exact = dist.Normal(shift, math.sqrt(1 + SIGMA**2)).log_prob(x[:, 0])
    return model, guide, x, shift, exact, seen


@pytest.mark.parametrize("vectorize", [True, False])
@pytest.mark.parametrize("chunk_size", [None, 4, 1])
def test_covariate_rows_reach_model_and_guide(vectorize, chunk_size):
    """Every block gets its own rows of the covariate: log w = log p(x_n) exactly (known answer)."""
    model, guide, x, shift, exact, seen = _shift_problem()
    iw = importance_log_weights(
        model, guide, x, num_samples=5, covariates={"shift": shift}, chunk_size=chunk_size, vectorize=vectorize, seed=0
    )
    # float64; the weights are the same number up to rounding (~1e-15 relative)
    torch.testing.assert_close(iw.log_weights, exact.expand(5, N), rtol=0, atol=1e-12)
    assert seen and all(torch.equal(c, shift[i]) for i, c in seen)
    if chunk_size == 1:
        assert len({tuple(i.tolist()) for i, _ in seen}) == N  # one row per block


def test_shuffled_covariate_is_detected():
    """The check above can fail: the covariate of other rows moves log p(x_n) far off."""
    model, guide, x, shift, exact, _ = _shift_problem()
    iw = importance_log_weights(model, guide, x, num_samples=3, covariates={"shift": shift.flip(0)}, seed=0)
    assert float((iw.log_weights[0] - exact).abs().max()) > 1.0


def test_public_functions_accept_covariates_and_rows():
    """log_marginal_likelihood on covariates=, on a numpy covariate, and on a prepared Rows agree."""
    model, guide, x, shift, exact, _ = _shift_problem()
    a = log_marginal_likelihood((model, guide), x, num_samples=4, covariates={"shift": shift})
    b = log_marginal_likelihood((model, guide), x.numpy(), num_samples=4, covariates={"shift": shift.numpy()})
    rows = prepare(model, guide, x, covariates={"shift": shift})
    assert isinstance(rows, Rows) and set(rows.covariates) == {"shift"}
    c = log_marginal_likelihood((model, guide), rows, num_samples=4)
    # without a module the data go to float32 (prepare's default), so the known answer holds
    # to float32 rounding of log-densities of size ~5: 1e-5
    for r in (a, b, c):
        torch.testing.assert_close(r.per_point.double(), exact, rtol=0, atol=1e-5)
    torch.testing.assert_close(a.per_point, c.per_point, rtol=0, atol=0)


def _group_fit():
    torch.manual_seed(0)
    model = bv.VAE(prior=GroupPrior(2, groups=3), likelihood=bv.Gaussian(scale=1.0), decoder=bv.MLP(2, 4)).double()
    guide = bv.AmortizedGuide(model, hidden=(8,)).double()
    x = torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    g = np.array([0, 2, 2, 1, 0, 2, 1, 1, 0, 2])
    return model, guide, x, g


def test_groups_covariates_and_rows_spellings_give_identical_numbers():
    """groups=, covariates={'groups': ...} and a Rows give bit-identical results on one seed."""
    model, guide, x, g = _group_fit()
    fit = (model, guide)
    rows = prepare(model, guide, x, groups=g)
    spellings = [{"groups": g}, {"covariates": {"groups": g}}, {}]
    data = [x, x, rows]

    def run(kw, d):
        return [
            log_marginal_likelihood(fit, d, num_samples=6, **kw).per_point,
            elbo_decomposition(fit, d, num_samples=3, mi_samples=2, **kw).elbo,
            torch.as_tensor(evaluate(fit, d, num_samples=4, elbo_samples=2, **kw).attrs["log_px_per_point"]),
            torch.tensor(compare({"m": fit}, d, num_samples=4, elbo_samples=2, gaps=False, **kw)["log_px"].to_numpy()),
            torch.as_tensor(latent_summary(fit, d, num_samples=2, **kw).means["z"]),
            torch.as_tensor(psis_diagnostic(fit, d, num_samples=30, **kw).log_px_iwae),
        ]

    results = [run(kw, d) for kw, d in zip(spellings, data)]
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the labels matter: other labels give other numbers
    moved = log_marginal_likelihood(fit, x, num_samples=6, groups=(g + 1) % 3).per_point
    assert not torch.allclose(moved, results[0][0])


def test_boundary_errors():
    model, guide, x, shift, _, _ = _shift_problem()
    fit = (model, guide)
    with pytest.raises(ValueError, match=r"group labels were given twice, as groups= and as covariates\['groups'\]"):
        log_marginal_likelihood(fit, x, groups=[0] * N, covariates={"groups": [0] * N})
    with pytest.raises(TypeError, match="covariates must be a mapping of name to per-row array, got list"):
        log_marginal_likelihood(fit, x, covariates=[shift])
    with pytest.raises(ValueError, match="covariate name 'index' is reserved by the calling convention"):
        log_marginal_likelihood(fit, x, covariates={"index": shift})
    with pytest.raises(ValueError, match=r"covariate 'shift' must have one entry per row of the data: got shape \(3,\) for 11 rows"):
        log_marginal_likelihood(fit, x, covariates={"shift": shift[:3]})
    rows = prepare(model, guide, x, covariates={"shift": shift})
    with pytest.raises(ValueError, match=r"covariates \['shift'\] were passed alongside a Rows record"):
        log_marginal_likelihood(fit, rows, covariates={"shift": shift})
    with pytest.raises(ValueError, match="covariate 'shift' has 3 entries but x has 11 rows"):
        TraceScorer(model, guide, x, covariates={"shift": shift[:3]})
    with pytest.raises(ValueError, match="covariate name 'num_data' is reserved by the calling convention"):
        TraceScorer(model, guide, x, covariates={"num_data": shift})
    with pytest.raises(ValueError, match="group labels were given twice"):
        merge_covariates(np.zeros(2), {"groups": np.zeros(2)})


# ------------------------------------------------------------------------------------------
# The one scoring mode


class _Prior:
    """A prior whose mean the contexts change; counts how often each is entered."""

    def __init__(self, hooks: tuple[str, ...]) -> None:
        self.loc = 0.0
        self.entered = {"scoring_context": 0, "discrete": 0}
        for name, loc in (("scoring_context", 2.0), ("discrete", -3.0)):
            if name in hooks:
                setattr(self, name, self._context(name, loc))

    def _context(self, name: str, loc: float):
        @contextlib.contextmanager
        def context():
            self.entered[name] += 1
            previous, self.loc = self.loc, loc
            try:
                yield
            finally:
                self.loc = previous

        return context


class _Model(nn.Module):
    """x_n ~ N(prior.loc, 1), no latent sites: log w_n = log N(x_n; loc, 1) exactly."""

    def __init__(self, prior: _Prior) -> None:
        super().__init__()
        self.prior = prior
        self.dropout = nn.Dropout(0.5)

    def forward(self, x, **kwargs):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(x.new_full((x.shape[0],), self.prior.loc), 1.0), obs=x[:, 0])


class _Guide(nn.Module):
    def __init__(self, prior: _Prior) -> None:
        super().__init__()
        self.prior = prior  # shares the model's prior: its context must be entered once

    def forward(self, x, **kwargs):
        return None


@pytest.mark.parametrize(
    "hooks, loc",
    [(("scoring_context", "discrete"), 2.0), (("discrete",), -3.0), ((), 0.0)],
    ids=["scoring_context-first", "discrete-fallback", "none"],
)
def test_evaluation_mode_scores_in_the_priors_context(hooks, loc):
    """log w follows the context's density; scoring_context wins over discrete; entered once."""
    prior = _Prior(hooks)
    model, guide = _Model(prior), _Guide(prior)
    x = torch.linspace(-1, 1, 5, dtype=torch.float64)[:, None]
    iw = importance_log_weights(model, guide, x, num_samples=2, seed=0)
    expected = dist.Normal(torch.tensor(loc, dtype=torch.float64), 1.0).log_prob(x[:, 0])
    torch.testing.assert_close(iw.log_weights, expected.expand(2, 5), rtol=0, atol=1e-12)
    entered = {k: v for k, v in prior.entered.items() if k in hooks}
    if "scoring_context" in hooks:
        assert entered == {"scoring_context": 1, "discrete": 0}
    elif hooks:
        assert entered == {"discrete": 1}
    assert prior.loc == 0.0 and model.training and model.dropout.training


def test_scoring_context_lookup_and_the_ibp_prior():
    assert scoring_context(object()) is None
    ibp = bv.VAE(prior=bv.IBPPrior(2.0, truncation=3), likelihood=bv.Gaussian(scale=1.0), decoder=bv.MLP(3, 4))
    assert scoring_context(ibp) is not None
    assert ibp.prior.temperature is not None  # relaxed (Concrete) indicators for training
    with evaluation_mode(ibp):
        assert ibp.prior.temperature is None and not ibp.training  # discrete indicators inside
    assert ibp.training


def test_scoring_session_restores_state():
    """No gradients and eval mode inside; the caller's RNG state and train mode afterwards."""
    _, _, x, shift, _, _ = _shift_problem()
    prior = _Prior(())
    net, guide = _Model(prior), _Guide(prior)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    with scoring_session(net, guide, x, seed=1, covariates={"shift": shift}) as scorer:
        assert not torch.is_grad_enabled() and not net.training
        assert torch.equal(scorer.covariates["shift"], shift) and scorer.rows.num_data == N
    assert torch.equal(torch.get_rng_state(), before) and net.training and torch.is_grad_enabled()
