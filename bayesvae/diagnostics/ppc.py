r"""Posterior predictive checks: does data replicated from the fit look like the data?

For draws :math:`z_n^s \sim q(z \mid x_n)` (and :math:`g^s \sim q(g)`) the model replicates
every point, :math:`x^{rep,s}_n \sim p(x \mid z_n^s, g^s)`, giving :math:`S` replicated data
sets of the same size as the data. A test statistic :math:`T` is computed on the data and on
each replicate; its posterior predictive p-value [1]_ (ch. 6.3) is

.. math::

    p_T = \Pr\big(T(x^{rep}) \ge T(x) \mid x\big)
        \approx \frac1S \sum_{s=1}^S \Big(\mathbb 1[T(x^{rep,s}) > T(x)]
        + \tfrac12\, \mathbb 1[T(x^{rep,s}) = T(x)]\Big)

(ties counted half, so discrete statistics of a well-fitting model sit near 1/2). Values near
0 or 1 mean the fitted model does not reproduce that aspect of the data. The statistics are
each column's mean and variance, and the correlation discrepancy

.. math::

    D(x) = \Big(\frac{1}{d(d-1)} \sum_{i \ne j} (\mathrm{corr}(x)_{ij} - \bar C_{ij})^2\Big)^{1/2},
    \qquad \bar C = \frac1S \sum_s \mathrm{corr}(x^{rep,s}),

with :math:`p_D = \Pr(D(x^{rep}) \ge D(x))` (only small values are extreme). A column that is
constant has correlation 0 with every other column.

References
----------
.. [1] A. Gelman, J. B. Carlin, H. S. Stern, D. B. Dunson, A. Vehtari and D. B. Rubin,
   *Bayesian Data Analysis*, 3rd ed., CRC Press, 2013, ch. 6.3.
.. [2] X.-L. Meng, "Posterior predictive p-values", Annals of Statistics 22(3), 1142-1160,
   1994. doi:10.1214/aos/1176325622
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayesvae.diagnostics._common import draw_importance_samples, read_inputs, replicate
from bayesvae.scoring import check_positive_int

__all__ = ["PPCResult", "ppc_pvalues", "posterior_predictive_check", "MAX_CORRELATION_COLUMNS"]

#: Columns used for the correlation discrepancy at most (a fixed random subset beyond).
MAX_CORRELATION_COLUMNS = 256


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be a number in (0, 0.5), e.g. 0.01; got {alpha!r}")
    return float(alpha)


def _pvalue(replicated: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Mid-p :math:`\\Pr(T_{rep} > T) + \\frac12 \\Pr(T_{rep} = T)` over the first axis."""
    above = np.mean(replicated > observed, axis=0)
    ties = np.mean(replicated == observed, axis=0)
    return above + 0.5 * ties


