r"""Prediction on a fit: posterior summaries of the latents, samples, reconstructions.

All three read the *same* model and guide through Pyro traces, so they work for a user's
hand-written functions as for the package's models:

* :func:`encode` -- per row, the mean and standard deviation of each local latent under
  :math:`q(z \mid x)` (exact for a Gaussian guide site, else a Monte Carlo estimate);
* :func:`sample` -- draws :math:`x \sim p(x) = \int p(x \mid z) p(z) dz` from the model
  (observed sites sampled instead of conditioned, ``poutine.uncondition``);
* :func:`reconstruct` -- :math:`\mathbb E[x \mid z]` at :math:`z \sim q(z \mid x)`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyro
import torch
from pyro import poutine

from bayesvae.convention import Call, prepare_rows
from bayesvae.scaling import UseRows

__all__ = ["encode", "sample", "reconstruct"]

_MC_DRAWS = 256


def _seeded(seed: int | None, device: torch.device):
    if seed is None:
        import contextlib

        return contextlib.nullcontext()
    ctx = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])

    class _Seed:
        def __enter__(self):
            ctx.__enter__()
            torch.manual_seed(seed)

        def __exit__(self, *exc):
            return ctx.__exit__(*exc)

    return _Seed()


def _plate(fit: Any) -> str:
    return getattr(fit.config, "data_plate", None) or "data"


def _local(site: dict, plate: str) -> bool:
    return any(f.name == plate for f in site["cond_indep_stack"])


def _traces(fit: Any, rows):
    kw = {"index": torch.arange(rows.num_data, device=rows.x.device), "num_data": rows.num_data, **rows.covariates}
    x = rows.x[:]  # a DiskArray (data on disk) is read whole here: the outputs have one row per row
    with pyro.validation_enabled(False), torch.no_grad(), UseRows(kw["index"], rows.num_data):
        guide_tr = poutine.trace(Call(fit.guide)).get_trace(x, **kw)
        model_tr = poutine.trace(poutine.replay(Call(fit.model), trace=guide_tr)).get_trace(x, **kw)
    return guide_tr, model_tr


def _index_of(data: Any, n: int) -> pd.Index:
    return data.index if isinstance(data, pd.DataFrame) else pd.RangeIndex(n)


def encode(fit: Any, data: Any, *, seed: int | None = 0) -> pd.DataFrame:
    """Posterior mean and sd of every local latent per row, as a DataFrame.

    Parameters
    ----------
    fit : FitResult
    data : Tensor, ndarray or DataFrame of shape (N, d)
        Rows to encode (a DataFrame's index is kept).

    Returns
    -------
    DataFrame of shape (N, 2 * total latent width)
        Columns ``"{site}[{j}] mean"`` and ``"{site}[{j}] sd"``.
    """
    rows = prepare_rows(fit.model, fit.guide, data)
    plate = _plate(fit)
    columns: dict[str, np.ndarray] = {}
    with _seeded(seed, rows.x.device):
        guide_tr, _ = _traces(fit, rows)
        for name, site in guide_tr.nodes.items():
            if site["type"] != "sample" or site["is_observed"] or not _local(site, plate):
                continue
            fn = site["fn"]
            try:
                mean, sd = fn.mean, fn.stddev
            except NotImplementedError:
                draws = fn.sample((_MC_DRAWS,))
                mean, sd = draws.mean(0), draws.std(0)
            mean = mean.reshape(rows.num_data, -1).cpu().numpy()
            sd = sd.reshape(rows.num_data, -1).cpu().numpy()
            for j in range(mean.shape[1]):
                columns[f"{name}[{j}] mean"] = mean[:, j]
                columns[f"{name}[{j}] sd"] = sd[:, j]
    if not columns:
        raise ValueError(f"the guide has no local latent site inside the data plate {plate!r}")
    return pd.DataFrame(columns, index=_index_of(data, rows.num_data))


def _frame(values: torch.Tensor, fit: Any, index: pd.Index | None = None) -> Any:
    cols = fit.data.columns
    array = values.detach().cpu().numpy()
    if cols is not None and array.ndim == 2 and array.shape[1] == len(cols):
        return pd.DataFrame(array, columns=list(cols), index=index)
    return values.detach()


def _observed(trace) -> list[tuple[str, dict]]:
    return [(name, s) for name, s in trace.nodes.items() if s["type"] == "sample" and s["is_observed"]]


def sample(fit: Any, n: int, *, seed: int | None = 0) -> Any:
    """``n`` draws of ``x`` from the fitted model: a DataFrame with the training columns when known.

    Global latents are drawn from the guide (the approximate posterior), local latents from
    the prior, observations from the likelihood.
    """
    from bayesvae._checks import positive_int

    positive_int("n", n)
    own = getattr(fit.model, "sample_frame", None)
    if callable(own):
        return own(n, seed=seed)
    if getattr(getattr(fit.model, "likelihood", None), "schema", None) is not None:  # a table: labels, scale, dtypes
        from bayesvae.tabular import sample_frame

        return sample_frame(fit.model, n, seed=seed)
    d = fit.data.data_dim
    ref = next((p for m in [fit.model, fit.guide] if isinstance(m, torch.nn.Module) for p in m.parameters()), None)
    dev = ref.device if ref is not None else torch.device("cpu")
    x = torch.zeros(n, d, device=dev)
    kw = {"index": torch.arange(n, device=dev), "num_data": n}
    plate = _plate(fit)
    with _seeded(seed, dev), pyro.validation_enabled(False), torch.no_grad():
        guide_tr = poutine.trace(Call(fit.guide)).get_trace(x, **kw)
        conditioned = poutine.trace(poutine.replay(Call(fit.model), trace=guide_tr)).get_trace(x, **kw)
        observed = {name for name, _ in _observed(conditioned)}
        keep = {name for name, s in guide_tr.nodes.items() if s["type"] == "sample" and not _local(s, plate)}
        trace = poutine.trace(poutine.uncondition(poutine.replay(Call(fit.model), trace=_subtrace(guide_tr, keep)))).get_trace(x, **kw)
    obs = [(name, s) for name, s in trace.nodes.items() if name in observed and _local(s, plate)]
    if not obs:
        raise ValueError("the model has no observed site inside the data plate to sample")
    values = torch.cat([s["value"].reshape(n, -1) for _, s in obs], dim=-1)
    return _frame(values, fit)


def _subtrace(trace, keep: set[str]):
    sub = trace.copy()
    for name in list(sub.nodes):
        if name not in keep and sub.nodes[name]["type"] == "sample":
            sub.remove_node(name)
    return sub


def reconstruct(fit: Any, data: Any, *, seed: int | None = 0) -> Any:
    """The likelihood's mean :math:`\\mathbb E[x \\mid z]` at one draw :math:`z \\sim q(z \\mid x)` per row."""
    rows = prepare_rows(fit.model, fit.guide, data)
    with _seeded(seed, rows.x.device):
        _, model_tr = _traces(fit, rows)
    obs = _observed(model_tr)
    parts = []
    for _, site in obs:
        try:
            parts.append(site["fn"].mean.reshape(rows.num_data, -1))
        except NotImplementedError:
            parts.append(site["fn"].sample((_MC_DRAWS,)).float().mean(0).reshape(rows.num_data, -1))
    return _frame(torch.cat(parts, dim=-1), fit, _index_of(data, rows.num_data) if isinstance(data, pd.DataFrame) else None)
