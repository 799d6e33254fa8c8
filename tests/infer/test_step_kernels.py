"""The training step's lean parts give the same numbers as the general ones they replace.

Each shortcut on the per-step path -- calling torch's fused Adam kernel without
``Adam.step``'s Python, one fused non-finite pass over gradients and loss, the Bernoulli
row-sum log-density, ``randn`` draws in the Gaussian head -- is checked bit for bit against
what it replaces, including the state a checkpoint saves.
"""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch

from bayesvae.guides._parts import _Normal
from bayesvae.infer.step import adam_update, clear_grads, nonfinite_flag
from bayesvae.models.likelihoods import Bernoulli, _BernoulliLogits, _BernoulliRows


def _pair(fused: bool = True, **options):
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(30, 20)), torch.nn.Parameter(torch.randn(20)), torch.nn.Parameter(torch.randn(5, 5))]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    kw = dict(lr=1e-3, eps=1e-4, fused=fused, **options)
    return ps, qs, torch.optim.Adam(ps, **kw), torch.optim.Adam(qs, **kw)


def _run(ps, qs, o1, o2, steps=40, skip_grad_of=None):
    gen = torch.Generator().manual_seed(1)
    for i in range(steps):
        for p, q in zip(ps, qs):
            g = torch.randn(p.shape, generator=gen)
            p.grad, q.grad = g.clone(), g.clone()
        if skip_grad_of is not None and i % 3 == 0:  # a parameter without a gradient this step
            ps[skip_grad_of].grad = qs[skip_grad_of].grad = None
        if i == 15:  # a staged learning rate and a new epsilon between steps
            for o in (o1, o2):
                o.param_groups[0].update(lr=3e-4, eps=1e-6)
        o1.step()
        adam_update(o2)


def _same_state(o1, o2):
    s1, s2 = o1.state_dict(), o2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    assert s1["state"].keys() == s2["state"].keys()
    for k in s1["state"]:
        for name, value in s1["state"][k].items():
            assert torch.equal(value, s2["state"][k][name]), (k, name)


@pytest.mark.parametrize("skip", [None, 1])
def test_direct_fused_adam_is_bit_identical_to_adam_step(skip):
    ps, qs, o1, o2 = _pair()
    _run(ps, qs, o1, o2, skip_grad_of=skip)
    assert all(torch.equal(p, q) for p, q in zip(ps, qs))
    _same_state(o1, o2)
    assert float(o2.state[qs[0]]["step"]) == 40
    if skip is not None:  # steps without a gradient are not counted, as in torch
        assert float(o2.state[qs[1]]["step"]) == float(o1.state[ps[1]]["step"]) < 40


def test_direct_fused_adam_follows_a_loaded_state():
    """``load_state_dict`` replaces the state tensors: the next update uses the loaded ones."""
    import copy

    ps, qs, o1, o2 = _pair()
    _run(ps, qs, o1, o2, steps=10)
    saved_state, saved_params = copy.deepcopy(o2.state_dict()), [q.detach().clone() for q in qs]
    _run(ps, qs, o1, o2, steps=10)  # o1 by Adam.step, o2 by the direct kernel: the reference
    after = [q.detach().clone() for q in qs]
    o2.load_state_dict(saved_state)
    with torch.no_grad():
        for q, v in zip(qs, saved_params):
            q.copy_(v)
    gen = torch.Generator().manual_seed(1)  # each _run draws its gradients from this stream afresh
    for _ in range(10):
        for q in qs:
            q.grad = torch.randn(q.shape, generator=gen)
        adam_update(o2)
    assert all(torch.equal(q, a) for q, a in zip(qs, after))
    assert float(o2.state[qs[0]]["step"]) == 20


@pytest.mark.parametrize("options", [dict(fused=False), dict(amsgrad=True), dict(weight_decay=0.1), dict(maximize=True)])
def test_other_adam_settings_go_through_adam_step(options):
    fused = options.pop("fused", True)
    ps, qs, o1, o2 = _pair(fused=fused, **options)
    _run(ps, qs, o1, o2)
    assert all(torch.equal(p, q) for p, q in zip(ps, qs))
    _same_state(o1, o2)


def test_step_hooks_still_run():
    ps, qs, o1, o2 = _pair()
    calls = []
    o2.register_step_post_hook(lambda opt, args, kwargs: calls.append(1))
    _run(ps, qs, o1, o2, steps=5)
    assert len(calls) == 5
    assert all(torch.equal(p, q) for p, q in zip(ps, qs))


def test_clear_grads_sets_none():
    ps = [torch.nn.Parameter(torch.ones(3)) for _ in range(2)]
    for p in ps:
        p.grad = torch.ones(3)
    clear_grads(tuple(ps))
    assert all(p.grad is None for p in ps)


