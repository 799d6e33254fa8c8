r"""Inference suboptimality: the amortization gap and the approximation gap per data point."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyro
import torch

from bayesvae.evaluation.local_family import LocalGuide, local_guide, reparameterized
from bayesvae.evaluation.marginal_likelihood import iwae_kernel
from bayesvae.infer.params import owned_modules
from bayesvae.infer.step import init_state, step
from bayesvae.objectives import make_elbo
from bayesvae.scoring import (
    TraceScorer,
    check_positive_int,
    evaluation_mode,
    prepare,
    resolve,
    seeded,
)

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
        :math:`\mathcal L[q^*_n]`, the ELBO of the per-datapoint family optimized for point
        :math:`n` (:mod:`bayesvae.evaluation.local_family`: the guide's own family per site,
        initialized at the encoder's output; model and global factors frozen).
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
    """Whether :func:`amortization_gap` applies: the guide has a latent site inside the data plate."""
    return callable(model) and callable(guide)


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
    covariates: Any = None,
    elbo: str | None = None,
) -> InferenceGaps:
    r"""The amortization and approximation gaps of Cremer, Li & Duvenaud [1]_, per data point.

    .. math::

        \log p(x_n) - \mathcal L[q_\phi(z \mid x_n)]
          = \underbrace{\log p(x_n) - \mathcal L[q^*_n]}_{\text{approximation gap}}
          + \underbrace{\mathcal L[q^*_n] - \mathcal L[q_\phi(z \mid x_n)]}_{\text{amortization gap}},

    where :math:`q^*_n = \arg\max_{q \in \mathcal Q} \mathcal L[q]` is the best member of a
    per-datapoint family :math:`\mathcal Q` for point :math:`n`. :math:`\mathcal Q` is built
    from the fitted guide's own local sites (:func:`~bayesvae.evaluation.local_family.local_guide`):
    the same family per site where that is natural (diagonal or full-covariance Normal),
    else a diagonal Normal on the unconstrained space pushed through ``biject_to(support)``.
    When the encoder outputs members of :math:`\mathcal Q` it can at best match
    :math:`q^*_n`: the gap is :math:`\ge 0` up to optimization and Monte Carlo noise. (For a
    site whose amortized family is richer than :math:`\mathcal Q` -- a flow -- it can be
    negative.) This works for a user's own Pyro model and guide as for the package's.

    :math:`q^*_n` starts at the encoder's output and is optimized with the training step of
    :func:`~bayesvae.fit` (:func:`bayesvae.infer.step`: Adam, ``num_particles`` draws, analytic
    KL where registered) while the model's parameters and the guide's (global factors
    included) are frozen. Points are optimized jointly in blocks of ``batch_size``: the loss
    is a sum of per-point terms and Adam's update is elementwise, so this is exactly
    per-point optimization. Stopping rule: every ``window`` steps the mean loss per point is
    compared with the previous window's; an improvement below ``tol`` halves the learning
    rate, and the sixth such stall ends the block (or ``max_steps``). :math:`\log \hat p(x_n)`
    is the IWAE estimate with ``num_samples`` draws from :math:`q^*_n`.

    Parameters
    ----------
    fit : FitResult or (model, guide)
        A fitted model and guide; any Pyro functions with latent sites in the data plate.
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
    groups, covariates : optional
        Per-row side information for model and guide.
    elbo : {"meanfield", "trace"} or None
        The optimization objective; ``None``: ``"meanfield"`` (analytic KL where registered),
        or ``"trace"`` (score-function gradients) when a local site is discrete.

    Returns
    -------
    InferenceGaps

    Raises
    ------
    ValueError
        Bad settings, or a guide with no latent site in the data plate.

    References
    ----------
    .. [1] C. Cremer, X. Li and D. Duvenaud, "Inference Suboptimality in Variational
       Autoencoders", ICML 2018, arXiv:1801.03558, eq. (4)-(6).
    """
    model, guide = resolve(fit)
    for name, value in (("num_samples", num_samples), ("num_particles", num_particles), ("max_steps", max_steps), ("window", window), ("batch_size", batch_size)):
        check_positive_int(name, value)
    if not (isinstance(lr, (int, float)) and 0 < lr < math.inf):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol must be a non-negative number, got {tol!r}")
    plate = getattr(getattr(fit, "config", None), "data_plate", None) or "data"
    rows = prepare(model, guide, x, groups=groups, covariates=covariates)
    parts: dict[str, list[torch.Tensor]] = {"amortized": [], "local": [], "logp": []}
    steps, converged = 0, True
    frozen = [p for m in owned_modules(model, guide) for p in m.parameters()]
    flags = [p.requires_grad for p in frozen]
    try:
        for p in frozen:
            p.requires_grad_(False)
        with evaluation_mode(model, guide), seeded(seed, rows.x.device):
            for start in range(0, rows.num_data, batch_size):
                block = rows.subset(torch.arange(start, min(start + batch_size, rows.num_data), device=rows.x.device))
                batch = block.batch(torch.arange(block.num_data, device=rows.x.device))
                local = local_guide(guide, batch, plate=plate)
                objective = elbo or ("meanfield" if reparameterized(local) else "trace")
                s, ok = _optimize(model, local, batch, objective, num_particles, lr, max_steps, tol, window, plate)
                steps, converged = max(steps, s), converged and ok
                with torch.no_grad():
                    amort, opt, logp = _evaluate(model, guide, local, block, num_samples, seed, rows.num_data)
                parts["amortized"].append(amort)
                parts["local"].append(opt)
                parts["logp"].append(logp)
    finally:
        for p, f in zip(frozen, flags):
            p.requires_grad_(f)
    return InferenceGaps(
        amortized_elbo=torch.cat(parts["amortized"]),
        local_elbo=torch.cat(parts["local"]),
        log_marginal=torch.cat(parts["logp"]),
        steps=steps,
        converged=converged,
        num_samples=num_samples,
    )


def _optimize(model, local: LocalGuide, batch, elbo, num_particles, lr, max_steps, tol, window, plate) -> tuple[int, bool]:
    """The training step of fit on the block's local parameters until the stopping rule."""
    vectorize = isinstance(model, torch.nn.Module) and type(model).__module__.startswith("bayesvae")
    objective = make_elbo(elbo, num_particles=num_particles, model=model if vectorize else None, data_plate=plate)
    state = init_state(model, local, objective, batch, lr=lr)
    nb = batch.size
    current, halvings, previous = float(lr), 0, math.inf
    total = batch.x.new_zeros(())
    with pyro.validation_enabled(False):
        for i in range(1, max_steps + 1):
            state, loss = step(state, batch)
            total += loss / nb
            if i % window == 0:
                mean = float(total) / window
                total = batch.x.new_zeros(())
                if previous - mean < tol:
                    halvings += 1
                    if halvings == _HALVINGS:
                        return i, True
                    current /= 2
                    for group in state.optimizer.param_groups:
                        group["lr"] = current
                previous = mean
    return max_steps, False


def _evaluate(model, guide, local, block, num_samples, seed, num_data):
    """Per-point amortized ELBO, local ELBO and local IWAE under common random numbers.

    Both ELBOs are the Monte Carlo mean of the log weights and the IWAE uses the same draws
    as the local ELBO, so ``log_marginal >= local_elbo`` per point (Jensen).
    """
    out = []
    for q in (guide, local):
        with seeded(seed, block.x.device):
            scorer = TraceScorer(model, q, block.x, covariates=dict(block.covariates))
            draw = scorer.draw_globals()
            log_mean, mean_log, _ = iwae_kernel(scorer, num_samples, draw)
        share = float(draw.log_weight) / num_data
        out.append((log_mean + share, mean_log + share))
    return out[0][1], out[1][1], out[1][0]