def _zscore(replicated: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Distance of ``observed`` from the replicates' mean in their standard deviations."""
    sd = replicated.std(axis=0, ddof=1)
    diff = observed - replicated.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, diff / np.where(sd > 0, sd, 1.0), np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
    return z


def _corr(x: np.ndarray) -> np.ndarray:
    """Correlation matrix of the columns of ``x`` (N, d); 0 where a column is constant."""
    centred = x - x.mean(0)
    sd = np.sqrt(np.mean(centred**2, 0))
    safe = np.where(sd > 0, sd, 1.0)
    z = centred / safe
    c = z.T @ z / x.shape[0]
    c[:, sd == 0] = 0.0
    c[sd == 0, :] = 0.0
    np.fill_diagonal(c, 1.0)
    return c


def _rms_offdiag(a: np.ndarray) -> float:
    d = a.shape[0]
    if d < 2:
        return 0.0
    off = a - np.diag(np.diag(a))
    return float(np.sqrt(np.sum(off**2) / (d * (d - 1))))


@dataclass(frozen=True)
class PPCResult:
    r"""Posterior predictive p-values of a fit on a data set.

    Attributes
    ----------
    statistics : pandas.DataFrame
        One row per statistic: ``statistic`` (``"mean"``, ``"variance"`` or
        ``"correlation"``), ``column`` (the column's name; ``"all"`` for the correlation),
        ``observed`` (:math:`T(x)`), ``replicated_mean``, ``replicated_lower`` and
        ``replicated_upper`` (mean and central 95% interval of :math:`T(x^{rep})`),
        ``z`` (:math:`(T(x) - \bar T_{rep}) / \mathrm{sd}(T_{rep})`), ``p_value`` and
        ``extreme``.
    observed : ndarray of shape (N, d)
        The data.
    replicated : ndarray of shape (S, N, d)
        The replicated data sets.
    columns : tuple of str
        Column names.
    alpha : float
        Level of one statistic: a mean or variance is *extreme* when
        :math:`\min(p, 1 - p) \le \alpha/2`, the correlation when :math:`p \le \alpha`.
    replicated_discrepancy : ndarray of shape (S,) or None
        :math:`D(x^{rep,s})`, the correlation discrepancy of each replicate (the reference
        distribution of the ``"correlation"`` statistic); ``None`` for a single column.
    """

    statistics: pd.DataFrame
    observed: np.ndarray
    replicated: np.ndarray
    columns: tuple[str, ...]
    alpha: float
    replicated_discrepancy: np.ndarray | None = None

    @property
    def num_samples(self) -> int:
        """:math:`S`, replicated data sets."""
        return int(self.replicated.shape[0])

    @property
    def num_extreme(self) -> int:
        """Number of extreme statistics."""
        return int(self.statistics["extreme"].sum())

    @property
    def chance_limit(self) -> int:
        r"""Most extreme statistics that chance explains: the 99.9% quantile of
        :math:`\mathrm{Binomial}(m, \alpha)` for :math:`m` statistics.

        Under a correct model each p-value is at worst uniform (posterior predictive
        p-values are conservative [2]_, concentrated near 1/2), so a statistic is extreme with
        probability at most :math:`\alpha`; more than this many extremes happen by chance
        with probability below 0.1% (for independent statistics).
        """
        from scipy.stats import binom

        return int(binom.ppf(0.999, len(self.statistics), self.alpha))

    @property
    def z_limit(self) -> float:
        r"""Bonferroni limit :math:`z_{1 - \alpha / (2m)}` on :math:`|z|` of one statistic.

        A p-value estimated from :math:`S` replicates cannot be resolved below
        :math:`1/S`, so one statistic far outside all replicates would not by itself make
        the count of extremes exceed :attr:`chance_limit`. Its distance in replicate standard
        deviations can: under a normal approximation of :math:`T(x^{rep})` (column means
        and variances are averages over :math:`N` points), a correct model puts any of the
        :math:`m` statistics beyond this limit with probability at most :math:`\alpha`.
        """
        from scipy.stats import norm

        return float(norm.ppf(1 - self.alpha / (2 * max(len(self.statistics), 1))))

    @property
    def fails(self) -> bool:
        """Whether the model misfits: more extreme statistics than chance explains
        (:attr:`chance_limit`), or an extreme one beyond :attr:`z_limit`."""
        far = self.statistics["extreme"] & (self.statistics["z"].abs() > self.z_limit)
        return self.num_extreme > self.chance_limit or bool(far.any())

    def extreme(self) -> pd.DataFrame:
        """The extreme statistics, most extreme first."""
        t = self.statistics[self.statistics["extreme"]].copy()
        t["_dist"] = -t["z"].abs()
        return t.sort_values("_dist").drop(columns="_dist")

    def verdict(self) -> str:
        """The check in words (one paragraph), e.g. for a report."""
        m, k = len(self.statistics), self.num_extreme
        corr = self.statistics[self.statistics["statistic"] == "correlation"]
        corr_text = ""
        if len(corr):
            corr_text = f" Correlation discrepancy p = {float(corr['p_value'].iloc[0]):.3f}."
        if not self.fails:
            tail = f" ({k} extreme, within the {self.chance_limit} that chance explains at this level, none beyond |z| = {self.z_limit:.1f})" if k else ""
            return (
                f"Posterior predictive check passed: of {m} statistics (column means and variances, correlation discrepancy) from {self.num_samples} replicated data sets, none is more extreme than chance explains{tail}.{corr_text}"
            )
        ex = self.extreme()
        kinds = ", ".join(f"{s} ({int((ex['statistic'] == s).sum())})" for s in ("mean", "variance", "correlation") if (ex["statistic"] == s).any())
        names = ", ".join(f"{r.statistic} of {r.column} (p = {r.p_value:.3g}, z = {r.z:+.1f})" for r in ex.head(5).itertuples())
        too_small = ex[(ex["statistic"] == "variance") & (ex["p_value"] <= self.alpha / 2)]
        hint = ""
        if len(too_small) >= max(1, len(ex[ex["statistic"] == "variance"]) // 2):
            hint = " The data vary more than the model's replicates: the likelihood's noise may be too small (a fixed scale) or the latent space too small."
        return (
            f"Posterior predictive check failed: {k} of {m} statistics are extreme (chance explains at most {self.chance_limit}, or none beyond |z| = {self.z_limit:.1f}): {kinds}. Most extreme: {names}.{hint}{corr_text}"
        )

    @classmethod
    def from_inference_data(cls, idata: Any, *, var_name: str = "x", alpha: float = 0.01) -> PPCResult:
        """Posterior predictive p-values from an InferenceData's ``observed_data`` and
        ``posterior_predictive`` groups (all chains pooled)."""
        if not hasattr(idata, "posterior_predictive") or not hasattr(idata, "observed_data"):
            raise ValueError(
                "the InferenceData needs posterior_predictive and observed_data groups; build it with to_inference_data(..., posterior_predictive=True)"
            )
        if var_name not in idata.observed_data:
            raise ValueError(
                f"observed_data has no variable {var_name!r}; it has {sorted(idata.observed_data.data_vars)}. Pass var_name="
            )
        obs = idata.observed_data[var_name]
        rep = idata.posterior_predictive[var_name].stack(__sample__=("chain", "draw")).transpose("__sample__", *obs.dims)
        columns = None
        if obs.ndim == 2:
            columns = [str(c) for c in obs[obs.dims[1]].values]
        return ppc_pvalues(obs.values, rep.values, columns=columns, alpha=alpha)


def ppc_pvalues(
    observed: np.ndarray,
    replicated: np.ndarray,
    *,
    columns: Sequence[str] | None = None,
    alpha: float = 0.01,
    seed: int = 0,
) -> PPCResult:
    r"""Posterior predictive p-values of column means, variances and the correlation discrepancy.

    Parameters
    ----------
    observed : ndarray of shape (N, d)
        The data.
    replicated : ndarray of shape (S, N, d)
        :math:`S` replicated data sets.
    columns : sequence of str, optional
        Column names (default ``x0, x1, ...``).
    alpha : float, default 0.01
        Level of one statistic (see :class:`PPCResult`).
    seed : int, default 0
        Chooses the columns of the correlation discrepancy when there are more than
        :data:`MAX_CORRELATION_COLUMNS`.

    Returns
    -------
    PPCResult
        The statistics table, the data and a :meth:`~PPCResult.verdict`.
    """
    alpha = _check_alpha(alpha)
    obs = np.asarray(observed, dtype=np.float64)
    rep = np.asarray(replicated)
    if obs.ndim == 1:
        obs = obs[:, None]
        rep = rep[..., None]
    if obs.ndim != 2 or rep.ndim != 3 or rep.shape[1:] != obs.shape:
        raise ValueError(
            f"replicated must have shape (S, N, d) matching observed (N, d); got observed {obs.shape} and replicated {rep.shape}"
        )
    num, n, d = rep.shape
    if num < 2:
        raise ValueError(f"need at least 2 replicated data sets for p-values, got {num}")
    names = tuple(str(c) for c in columns) if columns is not None else tuple(f"x{j}" for j in range(d))
    if len(names) != d:
        raise ValueError(f"got {len(names)} column names for {d} columns")
    rows = []
    d_rep = None
    for stat, fn in (("mean", lambda a: a.mean(-2)), ("variance", lambda a: a.var(-2))):
        t_obs = fn(obs)
        t_rep = np.stack([fn(rep[s].astype(np.float64)) for s in range(num)])
        p = _pvalue(t_rep, t_obs)
        z = _zscore(t_rep, t_obs)
        lo, hi = np.quantile(t_rep, [0.025, 0.975], axis=0)
        for j in range(d):
            rows.append(
                {
                    "statistic": stat,
                    "column": names[j],
                    "observed": float(t_obs[j]),
                    "replicated_mean": float(t_rep[:, j].mean()),
                    "replicated_lower": float(lo[j]),
                    "replicated_upper": float(hi[j]),
                    "z": float(z[j]),
                    "p_value": float(p[j]),
                    "extreme": bool(min(p[j], 1 - p[j]) <= alpha / 2),
                }
            )
    if d >= 2:
        cols = np.arange(d)
        if d > MAX_CORRELATION_COLUMNS:
            cols = np.sort(np.random.default_rng(seed).choice(d, MAX_CORRELATION_COLUMNS, replace=False))
        sub = rep[:, :, cols]
        c_bar = np.mean([_corr(sub[s].astype(np.float64)) for s in range(num)], axis=0)
        d_obs = _rms_offdiag(_corr(obs[:, cols]) - c_bar)
        d_rep = np.array([_rms_offdiag(_corr(sub[s].astype(np.float64)) - c_bar) for s in range(num)])
        p = float(_pvalue(d_rep, np.asarray(d_obs)))
        lo, hi = np.quantile(d_rep, [0.025, 0.975])
        rows.append(
            {
                "statistic": "correlation",
                "column": "all",
                "observed": d_obs,
                "replicated_mean": float(d_rep.mean()),
                "replicated_lower": float(lo),
                "replicated_upper": float(hi),
                "z": float(_zscore(d_rep[:, None], np.asarray([d_obs]))[0]),
                "p_value": p,
                "extreme": bool(p <= alpha),
            }
        )
    table = pd.DataFrame(rows)
    return PPCResult(
        statistics=table, observed=obs, replicated=rep, columns=names, alpha=alpha, replicated_discrepancy=d_rep
    )


def posterior_predictive_check(
    fit: Any,
    x: Any,
    *,
    num_samples: int = 100,
    seed: int | None = 0,
    groups: Any = None,
    covariates: Mapping[str, Any] | None = None,
    alpha: float = 0.01,
    chunk_size: int | None = None,
) -> PPCResult:
    r"""Replicate the data from a fit and compute posterior predictive p-values.

    Parameters
    ----------
    fit : FitResult or (model, guide)
        A fitted model and guide.
    x : Tensor, ndarray, DataFrame of shape (N, d), or Rows
        Data; a DataFrame's column names label the statistics.
    num_samples : int, default 100
        :math:`S`, replicated data sets (one draw :math:`z_n^s \sim q(z \mid x_n)` per point
        each). p-values are resolved to about :math:`1/S`, so :math:`S \ge 2/\alpha` is needed
        for a statistic to be flagged anywhere but beyond every replicate.
    seed : int or None, default 0
        Seed for the draws.
    groups : array-like of int, optional
        Group labels, for priors that use them (shorthand for ``covariates={"groups": ...}``).
    covariates : mapping of str to array-like of shape (N, ...), optional
        Per-row side information passed to model and guide as keywords.
    alpha : float, default 0.01
        Level of one statistic (see :class:`PPCResult`).
    chunk_size : int, optional
        Largest number of (sample, point) pairs evaluated at once.

    Returns
    -------
    PPCResult
        Per-column and correlation p-values and a :meth:`~PPCResult.verdict`.

    Notes
    -----
    The replicates are drawn from the *variational* posterior predictive
    :math:`\int p(x \mid z)\, q(z \mid x_n)\, dz` (one global draw per replicate when the model
    has global sites); the model's own trace supplies :math:`p(x \mid z)`. Because the data
    were used to fit the model and to draw :math:`z`, p-values of a correct model concentrate
    near 1/2 rather than being uniform [2]_: an extreme value is strong evidence of misfit, a
    moderate one is weak evidence of fit.

    References
    ----------
    .. [1] A. Gelman, J. B. Carlin, H. S. Stern, D. B. Dunson, A. Vehtari and D. B. Rubin,
       *Bayesian Data Analysis*, 3rd ed., CRC Press, 2013, ch. 6.3.
    .. [2] X.-L. Meng, "Posterior predictive p-values", Annals of Statistics 22(3),
       1142-1160, 1994. doi:10.1214/aos/1176325622

    Examples
    --------
    >>> import torch, bayesvae
    >>> from bayesvae.diagnostics import posterior_predictive_check
    >>> model = bayesvae.VAE(prior=bayesvae.GaussianPrior(2), likelihood=bayesvae.Gaussian(scale=1.0),
    ...                      decoder=bayesvae.MLP(2, 3))
    >>> guide = bayesvae.AmortizedGuide(model, hidden=(8,))
    >>> ppc = posterior_predictive_check((model, guide), torch.randn(50, 3), num_samples=20)
    >>> list(ppc.statistics["statistic"].unique())
    ['mean', 'variance', 'correlation']
    """
    check_positive_int("num_samples", num_samples)
    alpha = _check_alpha(alpha)
    inputs = read_inputs(fit, x, groups, covariates)
    has_globals = bool(getattr(getattr(inputs.model, "prior", None), "global_sites", lambda: ())())
    iw = draw_importance_samples(
        inputs, num_samples=num_samples, seed=seed, globals_once=not has_globals, return_samples=True, chunk_size=chunk_size
    )
    reps, observed = replicate(inputs, iw, seed=None if seed is None else seed + 1, chunk_size=chunk_size)
    name = iw.observed_sites[0]
    rep, obs = reps[name], observed[name]
    return ppc_pvalues(
        obs.reshape(obs.shape[0], -1),
        rep.reshape(rep.shape[0], rep.shape[1], -1),
        columns=inputs.columns if obs.ndim == 2 and obs.shape[1] == len(inputs.columns) else None,
        alpha=alpha,
    )
