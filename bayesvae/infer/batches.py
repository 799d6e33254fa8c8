"""Training data for :func:`~bayesvae.fit`: validated rows, group columns, and minibatches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import torch

from bayesvae.convention import Batch, Rows, prepare_rows
from bayesvae.infer.distributed import Replicas
from bayesvae.streaming import iter_chunks

__all__ = ["training_rows", "group_column", "minibatches", "binarize"]


def group_column(data: Any, column: str, categories: Any, name: str) -> tuple[Any, Any, Any]:
    """Split a DataFrame into (features, group codes 0..G-1, the label of each code)."""
    from bayesvae.models.hierarchical.groups import group_codes

    if not isinstance(data, pd.DataFrame):
        raise ValueError(f"groups={column!r} names a column, but the {name} is a {type(data).__name__}, not a pandas DataFrame")
    if column not in data.columns:
        raise ValueError(f"groups={column!r}: the {name} has no such column; columns are {[str(c) for c in data.columns]}")
    labels, features = data[column], data.drop(columns=[column])
    if categories is None:
        codes, categories = group_codes(labels)
        return features, codes, categories
    codes = categories.get_indexer(labels)
    if (codes < 0).any():
        unseen = sorted({str(v) for v in labels[codes < 0]})
        raise ValueError(f"the {name} has group labels that the training data do not: {unseen[:10]}")
    return features, codes, categories


def training_rows(
    model: Any,
    guide: Any,
    data: Any,
    validation: Any,
    *,
    groups: Any,
    validation_groups: Any,
    covariates: Any,
    validation_covariates: Any,
    device: torch.device,
    dtype: torch.dtype,
    dynamic_binarization: bool,
    missing: str | None = None,
) -> tuple[Rows, Rows | None]:
    """Validate training (and validation) data once, at the boundary."""
    if isinstance(groups, str):  # a DataFrame column of group labels
        column = groups
        data, groups, categories = group_column(data, column, None, "data")
        if validation is not None and validation_groups is None:
            validation, validation_groups, _ = group_column(validation, column, categories, "validation data")
    rows = prepare_rows(model, guide, data, groups=groups, covariates=covariates, device=device, dtype=dtype, missing=missing, support=not dynamic_binarization)
    if dynamic_binarization:
        if not all(bool(((x >= 0) & (x <= 1)).all()) for x in iter_chunks(rows.x)):  # a DiskArray chunk by chunk
            raise ValueError(
                "dynamic_binarization=True draws x ~ Bernoulli(intensity) per row: the data must be intensities in [0, 1]"
            )
    vrows = None
    if validation is not None:
        vrows = prepare_rows(
            model,
            guide,
            validation,
            groups=validation_groups,
            covariates=validation_covariates,
            name="validation data",
            device=device,
            dtype=dtype,
            # None: prepare_rows models a DataFrame's missing cells and refuses NaN elsewhere
            missing="model" if missing == "model" else None,
        )
    return rows, vrows


def binarize(x: torch.Tensor) -> torch.Tensor:
    """A fresh binarization ``x ~ Bernoulli(intensity)`` (torch's generator on ``x``'s device)."""
    return torch.bernoulli(x)


def minibatches(
    rows: Rows,
    batch_size: int,
    order: torch.Generator,
    replicas: Replicas,
    *,
    dynamic_binarization: bool = False,
) -> Iterator[tuple[Batch, float]]:
    """One epoch of minibatches: a shared random order, each batch sharded across replicas.

    Every batch is scaled to the full data (``num_data = N``); with
    ``dynamic_binarization`` its rows are re-drawn from their intensities. Yields
    ``(batch, share)``, ``share`` the batch's fraction of the rows (before sharding), so that
    the share-weighted sum of an epoch's minibatch estimates is a full-data estimate over a
    partition of the rows: the epoch's ELBO with no row-subsampling noise.
    """
    n = rows.num_data
    perm = torch.randperm(n, generator=order).to(rows.x.device)
    for start in range(0, n, batch_size):
        idx = replicas.shard(perm[start : start + batch_size])
        batch = rows.batch(idx)
        if dynamic_binarization:
            batch = Batch(x=binarize(batch.x), index=batch.index, num_data=batch.num_data, covariates=batch.covariates)
        yield batch, (min(start + batch_size, n) - start) / n