def test_nonfinite_flag_reads_gradients_and_loss_and_changes_neither():
    torch.manual_seed(0)
    ps = tuple(torch.nn.Parameter(torch.randn(4, 3)) for _ in range(3))
    for p in ps:
        p.grad = torch.randn_like(p)
    before = [p.grad.clone() for p in ps]
    loss = torch.tensor(2.5)
    flag = nonfinite_flag(ps, loss)
    assert flag.shape == () and flag.dtype == torch.float32 and float(flag) == 0.0
    assert float(loss) == 2.5 and all(torch.equal(p.grad, b) for p, b in zip(ps, before))
    assert float(nonfinite_flag(ps, torch.tensor(float("nan")))) == 1.0
    assert float(nonfinite_flag(ps, torch.tensor(float("-inf")))) == 1.0
    assert float(nonfinite_flag(ps, torch.tensor(2.5, dtype=torch.float64))) == 0.0
    ps[2].grad[1, 2] = float("inf")
    assert float(nonfinite_flag(ps, loss)) == 1.0
    ps[2].grad[1, 2] = float("nan")
    assert float(nonfinite_flag(ps, loss)) == 1.0
    assert float(nonfinite_flag((), torch.tensor(float("inf")))) == 1.0
    assert float(nonfinite_flag((), loss)) == 0.0


@pytest.mark.parametrize("shape", [(100, 784), (7, 20, 30)])
def test_bernoulli_row_density_is_bit_identical_to_to_event(shape):
    torch.manual_seed(0)
    logits = (3 * torch.randn(shape)).requires_grad_()
    x = (torch.rand(shape[-2:]) < 0.3).float()
    # the reference: what the likelihood returned before, the per-cell density summed by Independent
    rows, ref = _BernoulliRows(logits), _BernoulliLogits(logits=logits).to_event(1)
    assert rows.batch_shape == ref.batch_shape and rows.event_shape == ref.event_shape
    a, b = rows.log_prob(x), ref.log_prob(x)
    assert torch.equal(a, b)
    (ga,) = torch.autograd.grad(a.sum(), logits)
    (gb,) = torch.autograd.grad(b.sum(), logits)
    assert torch.equal(ga, gb)
    with torch.no_grad():  # the scoring path
        assert torch.equal(rows.log_prob(x), ref.log_prob(x))
        torch.testing.assert_close(rows.log_prob(x), dist.Bernoulli(logits=logits).to_event(1).log_prob(x))
    wide = rows.expand((2, *rows.batch_shape))
    assert isinstance(wide, _BernoulliRows) and wide.log_prob(x).shape == (2, *rows.batch_shape)
    mask = torch.rand(rows.batch_shape) < 0.5
    assert torch.equal(rows.mask(mask).log_prob(x), ref.mask(mask).log_prob(x))


def test_bernoulli_likelihood_validates_its_support():
    d = Bernoulli().distribution(torch.zeros(3, 4))
    assert isinstance(d, _BernoulliRows)
    with pytest.raises(ValueError):
        _BernoulliRows(torch.zeros(3, 4), validate_args=True).log_prob(torch.full((3, 4), 0.5))


def test_normal_head_draws_the_same_numbers_eagerly_and_traced():
    loc, scale = torch.randn(100, 5), torch.rand(100, 5) + 0.1
    torch.manual_seed(3)
    a = _Normal(loc, scale).rsample()
    torch.manual_seed(3)
    b = dist.Normal(loc, scale).rsample()
    assert torch.equal(a, b)

    def draw(loc, scale):
        return _Normal(loc, scale).rsample()

    traced = torch.jit.trace(draw, (loc, scale), check_trace=False)
    kinds = {n.kind() for n in traced.graph.nodes()}
    assert "aten::randn" in kinds and "aten::zeros" not in kinds and "aten::ones" not in kinds
    torch.manual_seed(4)
    c = traced(loc, scale)
    torch.manual_seed(4)
    assert torch.equal(c, dist.Normal(loc, scale).rsample())
    assert not torch.equal(traced(loc, scale), c)  # every replay draws afresh
    assert isinstance(_Normal(loc, scale).expand((2, 100, 5)), _Normal)


def test_advancing_the_state_is_dataclasses_replace():
    import dataclasses

    from bayesvae.infer.step import TrainState, _advanced

    assert not hasattr(TrainState, "__post_init__") and not hasattr(TrainState, "__slots__")
    values = {f.name: object() for f in dataclasses.fields(TrainState)}
    values.update(steps=4, skipped=2, consecutive_skips=3)
    state = TrainState(**values)
    a, b = _advanced(state, 5), dataclasses.replace(state, steps=5, consecutive_skips=0)
    assert type(a) is TrainState and a == b and a is not state
    assert (a.steps, a.consecutive_skips, a.skipped) == (5, 0, 2) and state.steps == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.steps = 6
