"""Shared plumbing of the tabular tools: the model, guide and schema of a fit; cell parameters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from bayesvae.convention import reference_parameter
from bayesvae.models.columns import CONTINUOUS, COUNTS, Columns, ColumnSpec, Schema

__all__ = ["unpack", "schema_of", "encode", "label_probs", "to_original", "original_means"]


def unpack(fit_or_pair: Any) -> tuple[Any, Any, Schema]:
    """``(model, guide, schema)`` of a FitResult or a ``(model, guide)`` pair."""
    if isinstance(fit_or_pair, tuple) and len(fit_or_pair) == 2:
        model, guide = fit_or_pair
    elif hasattr(fit_or_pair, "model") and hasattr(fit_or_pair, "guide"):
        model, guide = fit_or_pair.model, fit_or_pair.guide
    else:
        raise TypeError(f"pass a fit result (with .model and .guide) or a (model, guide) pair, got {type(fit_or_pair).__name__}")
    return model, guide, schema_of(model)


def schema_of(model: Any) -> Schema:
    """The schema of a model's Columns likelihood (TypeError when it has none)."""
    likelihood = getattr(model, "likelihood", None)
    schema = getattr(likelihood, "schema", None)
    if not isinstance(likelihood, Columns) or schema is None:
        raise TypeError(
            f"tabular tools need a model whose likelihood is Columns.infer(frame) (a Columns with a schema); got likelihood {type(likelihood).__name__}"
        )
    return schema


def encode(model: Any, schema: Schema, frame: pd.DataFrame, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoded zero-filled rows and the observed mask, on the model's device and dtype."""
    values, observed = schema.encode(frame, name=name)
    ref = reference_parameter(model)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    x = torch.as_tensor(values, dtype=dtype, device=device)
    model.likelihood.validate(x, list(schema.names))
    return x, torch.as_tensor(observed, device=device)


def label_probs(likelihood: Columns, out: torch.Tensor) -> dict[int, torch.Tensor]:
    """Per labelled column position: probabilities of its levels, shape (..., N, L)."""
    probs: dict[int, torch.Tensor] = {}
    for lik, cols, d in likelihood.blocks(out):
        name = type(lik).__name__
        if name == "Bernoulli":
            p = d.base_dist.probs
            for i, c in enumerate(cols):
                probs[c] = torch.stack([1 - p[..., i], p[..., i]], dim=-1)
        elif name == "Categorical":
            p = d.base.probs
            for i, c in enumerate(cols):
                probs[c] = p[..., i, :]
    return probs


def original_means(likelihood: Columns, schema: Schema, out: torch.Tensor) -> dict[int, torch.Tensor]:
    r"""Per numeric column position: :math:`E[v \mid z]` on the original scale, shape (..., N).

    Standardized columns: :math:`\mu_0 + s\, E[e]`; log-normal: :math:`\exp(\mu_0 + s\mu + s^2\sigma^2/2)`
    for encoded :math:`e \sim N(\mu, \sigma^2)`; counts: the rate or mean.
    """
    means: dict[int, torch.Tensor] = {}
    for _, cols, d in likelihood.blocks(out):
        base = getattr(d, "base_dist", None)
        for i, c in enumerate(cols):
            spec = schema.columns[c]
            if spec.kind in COUNTS:
                means[c] = d.mean[..., i]
            elif spec.kind == "lognormal":
                mu, sd = base.loc[..., i], base.scale[..., i]
                means[c] = torch.exp(spec.loc + spec.scale * mu + 0.5 * (spec.scale * sd) ** 2)
            elif spec.kind in CONTINUOUS:
                means[c] = spec.loc + spec.scale * base.loc[..., i]
    return means


def to_original(spec: ColumnSpec, e: np.ndarray) -> np.ndarray:
    """Numeric cells on the original scale from encoded values (labels: codes unchanged)."""
    if spec.kind in CONTINUOUS:
        v = spec.loc + spec.scale * e
        return np.exp(v) if spec.kind == "lognormal" else v
    return e
