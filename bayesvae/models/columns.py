r"""The likelihood of a table: independent blocks of columns given z, each its own family.

.. math::

    p(x_n \mid z_n) = \prod_{b} p_b\big(x_{n, C_b} \mid f_{C_b}(z_n)\big)

Built from a DataFrame by :meth:`Columns.infer` (through :mod:`bayesvae.models.schema`, which
also encodes frames for it and decodes its output back into frames).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import pyro.distributions as dist
import torch
from torch import nn

from bayesvae._registry import register
from bayesvae.models.likelihoods import (
    Bernoulli,
    Categorical,
    Gaussian,
    Likelihood,
    NegativeBinomial,
    Poisson,
    StudentT,
    cell_log_prob,
)
from bayesvae.models.schema import (
    CONTINUOUS,
    COUNTS,
    KINDS,
    LABELLED,
    ColumnSpec,
    Schema,
    infer_schema,
)

__all__ = ["Columns", "Schema", "ColumnSpec", "infer_schema", "KINDS", "CONTINUOUS", "COUNTS", "LABELLED"]


@register
class Columns(Likelihood):
    r"""A per-column mix of likelihoods for tabular data (a pandas DataFrame's columns).

    .. math::

        p(x_n \mid z_n) = \prod_{b} p_b\big(x_{n, C_b} \mid f_{C_b}(z_n)\big)

    where block :math:`b` covers the columns :math:`C_b` with its own likelihood (Gaussian
    for measurements, Bernoulli for binary indicators, Poisson / negative binomial for counts,
    categorical for coded factors). The decoder's outputs are split into consecutive blocks,
    one per likelihood, of ``likelihood.num_outputs(len(C_b))`` values.

    Parameters
    ----------
    blocks : sequence of (Likelihood, sequence of int)
        Each likelihood with the column positions it models; together the positions must
        cover ``0 .. d-1`` exactly once.
    schema : Schema, optional
        The table's schema (set by :meth:`infer`): how a DataFrame is encoded for this
        likelihood and decoded back. Saved with the model's config.

    See Also
    --------
    Columns.infer : build the mix from a DataFrame's columns.

    Examples
    --------
    >>> lik = Columns([(Gaussian(data_dim=2), [0, 2]), (Bernoulli(), [1])])
    >>> lik.num_outputs(3)
    3
    """

    def __init__(self, blocks, *, schema: Schema | Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if isinstance(schema, Mapping):
            schema = Schema.from_config(schema)
        if schema is not None and not isinstance(schema, Schema):
            raise TypeError(f"schema must be a Schema, got {type(schema).__name__}")
        blocks = [(lik, [int(c) for c in cols]) for lik, cols in blocks]
        if not blocks:
            raise ValueError("Columns needs at least one (likelihood, columns) block")
        for lik, cols in blocks:
            if not isinstance(lik, Likelihood):
                raise TypeError(f"Columns blocks need bayesvae Likelihoods, got {type(lik).__name__}")
            if not cols:
                raise ValueError(f"a {type(lik).__name__} block has no columns")
        positions = sorted(c for _, cols in blocks for c in cols)
        if positions != list(range(len(positions))):
            raise ValueError(f"Columns blocks must cover columns 0..d-1 exactly once; got positions {positions}")
        self.parts = nn.ModuleList([lik for lik, _ in blocks])
        self.columns = [cols for _, cols in blocks]
        self.data_dim = len(positions)
        self._widths = [lik.num_outputs(len(cols)) for lik, cols in blocks]
        for i, cols in enumerate(self.columns):
            self.register_buffer(f"_cols{i}", torch.tensor(cols), persistent=False)
        order = torch.tensor([c for cols in self.columns for c in cols])
        self.register_buffer("_inverse", torch.argsort(order), persistent=False)
        if schema is not None and len(schema) != self.data_dim:
            raise ValueError(f"the schema has {len(schema)} columns but the blocks cover {self.data_dim}")
        self.schema = schema
        counts = torch.zeros(self.data_dim, dtype=torch.bool)
        for lik, cols in blocks:
            if isinstance(lik, (Poisson, NegativeBinomial)):
                counts[list(cols)] = True
        self.register_buffer("_counts", counts, persistent=False)

    def encoder_features(self, x: torch.Tensor) -> torch.Tensor:
        r"""What an encoder should read: count columns as :math:`\log(1 + x)`, others as they are.

        Raw counts (thousands of grams, visits) would saturate or overflow an encoder's first
        layer; the likelihood still scores the counts themselves.
        """
        if not bool(self._counts.any()):
            return x
        return torch.where(self._counts, torch.log1p(x.clamp_min(0)), x)

    @classmethod
    def from_schema(cls, schema: Schema) -> Columns:
        """The likelihood of a table's schema: one block per likelihood family.

        Gaussian (``gaussian`` and ``lognormal`` columns), Student-t, Bernoulli, Poisson and
        negative binomial blocks in this order, then one categorical block per number of
        levels; the schema is kept (``likelihood.schema``).
        """
        if not isinstance(schema, Schema):
            raise TypeError(f"from_schema needs a Schema, got {type(schema).__name__}")
        blocks: list = []
        gauss = schema.positions(("gaussian", "lognormal"))
        if gauss:
            blocks.append((Gaussian(data_dim=len(gauss)), gauss))
        heavy = schema.positions(("student-t",))
        if heavy:
            blocks.append((StudentT(data_dim=len(heavy)), heavy))
        binary = schema.positions(("bernoulli",))
        if binary:
            blocks.append((Bernoulli(), binary))
        pois = schema.positions(("poisson",))
        if pois:
            blocks.append((Poisson(), pois))
        nb = schema.positions(("negative-binomial",))
        if nb:
            blocks.append((NegativeBinomial(data_dim=len(nb)), nb))
        by_k: dict[int, list[int]] = {}
        for j, c in enumerate(schema.columns):
            if c.kind == "categorical":
                by_k.setdefault(len(c.levels), []).append(j)
        for k, cols in sorted(by_k.items()):
            blocks.append((Categorical(k), cols))
        return cls(blocks, schema=schema)

    @classmethod
    def infer(
        cls,
        frame: pd.DataFrame,
        *,
        kinds: Mapping[str, str] | None = None,
        categorical: Mapping[str, int] | None = None,
        counts: str = "poisson",
        positive: str = "gaussian",
        max_levels: int = 20,
    ) -> Columns:
        """Choose a likelihood per DataFrame column from its dtype; the schema is kept.

        ``repr(likelihood)`` and :meth:`describe` show which column gets which likelihood;
        override any column by name with ``kinds={name: kind}``. The arguments and the rules
        are those of :func:`infer_schema`; the blocks are built by :meth:`from_schema`.

        Examples
        --------
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"height": [1.7, 1.8, 1.6], "smoker": [True, False, True],
        ...                       "town": ["a", "b", "c"]})
        >>> Columns.infer(frame).describe()["likelihood"].tolist()
        ['Gaussian', 'Bernoulli', 'Categorical(3)']
        """
        schema = infer_schema(frame, kinds=kinds, categorical=categorical, counts=counts, positive=positive, max_levels=max_levels)
        return cls.from_schema(schema)

    def describe(self) -> pd.DataFrame:
        """One row per column with its likelihood (the schema's table when there is one)."""
        if self.schema is not None:
            return self.schema.describe()
        rows = {c: type(lik).__name__ for lik, cols in zip(self.parts, self.columns) for c in cols}
        return pd.DataFrame({"likelihood": [rows[c] for c in range(self.data_dim)]}).rename_axis("column")

    def __repr__(self) -> str:
        if self.schema is None:
            return super().__repr__()
        return f"Columns likelihood over a {self.schema!r}"

    def num_outputs(self, data_dim):
        if data_dim != self.data_dim:
            raise ValueError(f"Columns likelihood covers {self.data_dim} columns, but the data have {data_dim}")
        return sum(self._widths)

    def _split(self, out: torch.Tensor) -> list[torch.Tensor]:
        return list(out.split(self._widths, dim=-1))

    def blocks(self, out: torch.Tensor) -> list[tuple[Likelihood, list[int], dist.TorchDistribution]]:
        """Each block's likelihood, column positions and distribution for decoder output ``out``."""
        return [(lik, cols, lik.distribution(o)) for lik, cols, o in zip(self.parts, self.columns, self._split(out))]

    def distribution(self, out):
        return _ColumnsJoint(
            [lik.distribution(o) for lik, o in zip(self.parts, self._split(out))],
            [getattr(self, f"_cols{i}") for i in range(len(self.parts))],
            self._inverse,
        )

    def mean(self, out):
        means = [lik.mean(o) for lik, o in zip(self.parts, self._split(out))]
        return torch.cat(means, dim=-1)[..., self._inverse]

    def validate(self, x, columns=None):
        for lik, cols in zip(self.parts, self.columns):
            names = None if columns is None else [columns[c] for c in cols]
            lik.validate(x[:, cols], names)

    def to_config(self):
        config = {
            "type": "Columns",
            "blocks": [[lik.to_config(), cols] for lik, cols in zip(self.parts, self.columns)],
        }
        if self.schema is not None:
            config["schema"] = self.schema.to_config()
        return config


class _ColumnsJoint(dist.TorchDistribution):
    """Independent blocks of columns as one event of shape ``(d,)``."""

    arg_constraints: dict = {}
    support = dist.constraints.real

    def __init__(self, parts, columns, inverse, validate_args=None) -> None:
        self.parts, self.cols, self.inverse = parts, columns, inverse
        batch = torch.broadcast_shapes(*(p.batch_shape for p in parts))
        super().__init__(batch, torch.Size([int(inverse.numel())]), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return _ColumnsJoint([p.expand(batch_shape) for p in self.parts], self.cols, self.inverse)

    def sample(self, sample_shape=torch.Size()):
        draws = [p.sample(sample_shape).to(torch.get_default_dtype()) for p in self.parts]
        return torch.cat(draws, dim=-1)[..., self.inverse]

    def log_prob(self, value):
        return sum(p.log_prob(value[..., c]) for p, c in zip(self.parts, self.cols))

    def cell_log_prob(self, value):
        cells = [cell_log_prob(p, value[..., c]) for p, c in zip(self.parts, self.cols)]
        batch = torch.broadcast_shapes(*(t.shape[:-1] for t in cells))
        return torch.cat([t.expand(*batch, t.shape[-1]) for t in cells], dim=-1)[..., self.inverse]
