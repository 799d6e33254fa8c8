r"""Multiple imputation of missing cells by importance sampling over the latent code (MIWAE).

A fitted tabular VAE defines :math:`p(x_{\text{mis}} \mid x_{\text{obs}}) = \int p(x_{\text{mis}}
\mid z)\, p(z \mid x_{\text{obs}})\, dz` because the cells are independent given :math:`z`.
With :math:`K` draws :math:`z_k \sim q(z \mid x_{\text{obs}})` and self-normalized weights
:math:`\tilde w_k \propto p(x_{\text{obs}} \mid z_k) p(z_k) / q(z_k \mid x_{\text{obs}})`
(:mod:`bayesvae.tabular._particles`), the mixture

.. math::

    \hat p(x_{\text{mis}} \mid x_{\text{obs}}) = \sum_{k=1}^K \tilde w_k\, p(x_{\text{mis}} \mid z_k)

is consistent as :math:`K \to \infty` (Mattei & Frellsen [1]_, eq. 13). A draw from it (pick
:math:`k` with probability :math:`\tilde w_k`, then draw the missing cells from
:math:`p(\cdot \mid z_k)`) is one imputation; :math:`M` of them are a multiple imputation whose
analyses are combined by Rubin's rules (:func:`pool`) [2]_.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from bayesvae._checks import positive_int
from bayesvae.models.columns import LABELLED, Schema
from bayesvae.tabular._common import encode, label_probs, original_means, to_original, unpack
from bayesvae.tabular._particles import Particles, draw_particles

__all__ = ["impute", "Imputations", "pool", "PooledEstimate"]


@dataclass(frozen=True)
class PooledEstimate:
    r"""A scalar estimate combined over :math:`M` completed data sets by Rubin's rules.

    Attributes
    ----------
    estimate : float
        :math:`\bar Q = \frac1M \sum_m \hat Q_m`.
    within : float
        Mean within-imputation variance :math:`\bar U = \frac1M \sum_m U_m`.
    between : float
        Between-imputation variance :math:`B = \frac1{M-1} \sum_m (\hat Q_m - \bar Q)^2`.
    total : float
        :math:`T = \bar U + (1 + 1/M) B`.
    se : float
        :math:`\sqrt T`.
    df : float
        Rubin's degrees of freedom :math:`\nu = (M-1)\,(1 + \bar U / ((1 + 1/M) B))^2` for a
        :math:`t_\nu` reference distribution (infinite when :math:`B = 0`).
    fraction_missing_information : float
        :math:`(1 + 1/M) B / T`, the share of the variance due to the missing cells.
    num_imputations : int
        :math:`M`.
    """

    estimate: float
    within: float
    between: float
    total: float
    se: float
    df: float
    fraction_missing_information: float
    num_imputations: int


def pool(estimates: Sequence[float], variances: Sequence[float]) -> PooledEstimate:
    r"""Combine per-imputation estimates and their variances by Rubin's rules.

    Parameters
    ----------
    estimates : sequence of float, length M >= 2
        The statistic :math:`\hat Q_m` computed on each completed data set.
    variances : sequence of float, length M
        Its squared standard error :math:`U_m` on each completed data set.

    Returns
    -------
    PooledEstimate

    Notes
    -----
    .. math::

        \bar Q = \frac1M \sum_m \hat Q_m, \quad \bar U = \frac1M \sum_m U_m, \quad
        B = \frac{1}{M-1} \sum_m (\hat Q_m - \bar Q)^2, \quad
        T = \bar U + \Big(1 + \frac1M\Big) B,

    and :math:`(Q - \bar Q) / \sqrt T \sim t_\nu` with
    :math:`\nu = (M-1)(1 + \bar U / ((1 + M^{-1}) B))^2` [1]_ (eq. 3.1.2-3.1.6, 3.3.1).

    References
    ----------
    .. [1] D. B. Rubin, "Multiple Imputation for Nonresponse in Surveys", Wiley, 1987,
       doi:10.1002/9780470316696.

    Examples
    --------
    >>> round(pool([1.0, 2.0, 3.0], [0.5, 0.5, 0.5]).total, 4)
    1.8333
    """
    q = np.asarray(estimates, dtype=np.float64)
    u = np.asarray(variances, dtype=np.float64)
    if q.ndim != 1 or u.shape != q.shape:
        raise ValueError(f"estimates and variances must be two vectors of one value per imputation, got shapes {q.shape} and {u.shape}")
    m = q.shape[0]
    if m < 2:
        raise ValueError(f"Rubin's rules need at least 2 imputations, got {m}")
    if not (np.isfinite(q).all() and np.isfinite(u).all()) or (u < 0).any():
        raise ValueError(f"estimates must be finite and variances finite and non-negative; got estimates {q.tolist()} and variances {u.tolist()}")
    qbar, ubar, b = float(q.mean()), float(u.mean()), float(q.var(ddof=1))
    total = ubar + (1 + 1 / m) * b
    df = math.inf if b == 0 else (m - 1) * (1 + ubar / ((1 + 1 / m) * b)) ** 2
    fmi = 0.0 if total == 0 else (1 + 1 / m) * b / total
    return PooledEstimate(qbar, ubar, b, total, math.sqrt(total), df, fmi, m)


class Imputations:
    """Multiple imputations of a DataFrame's missing cells (returned by :func:`impute`).

    Attributes
    ----------
    frames : tuple of DataFrame
        ``M`` completed copies of the input frame (same index, columns and dtypes; a column
        that was entirely missing takes the training frame's dtype): observed cells as given,
        each missing cell one draw from :math:`\\hat p(x_{\\text{mis}} \\mid x_{\\text{obs}})`.
    observed : DataFrame of bool
        ``True`` where the input cell was observed.
    effective_sample_size : Series
        Kish's effective number of the K importance samples per row (small values: the
        encoder proposes poorly for that row; raise ``num_particles``).
    """

    def __init__(self, frames, observed, point, draws, ess) -> None:
        self.frames = tuple(frames)
        self.observed = observed
        self._point = point
        self._draws = draws
        self.effective_sample_size = ess

    def __len__(self) -> int:
        return len(self.frames)

    def point(self) -> pd.DataFrame:
        """One completed frame: the posterior mean of each missing continuous cell, the
        posterior mode of each categorical or binary cell, and the posterior mean rounded to
        the nearest integer for counts."""
        return self._point.copy()

    def intervals(self, level: float = 0.9) -> pd.DataFrame:
        """Central posterior predictive intervals for the missing numeric cells.

        Quantiles :math:`(1 \\mp \\text{level})/2` of the mixture
        :math:`\\hat p(x_{nj} \\mid x_{n,\\text{obs}})`, estimated from its draws
        (``num_draws`` of :func:`impute`), on the original scale.

        Returns
        -------
        DataFrame
            One row per missing numeric cell: ``row`` (the input's index label), ``column``,
            ``point`` (as :meth:`point`), ``lower``, ``upper``. Labelled columns have no
            interval and are not listed.
        """
        if not (isinstance(level, float) and 0 < level < 1):
            raise ValueError(f"level must be a float in (0, 1), got {level!r}")
        rows = []
        for name, (positions, draws) in self._draws.items():
            lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
            point = self._point[name].to_numpy()[positions]
            for i, p in enumerate(positions):
                rows.append({"row": self._point.index[p], "column": name, "point": float(point[i]), "lower": float(lo[i]), "upper": float(hi[i])})
        return pd.DataFrame(rows, columns=["row", "column", "point", "lower", "upper"])

    def pool(self, statistic: Callable[[pd.DataFrame], tuple[float, float]]) -> PooledEstimate:
        """Rubin's rules for ``statistic(frame) -> (estimate, variance)`` on each completed frame."""
        values = [statistic(frame) for frame in self.frames]
        return pool([float(v[0]) for v in values], [float(v[1]) for v in values])


def impute(
    fit_or_pair: Any,
    frame: pd.DataFrame,
    *,
    num_imputations: int = 5,
    num_particles: int = 200,
    num_draws: int = 1000,
    seed: int = 0,
) -> Imputations:
    r"""Impute the missing cells of a DataFrame with a fitted tabular VAE (MIWAE).

    Parameters
    ----------
    fit_or_pair : FitResult or (model, guide)
        A fit of a :class:`~bayesvae.VAE` whose likelihood is ``Columns.infer(frame)``.
    frame : DataFrame
        Rows with the schema's columns; missing cells are NaN, ``pd.NA`` or ``None``.
    num_imputations : int
        ``M`` completed frames.
    num_particles : int
        ``K`` importance samples of :math:`z` per row.
    num_draws : int
        Draws from each row's mixture used for :meth:`Imputations.intervals`.
    seed : int
        Seeds every draw (the global RNG state is left as it was).

    Returns
    -------
    Imputations

    Raises
    ------
    ValueError
        An unseen level, a value outside a column's support (both naming the column).
    TypeError
        A model without a tabular schema.

    Notes
    -----
    Row :math:`n`'s weights :math:`\tilde w_{nk}` and decoder outputs are computed once; the
    :math:`M` imputations and ``num_draws`` interval draws reuse them. The point imputation
    of a continuous cell is the mixture mean :math:`\sum_k \tilde w_{nk} E[x_{nj} \mid z_{nk}]`
    (the MIWAE single imputation, [1]_ eq. 13); of a labelled cell the level with the largest
    :math:`\sum_k \tilde w_{nk} p(x_{nj} = \ell \mid z_{nk})`.

    .. warning::

        The imputations are draws from the *model's* conditional distribution. They are
        proper for multiple imputation when cells are missing at random and the model fits;
        effective sample sizes near 1 mean the guide proposes poorly for those rows.

    References
    ----------
    .. [1] P.-A. Mattei and J. Frellsen, "MIWAE: Deep generative modelling and imputation of
       incomplete data sets", ICML 2019, arXiv:1812.02633.
    .. [2] D. B. Rubin, "Multiple Imputation for Nonresponse in Surveys", Wiley, 1987,
       doi:10.1002/9780470316696.
    """
    for label, value in (("num_imputations", num_imputations), ("num_particles", num_particles), ("num_draws", num_draws)):
        positive_int(label, value)
    model, guide, schema = unpack(fit_or_pair)
    x, mask = encode(model, schema, frame, "frame")
    particles = draw_particles(model, guide, x, mask, num_particles=num_particles, seed=seed)
    generator = torch.Generator(device="cpu").manual_seed(seed + 1)
    observed = pd.DataFrame(mask.cpu().numpy(), index=frame.index, columns=list(schema.names))
    frames = [
        _complete(frame, schema, x, mask, _mixture_draw(model.likelihood, particles, generator, 1)[0]) for _ in range(num_imputations)
    ]
    point = _complete(frame, schema, x, mask, _point_values(model.likelihood, schema, particles))
    draws = _interval_draws(model.likelihood, schema, particles, mask, generator, num_draws)
    ess = pd.Series(particles.effective_sample_size().cpu().numpy(), index=frame.index, name="effective_sample_size")
    return Imputations(frames, observed, point, draws, ess)


def _mixture_draw(likelihood, particles: Particles, generator: torch.Generator, num: int) -> torch.Tensor:
    """``num`` draws of every cell from each row's mixture, encoded, shape (num, N, d)."""
    w = particles.weights.T.cpu().double()  # (N, K)
    n = w.shape[0]
    k = torch.multinomial(w, num, replacement=True, generator=generator).T  # (num, N)
    out = particles.out[k.to(particles.out.device), torch.arange(n, device=particles.out.device)]
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    with torch.random.fork_rng(devices=[out.device] if out.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return likelihood.distribution(out).sample()


def _point_values(likelihood, schema: Schema, particles: Particles) -> torch.Tensor:
    """Encoded point imputations (N, d): mixture means of numeric cells, modes of labels."""
    w = particles.weights  # (K, N)
    means = original_means(likelihood, schema, particles.out)
    probs = label_probs(likelihood, particles.out)
    cols = []
    for j, spec in enumerate(schema.columns):
        if spec.kind in LABELLED:
            cols.append((w.unsqueeze(-1) * probs[j]).sum(0).argmax(-1).to(w.dtype))
            continue
        v = (w * means[j]).sum(0)  # on the original scale
        if spec.kind == "lognormal":
            v = (torch.log(v) - spec.loc) / spec.scale
        elif spec.kind in ("gaussian", "student-t"):
            v = (v - spec.loc) / spec.scale
        else:
            v = torch.round(v)
        cols.append(v)
    return torch.stack(cols, dim=-1)


def _interval_draws(likelihood, schema, particles, mask, generator, num_draws) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Original-scale mixture draws of each numeric column's missing cells: (positions, (S, n_j))."""
    missing = ~mask.cpu().numpy()
    wanted = [j for j, s in enumerate(schema.columns) if s.kind not in LABELLED and missing[:, j].any()]
    if not wanted:
        return {}
    draws = _mixture_draw(likelihood, particles, generator, num_draws).cpu().double().numpy()
    out = {}
    for j in wanted:
        rows = np.flatnonzero(missing[:, j])
        out[schema.columns[j].name] = (rows, to_original(schema.columns[j], draws[:, rows, j]))
    return out


def _complete(frame: pd.DataFrame, schema: Schema, x: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> pd.DataFrame:
    """The input frame with its missing cells replaced by ``fill`` (encoded), dtypes kept."""
    values = torch.where(mask, x, fill.to(x.dtype)).cpu().double().numpy()
    decoded = schema.decode(values, index=frame.index)
    out = frame.copy()
    out.columns = [str(c) for c in out.columns]
    missing = ~mask.cpu().numpy()
    for j, name in enumerate(schema.names):
        rows = np.flatnonzero(missing[:, j])
        if rows.size == len(out):  # no observed cell: the input column's dtype says nothing
            out[name] = decoded[name]
        elif rows.size:
            col = out.columns.get_loc(name)
            out.iloc[rows, col] = decoded[name].iloc[rows].to_numpy()
    return out
