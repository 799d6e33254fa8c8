"""Private adapters shared by the diagnostics: inputs, draws and replicates."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pyro.poutine.trace_struct import Trace

from bayesvae.convention import Rows
from bayesvae.scoring import (
    GlobalDraw,
    ImportanceSamples,
    default_chunk_size,
    importance_log_weights,
    prepare,
    resolve,
    scoring_session,
)

__all__ = [
    "Inputs",
    "read_inputs",
    "draw_importance_samples",
    "replicate",
    "column_names",
    "require_arviz",
]


def require_arviz() -> Any:
    """Import ArviZ, checking that it is the 0.x line the diagnostics are written for.

    ArviZ 1.x (Python >= 3.12) returns ``xarray.DataTree`` instead of ``InferenceData``,
    takes ``from_dict({group: {...}})``, moved ``psislw`` to ``arviz_stats`` and renamed
    ``plot_posterior`` / ``plot_ppc``; the package pins ``arviz < 1``.
    """
    import warnings

    with warnings.catch_warnings():
        # ArviZ 0.23 announces its 1.x refactor with a FutureWarning at import
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az

    major = int(str(az.__version__).split(".")[0])
    if major >= 1:
        raise ImportError(
            f"bayesvae.diagnostics needs ArviZ 0.x (InferenceData, psislw, plot_ppc); found arviz {az.__version__}, whose 1.x API differs. Install 'arviz>=0.20,<1'."
        )
    return az


@dataclass(frozen=True)
class Inputs:
    """A fit's model and guide with validated data (a :class:`~bayesvae.convention.Rows`)."""

    model: Callable
    guide: Callable
    rows: Rows
    columns: tuple[str, ...]
    labels: np.ndarray | None

    @property
    def x(self) -> torch.Tensor:
        """The data, ``(N, d)`` on the model's device and dtype."""
        return self.rows.x

    @property
    def covariates(self) -> Mapping[str, torch.Tensor]:
        """Per-row covariates passed to model and guide."""
        return self.rows.covariates

    @property
    def groups(self) -> torch.Tensor | None:
        """The ``"groups"`` covariate, for callers that still pass ``groups=`` on."""
        return self.rows.covariates.get("groups")


def column_names(data: Any, fit: Any, width: int) -> tuple[str, ...]:
    """Column names: the DataFrame's, else the Dataset's or the fit's, else ``x0, x1, ...``."""
    names = None
    if isinstance(data, Rows) and data.info.columns is not None:
        names = tuple(data.info.columns)
    elif hasattr(data, "columns") and data.columns is not None:
        names = tuple(str(c) for c in data.columns)
    elif getattr(getattr(fit, "data", None), "columns", None) is not None:
        names = tuple(fit.data.columns)
    if names is None or len(names) != width:
        names = tuple(f"x{j}" for j in range(width))
    return names


def read_inputs(
    fit: Any, data: Any, groups: Any = None, covariates: Mapping[str, Any] | None = None
) -> Inputs:
    """Resolve ``fit`` to (model, guide) and validate ``data`` and its covariates once."""
    model, guide = resolve(fit)
    rows = prepare(model, guide, data, groups=groups, covariates=covariates)
    labels = getattr(data, "labels", None)
    labels = None if labels is None else np.asarray(labels)
    return Inputs(model, guide, rows, column_names(data, fit, rows.x.shape[1]), labels)


def draw_importance_samples(
    inputs: Inputs,
    *,
    num_samples: int,
    seed: int | None,
    globals_once: bool = True,
    return_samples: bool = False,
    chunk_size: int | None = None,
) -> ImportanceSamples:
    """:func:`~bayesvae.evaluation.importance_log_weights` of the inputs (it scores in evaluation mode)."""
    return importance_log_weights(
        inputs.model,
        inputs.guide,
        inputs.rows,
        num_samples=num_samples,
        chunk_size=chunk_size,
        globals_once=globals_once,
        return_samples=return_samples,
        seed=seed,
    )


