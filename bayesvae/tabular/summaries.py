r"""Tables out of a tabular VAE: samples as DataFrames, per-column scores and checks.

Every number is on the original scale of the columns (standardization and log transforms
undone, with their Jacobians in densities) and every label is the original label.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from pyro import poutine

from bayesvae._checks import positive_int
from bayesvae.convention import Call
from bayesvae.models.columns import LABELLED, Schema
from bayesvae.models.likelihoods import cell_log_prob
from bayesvae.tabular._common import encode, schema_of, to_original, unpack
from bayesvae.tabular._particles import draw_particles

__all__ = ["sample_frame", "column_log_likelihood", "ppc_summary"]


@torch.no_grad()
def sample_frame(model: Any, num_samples: int, *, schema: Schema | None = None, seed: int | None = None) -> pd.DataFrame:
    r"""Draw rows from the model's prior predictive as a DataFrame of the training frame's kind.

    :math:`z \sim p(z)`, :math:`x \sim p(x \mid z)`, decoded by the schema: the input's column
    names and order, dtypes, category labels (a pandas Categorical keeps its categories) and
    original scale.

    Parameters
    ----------
    model : VAE
        A model whose likelihood is ``Columns.infer(frame)``.
    num_samples : int
        Rows to draw.
    schema : Schema, optional
        Decoding to use (default: the likelihood's).
    seed : int, optional
        Seeds the draws without changing the global RNG state.

    Returns
    -------
    DataFrame of shape (num_samples, d)
    """
    positive_int("num_samples", num_samples)
    schema = schema or schema_of(model)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        x = model.sample(num_samples)["x"]
    return schema.decode(x)


@torch.no_grad()
def column_log_likelihood(fit_or_pair: Any, frame: pd.DataFrame, *, num_particles: int = 100, seed: int = 0) -> pd.Series:
    r"""Each column's share of the held-out log-likelihood, per row, in nats.

    .. math::

        \ell_j = \frac1N \sum_{n:\, x_{nj}\ \text{observed}} \sum_{k=1}^K \tilde w_{nk}
                 \log p(x_{nj} \mid z_{nk}),

    with the self-normalized importance weights of :func:`bayesvae.impute` (an estimate of
    :math:`E_{p(z \mid x_{n,\text{obs}})}[\log p(x_{nj} \mid z)]`) and densities of the
    *original* values (the standardization's :math:`-\log s` and a log-normal column's
    :math:`-\log v` included). By :math:`\log p(x) = E_{p(z \mid x)}[\log p(x \mid z)] -
    \mathrm{KL}(p(z \mid x) \,\|\, p(z))`, the shares add up to the mean held-out
    :math:`\log p(x_{n,\text{obs}})` plus the mean posterior-to-prior KL: a column with a low
    share is one the model predicts poorly from the latent code. Discrete columns are
    probabilities (:math:`\ell_j \le 0`); continuous ones densities in the column's units.

    Parameters
    ----------
    fit_or_pair : FitResult or (model, guide)
    frame : DataFrame
        Held-out rows with the schema's columns (missing cells allowed).
    num_particles : int
        Importance samples per row.
    seed : int
        Seeds the draws.

    Returns
    -------
    Series indexed by column name.
    """
    positive_int("num_particles", num_particles)
    model, guide, schema = unpack(fit_or_pair)
    x, mask = encode(model, schema, frame, "frame")
    particles = draw_particles(model, guide, x, mask, num_particles=num_particles, seed=seed)
    lp = cell_log_prob(model.likelihood.distribution(particles.out), x) + schema.cell_log_jacobian(x)  # (K, N, d)
    lp = torch.where(mask, lp, lp.new_zeros(()))
    share = (particles.weights.unsqueeze(-1) * lp).sum(0).sum(0) / x.shape[0]
    return pd.Series(share.cpu().double().numpy(), index=list(schema.names), name="log_likelihood")


@torch.no_grad()
def ppc_summary(fit_or_pair: Any, frame: pd.DataFrame, *, num_replicates: int = 20, seed: int = 0) -> pd.DataFrame:
    r"""Posterior predictive check of each column by its type, on the original scale.

    For each replicate :math:`r`, every row gets :math:`z_n \sim q(z \mid x_{n,\text{obs}})` and
    :math:`x^{(r)}_n \sim p(x \mid z_n)`; the statistics are computed on the cells observed in
    ``frame`` (so missing cells do not enter either side):

    * continuous and count columns: mean and variance;
    * bernoulli and categorical columns: the frequency of every level (not of its code).

    Parameters
    ----------
    fit_or_pair : FitResult or (model, guide)
    frame : DataFrame
        Rows with the schema's columns.
    num_replicates : int
        Replicated data sets.
    seed : int
        Seeds the draws.

    Returns
    -------
    DataFrame
        One row per (column, statistic, level): ``column``, ``kind``, ``statistic``
        (``"mean"``, ``"variance"`` or ``"frequency"``), ``level`` (the label; None for
        numeric statistics), ``observed``, ``replicated`` (mean over replicates),
        ``replicated_sd``, ``p_value`` (the share of replicates with a statistic at least the
        observed one; values near 0 or 1 flag misfit).
    """
    positive_int("num_replicates", num_replicates)
    model, guide, schema = unpack(fit_or_pair)
    x, mask = encode(model, schema, frame, "frame")
    guide_fn, model_fn = Call(guide), Call(model)
    reps = []
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for _ in range(num_replicates):
            q = poutine.trace(guide_fn).get_trace(x, mask=mask)
            p = poutine.trace(poutine.replay(model_fn, trace=q)).get_trace(x, mask=mask)
            reps.append(model.likelihood.distribution(p.nodes["_RETURN"]["value"]).sample())
    rep = torch.stack(reps).cpu().double().numpy()  # (R, N, d)
    xv, seen = x.cpu().double().numpy(), mask.cpu().numpy()
    rows = []
    for j, spec in enumerate(schema.columns):
        obs = seen[:, j]
        if spec.kind in LABELLED:
            for code, level in enumerate(spec.levels):
                o = float(np.mean(xv[obs, j] == code))
                r = np.mean(rep[:, obs, j] == code, axis=1)
                rows.append(_row(spec, "frequency", level, o, r))
            continue
        o_vals = to_original(spec, xv[obs, j])
        r_vals = to_original(spec, rep[:, obs, j])
        rows.append(_row(spec, "mean", None, float(o_vals.mean()), r_vals.mean(axis=1)))
        rows.append(_row(spec, "variance", None, float(o_vals.var()), r_vals.var(axis=1)))
    return pd.DataFrame(rows)


def _row(spec, statistic, level, observed, replicated) -> dict[str, Any]:
    return {
        "column": spec.name,
        "kind": spec.kind,
        "statistic": statistic,
        "level": level,
        "observed": observed,
        "replicated": float(replicated.mean()),
        "replicated_sd": float(replicated.std(ddof=1)) if replicated.size > 1 else float("nan"),
        "p_value": float(np.mean(replicated >= observed)),
    }
