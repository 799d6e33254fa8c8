r"""Model comparison on held-out data: one row per fit, ranked by :math:`\log \hat p(x)`.

The ranking uses per-point differences, as ArviZ's ``compare`` does for the ELPD [2]_: for the
best model :math:`b` and model :math:`m`,

.. math::

    \Delta_m = \frac1N \sum_n \big(\log \hat p_b(x_n) - \log \hat p_m(x_n)\big),
    \qquad \mathrm{SE}(\Delta_m) = \frac{\mathrm{sd}_n\big(\log \hat p_b(x_n) - \log \hat p_m(x_n)\big)}{\sqrt N},

which is much smaller than the unpaired :math:`\sqrt{\mathrm{SE}_b^2 + \mathrm{SE}_m^2}` because
the per-point values of two models on the same points are strongly correlated (hard points
are hard for every model).

References
----------
.. [1] Y. Burda, R. Grosse and R. Salakhutdinov, "Importance Weighted Autoencoders",
   ICLR 2016, arXiv:1509.00519.
.. [2] A. Vehtari, A. Gelman and J. Gabry, "Practical Bayesian model evaluation using
   leave-one-out cross-validation and WAIC", Statistics and Computing 27, 2017,
   doi:10.1007/s11222-016-9696-4, section 5.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from bayesvae.evaluation.summary import METRICS, evaluate_row, per_column_log_likelihood

__all__ = ["compare", "COLUMNS", "to_markdown", "to_html"]

#: Columns of :func:`compare` besides the :data:`~bayesvae.evaluation.METRICS`.
COLUMNS: dict[str, str] = {
    "rank": "1 for the highest log_px",
    "d_log_px": "mean per-point log_px of the best model minus this model's (>= 0)",
    "d_se": "paired standard error of d_log_px",
}


def compare(
    fits: Mapping[str, Any],
    x: Any,
    *,
    num_samples: int = 1000,
    seed: int | None = 0,
    groups: Any = None,
    covariates: Mapping[str, Any] | None = None,
    threshold: float = 0.01,
    elbo_samples: int = 100,
    gaps: bool = True,
    gap_points: int | None = 100,
    chunk_size: int | None = None,
) -> pd.DataFrame:
    r"""Compare fitted models on the same (held-out) data.

    Each fit is evaluated with :func:`bayesvae.evaluation.evaluate` on ``x`` with the same
    seed; the models are ranked by the mean held-out :math:`\log \hat p(x_n)` (IWAE with
    ``num_samples`` draws) and each is given the paired difference to the best and its
    standard error (module notes).

    Parameters
    ----------
    fits : mapping of str to FitResult or (model, guide)
        The models, by the name each row gets.
    x : Tensor, ndarray, DataFrame of shape (N, d), or Rows
        Held-out data, valid for every model's likelihood.
    num_samples : int, default 1000
        Importance samples per point.
    seed : int or None, default 0
        Seed for every model's draws.
    groups : array-like of int, optional
        Group labels, for priors that use them (shorthand for ``covariates={"groups": ...}``).
    covariates : mapping of str to array-like of shape (N, ...), optional
        Per-row side information passed to every model and guide as keywords.
    threshold : float, default 0.01
        Activity threshold of the active units.
    elbo_samples : int, default 100
        Draws per point for the ELBO.
    gaps : bool, default True
        Compute the amortization and approximation gaps (on the first ``gap_points`` rows;
        NaN for fits they do not apply to).
    gap_points : int or None, default 100
        Rows used for the gaps.
    chunk_size : int, optional
        Largest number of (sample, point) pairs evaluated at once.

    Returns
    -------
    pandas.DataFrame
        Indexed by model name (``frame.index.name == "model"``), sorted best first, with
        the columns ``rank``, ``log_px``, ``log_px_se``, ``d_log_px``, ``d_se`` and the rest
        of :data:`~bayesvae.evaluation.METRICS` (see also :data:`COLUMNS`).
        ``frame.attrs["log_px_per_point"]`` maps each name to its per-point values; for
        table models scored on a DataFrame, ``frame.attrs["log_px_per_column"]`` is a
        DataFrame of each column's held-out log-likelihood share (rows) by model (columns).
        Render with :func:`to_markdown` or :func:`to_html`.

    Raises
    ------
    ValueError
        If ``fits`` is empty or a name is not a non-empty string.

    Examples
    --------
    >>> import torch, bayesvae
    >>> from bayesvae.compare import compare, to_markdown
    >>> def pair(k):
    ...     m = bayesvae.VAE(prior=bayesvae.GaussianPrior(k), likelihood=bayesvae.Gaussian(scale=1.0),
    ...                      decoder=bayesvae.MLP(k, 4))
    ...     return m, bayesvae.AmortizedGuide(m, hidden=())
    >>> table = compare({"k1": pair(1), "k2": pair(2)}, torch.randn(20, 4), num_samples=10, gaps=False)
    >>> list(table["rank"])
    [1, 2]
    """
    if not isinstance(fits, Mapping) or not fits:
        raise ValueError(
            f"fits must be a non-empty mapping of name to FitResult or (model, guide); got {type(fits).__name__} of length {len(fits) if hasattr(fits, '__len__') else 'n/a'}"
        )
    for name in fits:
        if not isinstance(name, str) or not name:
            raise ValueError(f"model names must be non-empty strings, got {name!r}")
    rows: dict[str, dict[str, float]] = {}
    per_point: dict[str, np.ndarray] = {}
    for name, fit in fits.items():
        row, lp = evaluate_row(
            fit,
            x,
            num_samples=num_samples,
            seed=seed,
            groups=groups,
            covariates=covariates,
            threshold=threshold,
            elbo_samples=elbo_samples,
            gaps=gaps,
            gap_points=gap_points,
            chunk_size=chunk_size,
        )
        rows[name] = row
        per_point[name] = lp.double().cpu().numpy()
    order = sorted(rows, key=lambda k: -rows[k]["log_px"])
    best = per_point[order[0]]
    n = best.shape[0]
    for rank, name in enumerate(order, start=1):
        diff = best - per_point[name]
        rows[name]["rank"] = rank
        rows[name]["d_log_px"] = float(diff.mean())
        rows[name]["d_se"] = float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    columns = ["rank", "log_px", "log_px_se", "d_log_px", "d_se"] + [
        c for c in METRICS if c not in ("log_px", "log_px_se")
    ]
    frame = pd.DataFrame([rows[k] for k in order], index=pd.Index(order, name="model"), columns=columns)
    frame.attrs["log_px_per_point"] = {k: per_point[k] for k in order}
    per_column = {k: c for k in order if (c := per_column_log_likelihood(fits[k], x, seed=seed)) is not None}
    if per_column:  # table models on a DataFrame: each column's share, one column per model
        frame.attrs["log_px_per_column"] = pd.DataFrame(per_column)
    return frame


_INTEGER_COLUMNS = {"rank", "active_units", "latent_units", "num_parameters", "num_data", "num_samples"}


def _cell(value: Any, column: str, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if column in _INTEGER_COLUMNS and isinstance(value, (int, float, np.integer, np.floating)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}f}"
    return str(value)


def to_markdown(frame: pd.DataFrame, *, digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table of ``frame`` (its index as the first column).

    Floats get ``digits`` decimals, count columns none, NaN an empty cell. Needs no
    ``tabulate`` (which ``DataFrame.to_markdown`` requires).
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"to_markdown takes a pandas DataFrame, got {type(frame).__name__}")
    index_name = frame.index.name or ""
    header = [index_name, *(str(c) for c in frame.columns)]
    body = [
        [str(idx), *(_cell(v, str(c), digits) for c, v in zip(frame.columns, row))]
        for idx, row in zip(frame.index, frame.itertuples(index=False, name=None))
    ]
    numeric = [False] + [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    align = ["---:" if num else ":---" for num in numeric]
    lines = [header, align, *body]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def to_html(frame: pd.DataFrame, *, digits: int = 3) -> str:
    """An HTML table of ``frame`` with the number formatting of :func:`to_markdown`."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"to_html takes a pandas DataFrame, got {type(frame).__name__}")
    formatters = {c: (lambda v, c=str(c): _cell(v, c, digits)) for c in frame.columns}
    return frame.to_html(formatters=formatters, na_rep="", border=0, classes="bayesvae-table")
