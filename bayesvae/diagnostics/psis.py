r"""Is the variational posterior trustworthy? Pareto-:math:`\hat k` of the importance weights.

For each data point the guide :math:`q(z \mid x_n)` is used as an importance proposal for the
exact posterior :math:`p(z \mid x_n)`; the tail of the importance ratios

.. math::

    w_n^s = \frac{p(x_n, z_n^s)}{q(z_n^s \mid x_n)}, \qquad z_n^s \sim q(z \mid x_n),

is fitted with a generalized Pareto distribution whose shape :math:`k` says how many moments
of :math:`w` exist (:math:`1/k`). Pareto-smoothed importance sampling (PSIS) [1]_ replaces
the largest ratios by the fitted distribution's quantiles; Yao, Vehtari, Simpson & Gelman [2]_
read :math:`\hat k` as a diagnostic of the variational approximation itself:

* :math:`\hat k < 0.5`: the importance weights have finite variance; the guide is a good
  proposal for this point and importance-weighted estimates (IWAE, PSIS) converge quickly;
* :math:`0.5 \le \hat k \le 0.7`: finite mean, infinite variance: PSIS estimates are still
  usable, convergence is slower;
* :math:`\hat k > 0.7`: the guide is too narrow (or misplaced) for this point: its tails
  miss posterior mass, and importance-weighted estimates of :math:`\log p(x_n)` are
  unreliable with any practical number of draws.

Vehtari et al. [1]_ (sec. 3.2.4) sharpen the last threshold with the number of draws
:math:`S`: :math:`\hat k < \min(1 - 1/\log_{10} S,\ 0.7)` is needed for a PSIS estimate
from :math:`S` draws to be reliable (:func:`sample_size_threshold`).

With global latents :math:`g` the weights are the per-point weights of
:func:`bayesvae.evaluation.importance_log_weights` with one global draw shared by all
samples (``globals_once=True``): the global share :math:`\frac1N \log p(g)/q(g)` is the same
for every sample of a point and does not change :math:`\hat k`, so :math:`\hat k_n`
diagnoses the local guide :math:`q(z_n \mid x_n, g)` as a proposal for
:math:`p(z_n \mid x_n, g)` at a draw :math:`g \sim q(g)`.

References
----------
.. [1] A. Vehtari, D. Simpson, A. Gelman, Y. Yao and J. Gabry, "Pareto Smoothed Importance
   Sampling", JMLR 25(72):1-58, 2024, arXiv:1507.02646.
.. [2] Y. Yao, A. Vehtari, D. Simpson and A. Gelman, "Yes, but Did It Work?: Evaluating
   Variational Inference", ICML 2018, arXiv:1802.02538.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from bayesvae.diagnostics._common import draw_importance_samples, read_inputs, require_arviz
from bayesvae.scoring import check_positive_int

__all__ = [
    "PSISResult",
    "ParetoDiagnostic",
    "pareto_smooth",
    "psis_diagnostic",
    "sample_size_threshold",
    "diagnose_weights",
    "MIN_SAMPLES",
    "EXACT_RTOL",
]

#: Fewest draws per point for which a tail fit is attempted (PSIS fits the largest
#: ``ceil(min(S/5, 3 sqrt(S)))`` weights and needs more than 4 of them).
MIN_SAMPLES = 25
#: Relative tolerance, in units of the dtype's machine epsilon times the magnitude of the
#: summed log-densities, under which a point's log weights count as exactly constant.
EXACT_RTOL = 64.0


def sample_size_threshold(num_samples: int) -> float:
    r"""The largest :math:`\hat k` for which :math:`S` draws give a reliable PSIS estimate.

    :math:`\min(1 - 1/\log_{10} S,\ 0.7)` (Vehtari et al. 2024, sec. 3.2.4); for example 0.5
    for :math:`S = 100` and 0.667 for :math:`S = 1000`.
    """
    check_positive_int("num_samples", num_samples)
    if num_samples <= 10:
        return -math.inf
    return min(1.0 - 1.0 / math.log10(num_samples), 0.7)


@dataclass(frozen=True)
class PSISResult:
    """What :func:`pareto_smooth` returns for log weights of shape (S, N).

    Attributes
    ----------
    khat : ndarray of shape (N,)
        Pareto shape estimate per point; ``-inf`` where ``exact``; ``NaN`` where no tail could
        be fitted (fewer than 5 distinct weights above the tail cutoff).
    exact : ndarray of bool, shape (N,)
        Log weights constant up to the tolerance: the proposal is the target (up to rounding).
    log_weights : ndarray of shape (S, N)
        Smoothed and truncated log weights, *not* normalized (raw where nothing was smoothed).
    log_mean : ndarray of shape (N,)
        :math:`\\log \\frac1S \\sum_s \\tilde w_n^s`, the PSIS estimate of :math:`\\log p(x_n)`.
    ess : ndarray of shape (N,)
        Effective sample size of the smoothed weights,
        :math:`(\\sum_s \\tilde w_n^s)^2 / \\sum_s (\\tilde w_n^s)^2`.
    """

    khat: np.ndarray
    exact: np.ndarray
    log_weights: np.ndarray
    log_mean: np.ndarray
    ess: np.ndarray


def _logsumexp(a: np.ndarray, axis: int = 0) -> np.ndarray:
    top = np.max(a, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.log(np.sum(np.exp(a - top), axis=axis)) + np.squeeze(top, axis=axis)


def pareto_smooth(
    log_weights: np.ndarray | torch.Tensor,
    *,
    atol: float | np.ndarray | None = None,
) -> PSISResult:
    r"""Pareto-smoothed importance sampling of per-point log weights (samples along axis 0).

    A thin wrapper over ArviZ's ``psislw`` [1]_ that also detects exactly constant weights.

    Parameters
    ----------
    log_weights : ndarray or Tensor of shape (S, N)
        :math:`\log w_n^s`, draws along the first axis; independent draws (relative
        efficiency 1).
    atol : float or ndarray of shape (N,), optional
        A point whose log weights span at most ``atol`` (max minus min) is *exact*. Default:
        :data:`EXACT_RTOL` times the machine epsilon of the input's dtype times
        :math:`\max_s |\log w_n^s|`, the rounding error of a sum of that size.

    Returns
    -------
    PSISResult
        :math:`\hat k`, the exact mask, the smoothed log weights and the PSIS estimate.

    Notes
    -----
    When the proposal *is* the target, :math:`\log w_n^s = \log p(x_n)` for every draw (up to
    floating-point rounding). ArviZ 0.23 returns :math:`\hat k = \infty` for such weights (no
    tail to fit), which would read as the worst case; it is the best case. Such points are
    reported as ``exact`` with :math:`\hat k = -\infty` (all moments of the weights exist),
    and their PSIS estimate is the common value. A point whose weights are not constant but
    have fewer than 5 distinct values above the tail cutoff (e.g. a discrete latent with few
    likely configurations) gets :math:`\hat k = \text{NaN}`: the tail cannot be fitted.

    References
    ----------
    .. [1] A. Vehtari, D. Simpson, A. Gelman, Y. Yao and J. Gabry, "Pareto Smoothed
       Importance Sampling", JMLR 25(72):1-58, 2024, arXiv:1507.02646, algorithm 1.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(0.0, 0.5, size=(4000, 3))   # N(0, 0.5^2) proposal for a N(0, 1) target
    >>> res = pareto_smooth(-0.5 * z**2 + 0.5 * z**2 / 0.25)
    >>> bool(np.all(res.khat > 0.5))             # tail index 1 - 0.5^2 = 0.75
    True
    """
    az = require_arviz()
    if isinstance(log_weights, torch.Tensor):
        eps = torch.finfo(log_weights.dtype).eps if log_weights.is_floating_point() else np.finfo(float).eps
        lw = log_weights.detach().double().cpu().numpy()
    else:
        lw = np.asarray(log_weights)
        eps = np.finfo(lw.dtype).eps if np.issubdtype(lw.dtype, np.floating) else np.finfo(float).eps
        lw = lw.astype(np.float64)
    if lw.ndim != 2:
        raise ValueError(
            f"log_weights must have shape (num_samples, num_points); got shape {lw.shape}. Put draws along axis 0."
        )
    num, n = lw.shape
    if num < MIN_SAMPLES:
        raise ValueError(
            f"PSIS needs at least {MIN_SAMPLES} draws per point to fit the tail of the weights; got {num}. Use num_samples >= {MIN_SAMPLES} (1000 is typical)."
        )
    if np.isnan(lw).any():
        cols = np.flatnonzero(np.isnan(lw).any(0))
        raise ValueError(
            f"log_weights contain NaN for {len(cols)} points (first: {cols[:5].tolist()}); the model or guide produced an invalid density"
        )
    if atol is None:
        finite = np.where(np.isfinite(lw), np.abs(lw), 0.0)
        atol = EXACT_RTOL * eps * np.maximum(finite.max(0), 1.0)
    spread = lw.max(0) - lw.min(0)
    exact = np.isfinite(spread) & (spread <= np.broadcast_to(atol, spread.shape))
    with warnings.catch_warnings():
        # psislw warns about k > 0.7 itself; the diagnostic reports it
        warnings.simplefilter("ignore")
        smoothed, khat = az.psislw(lw.T.copy(), normalize=False)
    smoothed = np.asarray(smoothed).T
    khat = np.asarray(khat, dtype=np.float64).reshape(n)
    khat = np.where(np.isinf(khat), np.nan, khat)
    khat = np.where(exact, -np.inf, khat)
    smoothed = np.where(exact[None, :], lw, smoothed)
    lse = _logsumexp(smoothed, 0)
    log_mean = lse - math.log(num)
    ess = np.exp(2 * lse - _logsumexp(2 * smoothed, 0))
    return PSISResult(khat=khat, exact=exact, log_weights=smoothed, log_mean=log_mean, ess=ess)


@dataclass(frozen=True)
class ParetoDiagnostic:
    r"""Per-point PSIS diagnostic of a guide on a data set.

    Attributes
    ----------
    khat : ndarray of shape (N,)
        Pareto :math:`\hat k` of each point's importance weights; ``-inf`` for exactly
        constant weights (an exact posterior), ``NaN`` where no tail could be fitted.
    exact : ndarray of bool, shape (N,)
        Points whose log weights are constant up to rounding.
    log_px_psis : ndarray of shape (N,)
        PSIS estimate :math:`\log \frac1S \sum_s \tilde w_n^s` of :math:`\log p(x_n)`
        (smoothed weights), including the global share when the model has global sites.
    log_px_iwae : ndarray of shape (N,)
        The raw importance-weighted (IWAE) estimate :math:`\log \frac1S \sum_s w_n^s` on
        the same draws.
    ess : ndarray of shape (N,)
        Effective sample size of the smoothed weights, in :math:`[1, S]`.
    num_samples : int
        :math:`S`, draws per point.
    threshold : float
        :math:`\hat k` above which a point is flagged (0.7 by default).
    """

    khat: np.ndarray
    exact: np.ndarray
    log_px_psis: np.ndarray
    log_px_iwae: np.ndarray
    ess: np.ndarray
    num_samples: int
    threshold: float = 0.7

    @property
    def num_data(self) -> int:
        """:math:`N`."""
        return int(self.khat.shape[0])

    def shares(self) -> dict[str, float]:
        r"""Fractions of points by :math:`\hat k`: ``good`` (< 0.5, exact included), ``ok``
        ([0.5, threshold]), ``bad`` (> threshold), ``undetermined`` (NaN), ``exact``."""
        k = self.khat
        n = max(self.num_data, 1)
        with np.errstate(invalid="ignore"):
            return {
                "good": float(np.sum(k < 0.5)) / n,
                "ok": float(np.sum((k >= 0.5) & (k <= self.threshold))) / n,
                "bad": float(np.sum(k > self.threshold)) / n,
                "undetermined": float(np.sum(np.isnan(k))) / n,
                "exact": float(np.sum(self.exact)) / n,
            }

    def summary(self) -> dict[str, float]:
        """Scalars for a report: shares by :math:`\\hat k`, median and max :math:`\\hat k`
        (finite values), mean PSIS and IWAE :math:`\\log p(x)` and their difference."""
        finite = self.khat[np.isfinite(self.khat)]
        s = self.shares()
        return {
            "share_khat_gt_threshold": s["bad"],
            "share_khat_0.5_to_threshold": s["ok"],
            "share_khat_lt_0.5": s["good"],
            "share_exact": s["exact"],
            "share_undetermined": s["undetermined"],
            "khat_median": float(np.median(finite)) if finite.size else (-math.inf if self.exact.all() else math.nan),
            "khat_max": float(np.max(finite)) if finite.size else (-math.inf if self.exact.all() else math.nan),
            "log_px_psis": float(np.mean(self.log_px_psis)),
            "log_px_iwae": float(np.mean(self.log_px_iwae)),
            "psis_minus_iwae": float(np.mean(self.log_px_psis - self.log_px_iwae)),
            "ess_median": float(np.median(self.ess)),
            "num_samples": float(self.num_samples),
            "threshold": float(self.threshold),
        }

    def verdict(self) -> str:
        """The diagnostic in words (one paragraph), e.g. for a report."""
        s = self.shares()
        n, num = self.num_data, self.num_samples
        bad = int(round(s["bad"] * n))
        limit = sample_size_threshold(num)
        if s["exact"] == 1.0:
            return (
                f"The importance weights p(x, z)/q(z|x) are constant for all {n} points (k-hat = -inf): the guide is the exact posterior, and every importance-weighted estimate is exact."
            )
        if s["bad"] > 0:
            text = (
                f"k-hat > {self.threshold:g} for {100 * s['bad']:.0f}% of points ({bad} of {n}): the guide is too narrow for these; their importance-weighted estimates of log p(x) are unreliable. Consider more particles, a flow guide or IWAE training."
            )
        elif s["ok"] > 0:
            text = (
                f"k-hat <= {self.threshold:g} for all {n} points, but {100 * s['ok']:.0f}% lie in [0.5, {self.threshold:g}]: the weights have infinite variance there; PSIS estimates are usable but converge slowly. The guide is adequate, not tight."
            )
        else:
            text = (
                f"k-hat < 0.5 for all {n} points with a fitted tail: the importance weights have finite variance; the guide is a good proposal for the posterior of every point."
            )
        if s["exact"] > 0:
            text += f" {100 * s['exact']:.0f}% of points have exactly constant weights (k-hat = -inf, exact posterior)."
        if s["undetermined"] > 0:
            text += f" For {100 * s['undetermined']:.0f}% of points no tail could be fitted (too few distinct weights)."
        if limit < self.threshold and np.any(self.khat > limit):
            text += f" With S = {num} draws, k-hat above {limit:.2f} = 1 - 1/log10(S) already makes PSIS estimates unreliable; more draws help only for k-hat < 0.7."
        gap = float(np.mean(self.log_px_psis - self.log_px_iwae))
        text += f" Mean log p(x): PSIS {np.mean(self.log_px_psis):.3f}, IWAE {np.mean(self.log_px_iwae):.3f} (difference {gap:+.3f} nats)."
        return text

    def to_frame(self) -> pd.DataFrame:
        """One row per point: ``khat``, ``exact``, ``log_px_psis``, ``log_px_iwae``, ``ess``."""
        return pd.DataFrame(
            {
                "khat": self.khat,
                "exact": self.exact,
                "log_px_psis": self.log_px_psis,
                "log_px_iwae": self.log_px_iwae,
                "ess": self.ess,
            }
        )


def _exact_tolerance(iw: Any) -> np.ndarray:
    """Per-point rounding tolerance of ``ll + lp - lq + share`` from the magnitudes of its terms."""
    eps = torch.finfo(iw.log_weights.dtype).eps
    terms = (iw.log_likelihood, iw.log_prior, iw.log_q, iw.log_weights)
    size = sum(t.abs() for t in terms).amax(0)
    return (EXACT_RTOL * eps * size.clamp_min(1.0)).double().cpu().numpy()


def psis_diagnostic(
    fit: Any,
    x: Any,
    *,
    num_samples: int = 1000,
    seed: int | None = 0,
    groups: Any = None,
    covariates: Mapping[str, Any] | None = None,
    threshold: float = 0.7,
    chunk_size: int | None = None,
) -> ParetoDiagnostic:
    r"""Pareto-:math:`\hat k` of the guide's importance weights for every data point.

    Parameters
    ----------
    fit : FitResult or (model, guide)
        A fitted model and guide (the package's or hand-written Pyro functions).
    x : Tensor, ndarray, DataFrame of shape (N, d), or Rows
        Data (validated against the model's likelihood).
    num_samples : int, default 1000
        :math:`S`, draws from the guide per point (at least :data:`MIN_SAMPLES`).
    seed : int or None, default 0
        Seed for the draws (the caller's RNG state is restored).
    groups : array-like of int, optional
        Group labels, for priors that use them (shorthand for ``covariates={"groups": ...}``).
    covariates : mapping of str to array-like of shape (N, ...), optional
        Per-row side information passed to model and guide as keywords.
    threshold : float, default 0.7
        :math:`\hat k` above which a point is flagged.
    chunk_size : int, optional
        Largest number of (sample, point) pairs evaluated at once.

    Returns
    -------
    ParetoDiagnostic
        Per-point :math:`\hat k`, PSIS and IWAE estimates of :math:`\log p(x_n)`, and a
        :meth:`~ParetoDiagnostic.verdict` in words.

    Notes
    -----
    The log weights are :math:`\log w_n^s = \log p(x_n, z_n^s \mid g) - \log q(z_n^s \mid x_n,
    g) + \frac1N \log \frac{p(g)}{q(g)}`, read from traces of the fit's own model and guide
    (:func:`bayesvae.evaluation.importance_log_weights`, one global draw shared). A model
    with an IBP prior is scored with its discrete indicators. The PSIS estimate is

    .. math::

        \log \hat p_{\mathrm{PSIS}}(x_n) = \log \frac1S \sum_{s=1}^S \tilde w_n^s,

    with :math:`\tilde w` the Pareto-smoothed weights (the largest
    :math:`M = \lceil\min(S/5, 3\sqrt S)\rceil` replaced by the fitted generalized Pareto
    quantiles and truncated at the largest raw weight) [1]_. Points whose weights are
    constant up to rounding (tolerance :data:`EXACT_RTOL` times the dtype's epsilon times
    :math:`\max_s(|\log p(x_n \mid z)| + |\log p(z)| + |\log q(z \mid x_n)|)`) are *exact*,
    with :math:`\hat k = -\infty`: the guide is the exact posterior there (see
    :func:`pareto_smooth`).

    .. warning::

        :math:`\hat k` is a property of the tail of the weights and is itself estimated
        from the :math:`M` largest of :math:`S` draws: its standard error is roughly
        :math:`(1 + k)/\sqrt M` (about 0.15 for :math:`S = 1000`), so a single point near
        a threshold can fall on either side. Read the shares, not single points.

    References
    ----------
    .. [1] A. Vehtari, D. Simpson, A. Gelman, Y. Yao and J. Gabry, "Pareto Smoothed
       Importance Sampling", JMLR 25(72):1-58, 2024, arXiv:1507.02646.
    .. [2] Y. Yao, A. Vehtari, D. Simpson and A. Gelman, "Yes, but Did It Work?: Evaluating
       Variational Inference", ICML 2018, arXiv:1802.02538, sec. 3.

    Examples
    --------
    >>> import torch, bayesvae
    >>> from bayesvae.diagnostics import psis_diagnostic
    >>> model = bayesvae.VAE(prior=bayesvae.GaussianPrior(2), likelihood=bayesvae.Gaussian(scale=1.0),
    ...                      decoder=bayesvae.MLP(2, 5))
    >>> guide = bayesvae.AmortizedGuide(model, hidden=(8,))
    >>> diag = psis_diagnostic((model, guide), torch.randn(10, 5), num_samples=100)
    >>> diag.khat.shape
    (10,)
    """
    check_positive_int("num_samples", num_samples)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ValueError(f"threshold must be a number in (0, 1) (0.7 is the usual choice), got {threshold!r}")
    if num_samples < MIN_SAMPLES:
        raise ValueError(
            f"PSIS needs at least {MIN_SAMPLES} draws per point to fit the tail of the weights; got num_samples={num_samples}. Use num_samples >= {MIN_SAMPLES} (1000 is typical)."
        )
    inputs = read_inputs(fit, x, groups, covariates)
    iw = draw_importance_samples(inputs, num_samples=num_samples, seed=seed, chunk_size=chunk_size)
    return diagnose_weights(iw, threshold=threshold)


def diagnose_weights(iw: Any, *, threshold: float = 0.7) -> ParetoDiagnostic:
    """:class:`ParetoDiagnostic` of :class:`~bayesvae.evaluation.ImportanceSamples` already drawn."""
    atol = _exact_tolerance(iw)
    res = pareto_smooth(iw.log_weights, atol=atol)
    iwae = iw.iwae().double().cpu().numpy()
    return ParetoDiagnostic(
        khat=res.khat,
        exact=res.exact,
        log_px_psis=res.log_mean,
        log_px_iwae=iwae,
        ess=res.ess,
        num_samples=iw.num_samples,
        threshold=float(threshold),
    )
