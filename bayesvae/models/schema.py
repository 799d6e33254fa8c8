r"""Tables: a schema of per-column likelihoods and encodings, inferred from a DataFrame.

A :class:`Schema` records, for each column of a training DataFrame, which likelihood models
it (its *kind*), how its values are encoded for the model (standardization of measurements,
codes of labels) and how to turn model output back into the column (original scale, labels,
dtype). :class:`~bayesvae.models.columns.Columns` (``Columns.from_schema``) is the likelihood
the schema defines: independent blocks of columns given :math:`z`, as in the
heterogeneous-incomplete VAE of Nazabal et al. [1]_.

=====================  ==========================================  =========================
kind                   chosen for                                  likelihood (encoded scale)
=====================  ==========================================  =========================
``gaussian``           floats                                      Gaussian, learned scale
``lognormal``          strictly positive floats (``positive=``)    Gaussian on log x
``student-t``          on request (``kinds=``)                     Student-t, learned scale
``bernoulli``          bool, two levels, floats in {0, 1}          Bernoulli (logits)
``categorical``        category / string dtype with few levels     Categorical (softmax)
``poisson``            non-negative integers (``counts=``)         Poisson (log-rate)
``negative-binomial``  counts with ``counts="negative-binomial"``   NB, learned dispersion
=====================  ==========================================  =========================

Measurements are standardized with the training mean and standard deviation; every value a
user sees again (samples, imputations, summaries) is decoded back to the original scale.

References
----------
.. [1] A. Nazabal, P. M. Olmos, Z. Ghahramani and I. Valera, "Handling incomplete
   heterogeneous data using VAEs", Pattern Recognition 107, 2020,
   doi:10.1016/j.patcog.2020.107501.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = ["KINDS", "CONTINUOUS", "COUNTS", "LABELLED", "ColumnSpec", "Schema", "infer_schema"]

#: Column kinds and the likelihood that models each.
KINDS: dict[str, str] = {
    "gaussian": "Gaussian",
    "lognormal": "Gaussian on log x",
    "student-t": "StudentT",
    "bernoulli": "Bernoulli",
    "categorical": "Categorical",
    "poisson": "Poisson",
    "negative-binomial": "NegativeBinomial",
}
CONTINUOUS = ("gaussian", "lognormal", "student-t")
COUNTS = ("poisson", "negative-binomial")
LABELLED = ("bernoulli", "categorical")


def _py(value: Any) -> Any:
    """A numpy scalar as the Python scalar JSON can hold."""
    return value.item() if isinstance(value, np.generic) else value


def _sorted_levels(values) -> tuple:
    """Distinct values in sorted order (by their text when the types do not compare)."""
    unique = list(dict.fromkeys(_py(v) for v in values))
    try:
        return tuple(sorted(unique))
    except TypeError:
        return tuple(sorted(unique, key=str))


@dataclass(frozen=True)
class ColumnSpec:
    """How one column is modelled and encoded.

    Attributes
    ----------
    name : str
        Column name.
    kind : str
        One of :data:`KINDS`.
    dtype : str
        The training column's pandas dtype (``"category"`` for a pandas Categorical).
    levels : tuple or None
        Labels of a ``bernoulli``/``categorical`` column; label ``levels[k]`` is coded ``k``.
    ordered : bool
        Whether a pandas Categorical column was ordered.
    loc, scale : float
        Standardization of a continuous column: encoded ``(v - loc) / scale`` (of ``log v``
        for ``lognormal``); 0 and 1 for other kinds.
    missing : int
        Missing cells of the column in the training frame.
    """

    name: str
    kind: str
    dtype: str
    levels: tuple | None = None
    ordered: bool = False
    loc: float = 0.0
    scale: float = 1.0
    missing: int = 0

    @property
    def likelihood(self) -> str:
        """Name of the likelihood that models the column."""
        if self.kind == "categorical":
            return f"Categorical({len(self.levels)})"
        return KINDS[self.kind]


class Schema:
    """The columns of a table: each one's kind, encoding and dtype (see the module table).

    Built by :func:`infer_schema` (or ``Columns.infer``) from a training DataFrame; shown
    by ``repr`` / :meth:`describe`; changed by inferring again with ``kinds={name: kind}``;
    turned into the likelihood by ``Columns.from_schema``.

    Parameters
    ----------
    columns : sequence of ColumnSpec
        One per column, in the table's order.
    """

    def __init__(self, columns: Sequence[ColumnSpec]) -> None:
        columns = tuple(columns)
        if not columns:
            raise ValueError("a Schema needs at least one column")
        for spec in columns:
            if not isinstance(spec, ColumnSpec):
                raise TypeError(f"Schema columns must be ColumnSpec records, got {type(spec).__name__}")
            if spec.kind not in KINDS:
                raise ValueError(f"column {spec.name!r} has unknown kind {spec.kind!r}; known kinds: {list(KINDS)}")
        names = [c.name for c in columns]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"a Schema needs distinct column names; {dup} appear more than once")
        self.columns = columns

    @property
    def names(self) -> tuple[str, ...]:
        """Column names in order."""
        return tuple(c.name for c in self.columns)

    @property
    def has_missing(self) -> bool:
        """Whether the training frame had missing cells."""
        return any(c.missing for c in self.columns)

    def __len__(self) -> int:
        return len(self.columns)

    def __getitem__(self, name: str) -> ColumnSpec:
        for spec in self.columns:
            if spec.name == name:
                return spec
        raise KeyError(f"the schema has no column {name!r}; columns: {list(self.names)}")

    def positions(self, kinds: Sequence[str]) -> list[int]:
        """Positions of the columns whose kind is in ``kinds``."""
        return [j for j, c in enumerate(self.columns) if c.kind in kinds]

    def describe(self) -> pd.DataFrame:
        """One row per column: kind, likelihood, dtype, levels, missing cells and standardization."""
        rows = []
        for c in self.columns:
            levels = "" if c.levels is None else ", ".join(str(v) for v in c.levels[:6]) + (" ..." if len(c.levels) > 6 else "")
            rows.append({
                "column": c.name,
                "kind": c.kind,
                "likelihood": c.likelihood,
                "dtype": c.dtype,
                "levels": levels,
                "missing": c.missing,
                "loc": c.loc if c.kind in CONTINUOUS else float("nan"),
                "scale": c.scale if c.kind in CONTINUOUS else float("nan"),
            })
        return pd.DataFrame(rows).set_index("column")

    def __repr__(self) -> str:
        table = self.describe().drop(columns=["loc", "scale"]).to_string()
        return f"Schema({len(self)} columns; override a column with kinds={{name: kind}}, kinds: {', '.join(KINDS)})\n{table}"

    def cell_log_jacobian(self, x: torch.Tensor) -> torch.Tensor:
        r"""Per-cell :math:`\log |\partial e / \partial v|` at encoded values ``x`` of shape (..., d).

        Adding it to an encoded-scale log-density gives the density of the original value
        :math:`v`: :math:`-\log s` for a standardized column, :math:`-\log s - \log v` for a
        log-normal one, 0 for labels and counts.
        """
        out = torch.zeros_like(x)
        for j, c in enumerate(self.columns):
            if c.kind in CONTINUOUS:
                out[..., j] = -math.log(c.scale)
            if c.kind == "lognormal":
                out[..., j] -= c.loc + c.scale * x[..., j]
        return out

    # Encoding -----------------------------------------------------------------------------
    def encode(self, frame: pd.DataFrame, *, name: str = "data") -> tuple[np.ndarray, np.ndarray]:
        """Encode a DataFrame for the model.

        Parameters
        ----------
        frame : DataFrame with the schema's columns (any order)
            Missing cells may be NaN, ``pd.NA`` or ``None``.
        name : str
            What to call the frame in error messages.

        Returns
        -------
        values : ndarray of shape (N, d), float64
            Encoded cells (standardized measurements, label codes, counts); 0 where missing.
        observed : bool ndarray of shape (N, d)
            ``True`` where the cell was observed.

        Raises
        ------
        ValueError
            A missing or extra column, an unseen level, a non-numeric or infinite
            measurement, a non-positive value in a log-normal column, or a negative or
            non-integer count -- each naming the column.
        """
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{name} must be a pandas DataFrame to be encoded by a Schema, got {type(frame).__name__}")
        have = [str(c) for c in frame.columns]
        lacking = [n for n in self.names if n not in have]
        if lacking:
            raise ValueError(f"{name} lacks column(s) {lacking} of the schema (columns {list(self.names)})")
        extra = [n for n in have if n not in self.names]
        if extra:
            raise ValueError(f"{name} has column(s) {extra} that the schema does not know; drop them or infer the schema from this frame")
        frame = frame.set_axis(have, axis=1)
        n = len(frame)
        values = np.zeros((n, len(self)), dtype=np.float64)
        observed = np.zeros((n, len(self)), dtype=bool)
        for j, spec in enumerate(self.columns):
            column = frame[spec.name]
            seen = ~pd.isna(column).to_numpy()
            observed[:, j] = seen
            if seen.any():
                values[seen, j] = _encode_column(spec, column[seen], name)
        return values, observed

    def decode(self, values: np.ndarray | torch.Tensor, *, index: Any = None) -> pd.DataFrame:
        """Turn encoded values ``(N, d)`` back into a DataFrame of the training frame's dtypes.

        Measurements are put back on the original scale, codes become their labels (a pandas
        Categorical column keeps its categories), counts keep an integer dtype.
        """
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().double().numpy()
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(self):
            raise ValueError(f"decode needs values of shape (N, {len(self)}), got {values.shape}")
        out = pd.DataFrame({spec.name: _decode_column(spec, values[:, j]) for j, spec in enumerate(self.columns)})
        return out if index is None else out.set_axis(index, axis=0)

    # Persistence --------------------------------------------------------------------------
    def to_config(self) -> dict[str, Any]:
        """A JSON-serializable description (labels as JSON scalars)."""
        return {"columns": [
            {"name": c.name, "kind": c.kind, "dtype": c.dtype,
             "levels": None if c.levels is None else [_py(v) for v in c.levels],
             "ordered": c.ordered, "loc": c.loc, "scale": c.scale, "missing": c.missing}
            for c in self.columns
        ]}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Schema:
        """Rebuild from :meth:`to_config` output."""
        specs = []
        for c in config["columns"]:
            c = dict(c)
            c["levels"] = None if c.get("levels") is None else tuple(c["levels"])
            specs.append(ColumnSpec(**c))
        return cls(specs)


def _encode_column(spec: ColumnSpec, column: pd.Series, name: str) -> np.ndarray:
    """Encoded values of the observed cells of one column."""
    where = f"column {spec.name!r} of the {name}"
    if spec.kind in LABELLED:
        codes = {level: k for k, level in enumerate(spec.levels)}
        out = np.empty(len(column))
        for i, value in enumerate(column.tolist()):
            code = codes.get(_py(value))
            if code is None:
                raise ValueError(
                    f"{where} has level {value!r}, which was not seen when the schema was inferred (known levels: {list(spec.levels)}); map it to a known level or mark it missing"
                )
            out[i] = code
        return out
    if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_object_dtype(column)) or pd.api.types.is_bool_dtype(column):
        raise ValueError(f"{where} is modelled as {spec.kind} but has dtype {column.dtype}; it needs numbers")
    numeric = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(numeric)
    if bad.any():
        first = column.tolist()[int(np.argmax(bad))]
        raise ValueError(f"{where} is modelled as {spec.kind} but holds {int(bad.sum())} values that are not finite numbers (e.g. {first!r})")
    if spec.kind in COUNTS:
        negative = numeric < 0
        if negative.any():
            raise ValueError(
                f"{where} is modelled as counts ({spec.kind}) but has {int(negative.sum())} negative values (smallest {numeric.min():g}); counts are non-negative integers. Use kinds={{{spec.name!r}: 'gaussian'}} for signed data."
            )
        fractional = numeric != np.round(numeric)
        if fractional.any():
            raise ValueError(
                f"{where} is modelled as counts ({spec.kind}) but has {int(fractional.sum())} non-integer values (e.g. {numeric[fractional][0]:g}); use kinds={{{spec.name!r}: 'gaussian'}} for measurements."
            )
        return numeric
    if spec.kind == "lognormal":
        low = numeric <= 0
        if low.any():
            raise ValueError(
                f"{where} is modelled as lognormal but has {int(low.sum())} values <= 0 (smallest {numeric.min():g}); use kinds={{{spec.name!r}: 'gaussian'}}."
            )
        numeric = np.log(numeric)
    return (numeric - spec.loc) / spec.scale


def _decode_column(spec: ColumnSpec, e: np.ndarray) -> pd.Series | pd.Categorical:
    """Original values of one column from encoded values."""
    if spec.kind in LABELLED:
        codes = np.clip(np.round(e), 0, len(spec.levels) - 1).astype(np.int64)
        if spec.dtype == "category":
            return pd.Categorical.from_codes(codes, categories=list(spec.levels), ordered=spec.ordered)
        labels = pd.Series(np.array(spec.levels, dtype=object)[codes], dtype=object)
        return labels.astype(spec.dtype) if spec.dtype != "object" else labels
    v = e * spec.scale + spec.loc
    if spec.kind == "lognormal":
        v = np.exp(v)
    target = pd.api.types.pandas_dtype(spec.dtype)
    if spec.kind in COUNTS:
        v = np.round(v)
        return pd.Series(v).astype(target if pd.api.types.is_numeric_dtype(target) else np.float64)
    return pd.Series(v).astype(target if pd.api.types.is_float_dtype(target) else np.float64)


def infer_schema(
    frame: pd.DataFrame,
    *,
    kinds: Mapping[str, str] | None = None,
    categorical: Mapping[str, int] | None = None,
    counts: str = "poisson",
    positive: str = "gaussian",
    max_levels: int = 20,
) -> Schema:
    """Choose a kind (likelihood and encoding) for every column of a DataFrame from its dtype.

    Rules, for the observed (non-missing) cells of each column:

    * ``bool`` / ``boolean`` dtype, or exactly two levels -> ``bernoulli`` (labels kept);
    * pandas ``category`` dtype, or object / string dtype with at most ``max_levels``
      distinct values -> ``categorical`` (all categories of a Categorical are kept);
    * integer dtype with non-negative values, or floats that are all non-negative integers
      -> ``counts`` (``"poisson"`` or ``"negative-binomial"``); floats in {0, 1} ->
      ``bernoulli``;
    * other numbers -> ``gaussian``, or ``lognormal`` for strictly positive columns when
      ``positive="lognormal"``.

    Parameters
    ----------
    frame : DataFrame of shape (N, d)
        Training data; missing cells (NaN, ``pd.NA``, ``None``) are allowed.
    kinds : mapping of column name to kind, optional
        Overrides by column name, e.g. ``{"year": "categorical", "income": "lognormal"}``
        (kinds: :data:`KINDS`).
    categorical : mapping of column name to int, optional
        Columns holding integer codes ``0..K-1`` (levels ``range(K)``).
    counts : {"poisson", "negative-binomial"}
        The kind given to count columns.
    positive : {"gaussian", "lognormal"}
        The kind given to strictly positive real-valued columns.
    max_levels : int
        Most distinct values an object / string column may have to be inferred categorical.

    Returns
    -------
    Schema

    Raises
    ------
    TypeError
        A column no likelihood models (datetime, timedelta, period, complex, free text with
        more than ``max_levels`` values): the message names it and the override that fixes it.
    ValueError
        A column with no observed value, an unknown column or kind in the overrides, or an
        override the values do not fit (e.g. counts with negative values).
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"a schema is inferred from a pandas DataFrame, got {type(frame).__name__}")
    kinds = dict(kinds or {})
    categorical = dict(categorical or {})
    names = [str(c) for c in frame.columns]
    for label, given in (("kinds", kinds), ("categorical", categorical)):
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ValueError(f"{label} names unknown columns {unknown}")
    for col, kind in kinds.items():
        if kind not in KINDS:
            raise ValueError(f"kinds[{col!r}] = {kind!r} is not a column kind; choose one of {list(KINDS)}")
    if counts not in COUNTS:
        raise ValueError(f"counts must be 'poisson' or 'negative-binomial', got {counts!r}")
    if positive not in ("gaussian", "lognormal"):
        raise ValueError(f"positive must be 'gaussian' or 'lognormal', got {positive!r}")
    if not isinstance(max_levels, int) or max_levels < 2:
        raise ValueError(f"max_levels must be an int >= 2, got {max_levels!r}")
    frame = frame.set_axis(names, axis=1)
    specs = []
    for name in names:
        column = frame[name]
        seen = column[~pd.isna(column)]
        if len(seen) == 0:
            raise ValueError(f"column {name!r} has no observed values (all {len(column)} are missing); drop it before fitting")
        dtype = "category" if isinstance(column.dtype, pd.CategoricalDtype) else str(column.dtype)
        base = ColumnSpec(name=name, kind="gaussian", dtype=dtype, missing=int(len(column) - len(seen)))
        if name in categorical:
            k = categorical[name]
            if not isinstance(k, int) or k < 2:
                raise ValueError(f"categorical[{name!r}] must be an int >= 2 (the number of levels), got {k!r}")
            spec = replace(base, kind="categorical", levels=tuple(range(k)))
        else:
            spec = _infer_column(base, column, seen, kinds.get(name), counts, positive, max_levels)
        specs.append(spec)
    return Schema(specs)