def _value_node(name: str, value: torch.Tensor) -> dict[str, Any]:
    return {"type": "sample", "name": name, "is_observed": False, "value": value, "infer": {}}


def _replay_trace(values: dict[str, torch.Tensor]) -> Trace:
    trace = Trace()
    for name, value in values.items():
        trace.add_node(name, **_value_node(name, value))
    return trace


def _observed(model_trace: Trace) -> dict[str, dict]:
    return {
        name: site
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample" and site["is_observed"]
    }


@torch.no_grad()
def replicate(
    inputs: Inputs,
    samples: ImportanceSamples,
    *,
    seed: int | None,
    chunk_size: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    r"""Posterior predictive replicates :math:`x^{rep}_{sn} \sim p(x \mid z_n^s, g^s)`.

    The model is replayed on the stored draws of ``samples`` (local and global sites) and
    every observed site's distribution is sampled, so the likelihood is read from the
    model's own trace (nothing re-typed). Returns ``(replicates, observed)``: per observed
    site, arrays of shape (S, N, ...) and (N, ...).
    """
    if samples.samples is None:
        raise ValueError("replicate needs importance samples drawn with return_samples=True")
    model, guide, x = inputs.model, inputs.guide, inputs.x
    values = samples.samples
    num, n = samples.num_samples, samples.num_data
    chunk = chunk_size or default_chunk_size(x.shape[1])
    out = _Replicates((num, n), _numpy_dtype(x.dtype))
    with scoring_session(model, guide, inputs.rows, seed=seed, vectorize=samples.vectorized) as scorer:
        # without a shared global draw (globals_once=False) each sample has its own g^s
        shared = samples.globals_once or not samples.global_sites
        for first in [0] if shared else range(num):
            s_idx = np.arange(num) if shared else np.array([first])
            gvals = {k: values[k][first] for k in samples.global_sites}
            draw = GlobalDraw(gvals, x.new_zeros(()), x.new_zeros(()), _replay_trace(gvals))
            n_block = max(1, min(n, chunk // len(s_idx)))
            for start in range(0, n, n_block):
                rows = torch.arange(start, min(start + n_block, n), device=x.device)
                sel = torch.as_tensor(s_idx, device=x.device)
                local = {k: values[k][sel][:, rows] for k in samples.local_sites}
                if len(s_idx) > 1 and scorer.vectorize:
                    ((_, model_trace, _),) = scorer.traces(rows, len(s_idx), draw, replay=_replay_trace(local))
                    out.add(model_trace, s_idx, rows, particle=True)
                    continue
                for j, s in enumerate(s_idx):
                    one = _replay_trace({k: v[j] for k, v in local.items()})
                    ((_, model_trace, _),) = scorer.traces(rows, 1, draw, replay=one)
                    out.add(model_trace, np.array([s]), rows, particle=False)
    return out.reps, out.obs


def _numpy_dtype(dtype: torch.dtype) -> type:
    return np.float32 if dtype in (torch.float16, torch.bfloat16, torch.float32) else np.float64


class _Replicates:
    """Collects replicated and observed values of every observed site, block by block."""

    def __init__(self, shape: tuple[int, int], dtype: type) -> None:
        self.shape = shape
        self.dtype = dtype
        self.reps: dict[str, np.ndarray] = {}
        self.obs: dict[str, np.ndarray] = {}

    def add(self, model_trace: Trace, s_idx: np.ndarray, rows: torch.Tensor, *, particle: bool) -> None:
        r = rows.cpu().numpy()
        for name, site in _observed(model_trace).items():
            data = site["value"]
            event = tuple(data.shape[1:])
            if name not in self.reps:
                self.reps[name] = np.empty(self.shape + event, dtype=self.dtype)
                self.obs[name] = np.empty(self.shape[1:] + event, dtype=self.dtype)
            draw = site["fn"].sample().reshape((len(s_idx), len(r)) + event)
            self.reps[name][np.ix_(s_idx, r)] = draw.cpu().numpy()
            self.obs[name][r] = data.cpu().numpy()
