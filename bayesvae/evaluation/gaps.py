r"""Inference suboptimality: the amortization gap and the approximation gap per data point."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyro
import torch

from bayesvae.convention import Call as _Call
from bayesvae.evaluation._gaps_inputs import TraceScorer, check_positive_int, prepare, resolve
from bayesvae.evaluation.marginal_likelihood import iwae_kernel
from bayesvae.guides import GlobalGuide, MeanFieldGuide
from bayesvae.models import VAE
from bayesvae.objectives import make_elbo
from bayesvae.scoring import evaluation_mode, seeded

__all__ = ["InferenceGaps", "amortization_gap", "supports_amortization_gap"]

#: Learning-rate halvings after which a block counts as converged (final rate lr / 2**5).
_HALVINGS = 6


@dataclass(frozen=True)
class InferenceGaps:
    r"""Per-point ELBOs of the amortized and the optimized local guide, and :math:`\log \hat p(x)`.

    Attributes
    ----------
    amortized_elbo : Tensor of shape (N,)
        :math:`\mathcal L[q_\phi(z \mid x_n)]`, the ELBO of the encoder's output (Monte Carlo
        mean of the log importance weights over ``num_samples`` draws).
    local_elbo : Tensor of shape (N,)
        :math:`\mathcal L[q^*_n]`, the ELBO of a per-datapoint mean-field Gaussian optimized
        for point :math:`n` (initialized at the encoder's output, model frozen).
    log_marginal : Tensor of shape (N,)
        :math:`\log \hat p(x_n)`, the IWAE estimate with ``num_samples`` draws from the
        optimized local guide -- the same draws as ``local_elbo``, so the approximation gap
        is non-negative for every point.
    steps : int
        Optimization steps taken (the largest over blocks of points).
    converged : bool
        Whether every block met the stopping rule before ``max_steps``.
    num_samples : int
        Draws per point for each ELBO and for :math:`\log \hat p(x)`.

    Notes
    -----
    All three are estimated with common random numbers (the same seed and draw shapes), so
    the gaps, their differences, have far less Monte Carlo noise than the terms. The global
    share :math:`\frac1N \log p(g)/q(g)` of the same global draw is in all three and cancels
    in the gaps.
    """

    amortized_elbo: torch.Tensor
    local_elbo: torch.Tensor
    log_marginal: torch.Tensor
    steps: int
    converged: bool
    num_samples: int

    @property
    def amortization_gap(self) -> torch.Tensor:
        """``local_elbo - amortized_elbo``, shape (N,): what amortization costs."""
        return self.local_elbo - self.amortized_elbo

    @property
    def approximation_gap(self) -> torch.Tensor:
        """``log_marginal - local_elbo``, shape (N,): what the mean-field family costs."""
        return self.log_marginal - self.local_elbo

    @property
    def inference_gap(self) -> torch.Tensor:
        """``log_marginal - amortized_elbo``, shape (N,): the sum of the two gaps."""
        return self.log_marginal - self.amortized_elbo

    def summary(self) -> dict[str, float]:
        """Means over points of every per-point field and gap, with ``*_se`` standard errors."""
        out: dict[str, float] = {}
        n = self.local_elbo.shape[0]
        for name in (
            "amortized_elbo",
            "local_elbo",
            "log_marginal",
            "amortization_gap",
            "approximation_gap",
            "inference_gap",
        ):
            v = getattr(self, name).double()
            out[name] = float(v.mean())
            out[name + "_se"] = float(v.std()) / math.sqrt(n) if n > 1 else math.nan
        return out

    def to_frame(self) -> pd.DataFrame:
        """One row per point with the three estimates and the three gaps."""
        cols = ("amortized_elbo", "local_elbo", "log_marginal", "amortization_gap", "approximation_gap")
        return pd.DataFrame({c: getattr(self, c).double().cpu().numpy() for c in cols})


def supports_amortization_gap(model: Any, guide: Any) -> bool:
    """Whether :func:`amortization_gap` applies: a VAE with normal local sites and an amortized guide."""
    if not isinstance(model, VAE) or not callable(getattr(guide, "posterior", None)):
        return False
    if model.prior.global_sites() and not isinstance(getattr(guide, "globals", None), GlobalGuide):
        return False
    return all(s.family == "normal" and not s.conditions_on for s in model.prior.local_sites())


def amortization_gap(
    fit: Any,
    x: Any,
    *,
    num_samples: int = 100,
    num_particles: int = 10,
    lr: float = 0.01,
    max_steps: int = 2000,
    tol: float = 1e-3,
    window: int = 50,
    batch_size: int = 1000,
    seed: int | None = 0,
    groups: Any = None,
) -> InferenceGaps:
    r"""The amortization and approximation gaps of Cremer, Li & Duvenaud [1]_, per data point.

    .. math::

        \log p(x_n) - \mathcal L[q_\phi(z \mid x_n)]
          = \underbrace{\log p(x_n) - \mathcal L[q^*_n]}_{\text{approximation gap}}
          + \underbrace{\mathcal L[q^*_n] - \mathcal L[q_\phi(z \mid x_n)]}_{\text{amortization gap}},

    where :math:`q^*_n = \arg\max_{q \in \mathcal Q} \mathcal L[q]` is the best member of
    the per-datapoint mean-field Gaussian family :math:`\mathcal Q` for point :math:`n`.
    An amortized mean-field encoder outputs a member of :math:`\mathcal Q` for each point,
    so it can at best match :math:`q^*_n`: the amortization gap is :math:`\ge 0` up to
    optimization and Monte Carlo noise, and 0 when the encoder already outputs the optimum.

    :math:`q^*_n` is found by a :class:`~bayesvae.MeanFieldGuide` initialized at the encoder's
    output (``initialize_from(guide.posterior(x), rows)``) and optimized with Adam on the
    ELBO (analytic KL where registered, ``num_particles`` draws) while the model's parameters
    are frozen. Points are optimized jointly in blocks of ``batch_size``: the loss is a sum of
    per-point terms and Adam's update is elementwise, so this is exactly per-point
    optimization. Stopping rule: every ``window`` steps the mean loss per point is compared
    with the previous window's; an improvement below ``tol`` halves the learning rate, and
    the sixth such stall ends the block (or ``max_steps``). Adam's steps are normalized, so
    near the optimum they jitter by about the learning rate; the halvings shrink that jitter. The global sites' guide, if any, is
    copied from the fit and frozen. :math:`\log \hat p(x_n)` is the IWAE estimate with
    ``num_samples`` draws from :math:`q^*_n`.

    Parameters
    ----------
    fit : FitResult or (model, guide)
        A :class:`~bayesvae.VAE` with an amortized guide that has ``posterior(x)`` (e.g.
        :class:`~bayesvae.AmortizedGuide`) and only unconditioned ``"normal"`` local sites.
    x : Tensor, ndarray or DataFrame of shape (N, d)
        Data.
    num_samples : int, default 100
        Draws per point for each ELBO estimate and for :math:`\log \hat p(x)`.
    num_particles : int, default 10
        Draws per point per optimization step.
    lr : float, default 0.01
        Initial Adam learning rate.
    max_steps : int, default 2000
        Most optimization steps per block.
    tol : float, default 1e-3
        Improvement per point (nats) per window below which the learning rate is halved.
    window : int, default 50
        Steps per convergence check.
    batch_size : int, default 1000
        Points optimized together.
    seed : int or None, default 0
        Seed for optimization and evaluation draws (the global RNG state is restored).
    groups : array-like of int, optional
        Group labels, for priors that use them.

    Returns
    -------
    InferenceGaps

    Raises
    ------
    TypeError
        If the model is not a :class:`~bayesvae.VAE` or the guide has no ``posterior``.

    References
    ----------
    .. [1] C. Cremer, X. Li and D. Duvenaud, "Inference Suboptimality in Variational
       Autoencoders", ICML 2018, arXiv:1801.03558, eq. (4)-(6).
    """
    model, guide = resolve(fit)
    if not isinstance(model, VAE) or not callable(getattr(guide, "posterior", None)):
        raise TypeError(
            f"amortization_gap needs a bayesvae VAE and an amortized guide with posterior(x) (e.g. AmortizedGuide); got {type(model).__name__} and {type(guide).__name__}"
        )
    if model.prior.global_sites() and not isinstance(getattr(guide, "globals", None), GlobalGuide):
        raise TypeError(
            f"the model has global sites but the guide {type(guide).__name__} has no GlobalGuide attribute 'globals' to copy; use AmortizedGuide"
        )
    for name, value in (
        ("num_samples", num_samples),
        ("num_particles", num_particles),
        ("max_steps", max_steps),
        ("window", window),
        ("batch_size", batch_size),
    ):
        check_positive_int(name, value)
    if not (isinstance(lr, (int, float)) and 0 < lr < math.inf):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol must be a non-negative number, got {tol!r}")
    xt, g = prepare(model, guide, x, groups)
    n = xt.shape[0]
    parts: dict[str, list[torch.Tensor]] = {"amortized": [], "local": [], "logp": []}
    steps, converged = 0, True
    flags = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        with evaluation_mode(model, guide), seeded(seed, xt.device):
            for start in range(0, n, batch_size):
                rows = torch.arange(start, min(start + batch_size, n), device=xt.device)
                xb = xt[rows]
                gb = None if g is None else g[rows]
                local = _local_guide(model, guide, xb)
                s, ok = _optimize(model, local, xb, gb, num_particles, lr, max_steps, tol, window)
                steps, converged = max(steps, s), converged and ok
                with torch.no_grad():
                    amort, opt, logp = _evaluate(model, guide, local, xb, gb, num_samples, seed, n)
                parts["amortized"].append(amort)
                parts["local"].append(opt)
                parts["logp"].append(logp)
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    return InferenceGaps(
        amortized_elbo=torch.cat(parts["amortized"]),
        local_elbo=torch.cat(parts["local"]),
        log_marginal=torch.cat(parts["logp"]),
        steps=steps,
        converged=converged,
        num_samples=num_samples,
    )


def _local_guide(model: VAE, guide: Any, xb: torch.Tensor) -> MeanFieldGuide:
    """A per-datapoint guide for the block, at the encoder's output, globals copied and frozen."""
    local = MeanFieldGuide(model, xb.shape[0]).to(device=xb.device, dtype=xb.dtype)
    with torch.no_grad():
        local.initialize_from(guide.posterior(xb), torch.arange(xb.shape[0], device=xb.device))
        if model.prior.global_sites():
            local.globals.load_state_dict(guide.globals.state_dict())
    for p in local.globals.parameters():
        p.requires_grad_(False)
    return local


def _optimize(model, local, xb, gb, num_particles, lr, max_steps, tol, window) -> tuple[int, bool]:
    """Adam on the block's local parameters until the stopping rule; returns (steps, converged)."""
    objective = make_elbo("meanfield", num_particles=num_particles, model=model)
    model_fn, guide_fn = _Call(model), _Call(local)
    nb = xb.shape[0]
    kw: dict[str, Any] = {"index": torch.arange(nb, device=xb.device), "num_data": nb}
    if gb is not None:
        kw["groups"] = gb
    params = [p for p in local.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    current, halvings, previous = float(lr), 0, math.inf
    total = xb.new_zeros(())
    with pyro.validation_enabled(False):
        for step in range(1, max_steps + 1):
            loss = objective.differentiable_loss(model_fn, guide_fn, xb, **kw) / nb
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            if step % window == 0:
                mean = float(total) / window
                total = xb.new_zeros(())
                if previous - mean < tol:
                    halvings += 1
                    if halvings == _HALVINGS:
                        return step, True
                    current /= 2
                    for group in optimizer.param_groups:
                        group["lr"] = current
                previous = mean
    return max_steps, False


def _evaluate(model, guide, local, xb, gb, num_samples, seed, num_data):
    """Per-point amortized ELBO, local ELBO and local IWAE under common random numbers.

    Both ELBOs are the Monte Carlo mean of the log weights and the IWAE uses the same draws
    as the local ELBO, so ``log_marginal >= local_elbo`` per point (Jensen).
    """
    out = []
    for q in (guide, local):
        with seeded(seed, xb.device):
            scorer = TraceScorer(model, q, xb, groups=gb)
            draw = scorer.draw_globals()
            log_mean, mean_log, _ = iwae_kernel(scorer, num_samples, draw)
        share = float(draw.log_weight) / num_data
        out.append((log_mean + share, mean_log + share))
    return out[0][1], out[1][1], out[1][0]