def _unsupported(name: str, what: str) -> TypeError:
    return TypeError(
        f"column {name!r} holds {what}, which no likelihood models; drop it, or convert it to numbers (e.g. days since the first date) and pass kinds={{{name!r}: 'gaussian'}}"
    )


def _infer_column(base, column, seen, override, counts, positive, max_levels) -> ColumnSpec:
    """The spec of one column from its dtype and observed values (or the override)."""
    name, dt = base.name, column.dtype
    if pd.api.types.is_datetime64_any_dtype(dt) or isinstance(dt, pd.PeriodDtype):
        raise _unsupported(name, f"dates (dtype {dt})")
    if pd.api.types.is_timedelta64_dtype(dt) or pd.api.types.is_complex_dtype(dt) or isinstance(dt, pd.IntervalDtype):
        raise _unsupported(name, f"values of dtype {dt}")
    values = [_py(v) for v in seen.tolist()]
    is_number = (pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt)) or (
        pd.api.types.is_object_dtype(dt) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    )
    if isinstance(dt, pd.CategoricalDtype):
        levels = tuple(_py(v) for v in dt.categories)
        return _labelled(base, levels, override, ordered=bool(dt.ordered))
    if pd.api.types.is_bool_dtype(dt) or (values and all(isinstance(v, bool) for v in values)):
        return _labelled(base, (False, True), override)
    if not is_number:
        if any(isinstance(v, (pd.Timestamp, np.datetime64)) or hasattr(v, "isoformat") for v in values):
            raise _unsupported(name, "dates")
        levels = _sorted_levels(values)
        if len(levels) > max_levels and override not in LABELLED:
            raise TypeError(
                f"column {name!r} looks like free text ({len(levels)} distinct values in {len(values)} rows, more than max_levels={max_levels}); drop it, or pass kinds={{{name!r}: 'categorical'}} (or a larger max_levels=) to model it as a categorical with {len(levels)} levels"
            )
        if override is not None and override not in LABELLED:
            raise ValueError(f"column {name!r} holds text labels, so kind {override!r} does not fit; use 'categorical' or 'bernoulli'")
        return _labelled(base, levels, override)
    x = np.asarray(values, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"column {name!r} holds {int((~np.isfinite(x)).sum())} infinite values; replace them or mark them missing")
    integral = bool((x == np.round(x)).all())
    kind = override
    if kind is None:
        if np.isin(x, (0.0, 1.0)).all():
            return replace(base, kind="bernoulli", levels=(0, 1) if pd.api.types.is_integer_dtype(dt) else (0.0, 1.0))
        if integral and x.min() >= 0:
            kind = counts
        elif positive == "lognormal" and x.min() > 0:
            kind = "lognormal"
        else:
            kind = "gaussian"
    if kind in LABELLED:
        return _labelled(base, _sorted_levels(values), kind)
    if kind in COUNTS and (x.min() < 0 or not integral):
        raise ValueError(f"column {name!r} cannot be {kind} counts: counts are non-negative integers, but its values range over [{x.min():g}, {x.max():g}]{'' if integral else ' with fractions'}")
    if kind == "lognormal":
        if x.min() <= 0:
            raise ValueError(f"column {name!r} cannot be lognormal: it has values <= 0 (smallest {x.min():g})")
        x = np.log(x)
    if kind in CONTINUOUS:
        sd = float(x.std())
        return replace(base, kind=kind, loc=float(x.mean()), scale=sd if sd > 0 else 1.0)
    return replace(base, kind=kind)


def _labelled(base: ColumnSpec, levels: tuple, override: str | None, *, ordered: bool = False) -> ColumnSpec:
    """A bernoulli / categorical spec for ``levels``."""
    if override is not None and override not in LABELLED:
        raise ValueError(f"column {base.name!r} holds labels {list(levels)[:5]}, so kind {override!r} does not fit; use 'categorical' or 'bernoulli'")
    if len(levels) < 2:
        raise ValueError(f"column {base.name!r} has a single level {levels[0]!r}; a constant column carries no information, drop it")
    if override == "bernoulli" and len(levels) != 2:
        raise ValueError(f"column {base.name!r} has {len(levels)} levels, so it cannot be bernoulli; use 'categorical'")
    kind = override or ("bernoulli" if len(levels) == 2 else "categorical")
    return replace(base, kind=kind, levels=tuple(levels), ordered=ordered)
