"""The report's sections: one builder per section, from computed results to text, tables and figures.

Each builder takes the :class:`~bayesvae.report.compute.ReportResults` and the figure
resolution and returns a :class:`~bayesvae.report.render.Section` (or ``None`` when it has
nothing to show); :data:`SECTIONS` lists them in the order of the report. Builders compute
nothing: they describe and draw what the compute step returned.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pandas as pd

from bayesvae.report.compute import ReportResults
from bayesvae.report.render import Section, fmt, png

__all__ = ["SECTIONS", "summary", "psis", "posterior_predictive", "training", "latent_space", "generative", "prior", "settings"]

_PSIS_LABELS = {
    "share_khat_gt_threshold": "share of points with k-hat > {t:g}",
    "share_khat_0.5_to_threshold": "share with 0.5 <= k-hat <= {t:g}",
    "share_khat_lt_0.5": "share with k-hat < 0.5 (exact included)",
    "share_exact": "share with constant weights (exact posterior)",
    "share_undetermined": "share with no fitted tail",
    "khat_median": "median k-hat (finite values)",
    "khat_max": "largest finite k-hat",
    "log_px_psis": "mean PSIS log p(x)",
    "log_px_iwae": "mean IWAE log p(x) (raw weights)",
    "psis_minus_iwae": "PSIS minus IWAE (nats per point)",
    "ess_median": "median effective sample size of the smoothed weights",
    "num_samples": "draws per point S",
}


def _metrics_table(frame: pd.DataFrame) -> pd.DataFrame:
    from bayesvae.evaluation import METRICS

    row = frame.iloc[0]
    return pd.DataFrame(
        {"value": [fmt(row[c]) for c in frame.columns], "meaning": [METRICS.get(c, "") for c in frame.columns]},
        index=pd.Index(list(frame.columns), name="metric"),
    )


def summary(r: ReportResults, dpi: int) -> Section:
    """Evaluation metrics per data point."""
    s = Section("Summary")
    s.paragraphs.append(
        (f"Evaluated on {r.num_rows} points with {r.num_columns} columns; {r.num_samples} importance samples per point. log p(x) is the importance-weighted (IWAE) estimate with its standard error over points.", "")
    )
    s.tables.append(("Evaluation metrics (per data point)", _metrics_table(r.metrics)))
    return s


def _verdict_class(diag: Any) -> str:
    shares = diag.shares()
    if shares["bad"] > 0.1:
        return "bad"
    if shares["bad"] > 0 or shares["ok"] > 0.1:
        return "ok"
    return "good"


def psis(r: ReportResults, dpi: int) -> Section:
    """Pareto-k-hat of the importance weights: verdict, table, histogram."""
    from bayesvae import plots

    diag = r.pareto
    values = diag.summary()
    labels = {k: v.format(t=diag.threshold) for k, v in _PSIS_LABELS.items()}
    table = pd.DataFrame(
        {"value": [fmt(values[k]) for k in labels]}, index=pd.Index(list(labels.values()), name="PSIS diagnostic")
    )
    s = Section("Is the variational posterior trustworthy?")
    s.paragraphs.append((diag.verdict(), f"verdict {_verdict_class(diag)}"))
    s.paragraphs.append(
        ("Pareto k-hat of the importance weights p(x, z) / q(z | x) per point (Yao, Vehtari, Simpson and Gelman 2018, arXiv:1802.02538; Vehtari et al. 2024, arXiv:1507.02646): below 0.5 the weights have finite variance; above 0.7 importance-weighted estimates are unreliable and the guide misses posterior mass.", "")
    )
    s.tables.append(("Pareto-smoothed importance sampling", table))
    s.figures.append(("khat", "Histogram of k-hat over data points.", png(plots.plot_khat(diag), dpi)))
    return s


def posterior_predictive(r: ReportResults, dpi: int) -> Section:
    """Posterior predictive p-values: verdict, extreme statistics, figures."""
    from bayesvae import plots

    ppc = r.ppc
    s = Section("Posterior predictive checks")
    s.paragraphs.append((ppc.verdict(), "verdict " + ("bad" if ppc.fails else "good")))
    s.paragraphs.append(
        (f"{r.ppc_samples} replicated data sets x_rep ~ p(x | z), z ~ q(z | x_n), one per draw; p-value = Pr(T(x_rep) >= T(x)) for each column's mean and variance and for the correlation discrepancy (Gelman et al., BDA3 ch. 6.3). A statistic is extreme when p <= {ppc.alpha / 2:g} or p >= {1 - ppc.alpha / 2:g} (correlation: p <= {ppc.alpha:g}).", "")
    )
    extreme = ppc.extreme()
    if len(extreme):
        s.tables.append(("Extreme statistics (at most 15 shown)", extreme.head(15).set_index(["statistic", "column"])))
    s.figures.append(("ppc_statistics", "Observed statistics (dots) against the 95% interval of the replicates.", png(plots.plot_ppc_statistics(ppc), dpi)))
    s.figures.append(("ppc_columns", "Observed (black) against replicated (grey) ECDFs of the columns with the most extreme p-values.", png(plots.plot_ppc_columns(ppc), dpi)))
    return s


def training(r: ReportResults, dpi: int) -> Section | None:
    """The ELBO curves (fits with a history only)."""
    from types import SimpleNamespace

    from bayesvae import plots

    if r.history is None:
        return None
    s = Section("Training")
    fig = plots.plot_history(SimpleNamespace(history=r.history))
    s.figures.append(("history", "ELBO per data point during training (and on the validation data).", png(fig, dpi)))
    return s


def latent_space(r: ReportResults, dpi: int) -> Section:
    """Active units, KL per unit, the 2-D embedding and traversals."""
    from bayesvae import plots

    lat = r.latents
    s = Section("Latent space")
    s.paragraphs.append(
        (f"{lat.num_active} active units (variance over points of the posterior mean above {lat.threshold:g}; Burda et al. 2016). KL per unit: {', '.join(f'{k}: {v}' for k, v in lat.kl_method.items())}.", "")
    )
    s.figures.append(("kl_per_dimension", "KL(q(z_u | x) || p(z_u)) per latent unit, sorted; active units in green.", png(plots.plot_kl_per_dimension(summary=lat), dpi)))
    caption = "Posterior means in 2-D" + (", coloured by label." if r.labels is not None else ".")
    s.figures.append(("embedding", caption, png(plots.plot_latent_embedding(summary=lat, labels=r.labels), dpi)))
    if r.traversals is not None:
        s.figures.append(("traversals", "Decoded means along each of the most active units (5%-95% range of the posterior means), other units at the first point's posterior mean.", png(plots.plot_latent_traversals(r.traversals), dpi)))
    return s


def generative(r: ReportResults, dpi: int) -> Section | None:
    """Reconstructions and prior samples (VAEs only)."""
    from bayesvae import plots

    if r.prior_samples is None:
        return None
    s = Section("Reconstructions and samples")
    if r.reconstructions is not None:
        s.figures.append(("reconstructions", "Inputs (top) and E[x | z = E_q z] (bottom).", png(plots.plot_reconstructions(r.reconstructions), dpi)))
    s.figures.append(("prior_samples", "E[x | z] for z drawn from the prior.", png(plots.plot_prior_samples(r.prior_samples), dpi)))
    return s


def prior(r: ReportResults, dpi: int) -> Section | None:
    """The prior's own summaries (each drawn by its kind) and the global sites' intervals."""
    from bayesvae import plots

    s = Section("Prior")
    for item in r.prior_summaries:
        fig = plots.plot_prior_summary(item)
        if fig is None:
            s.tables.append((item.caption or item.title, item.frame))
        else:
            s.figures.append((item.name, item.caption or item.title, png(fig, dpi)))
    if r.global_intervals is not None:
        s.figures.append(("global_sites", "Global latent sites: posterior mean and 90% interval of each element.", png(plots.plot_global_sites(r.global_intervals), dpi)))
    return s if s.figures or s.tables else None


def columns(r: ReportResults, dpi: int) -> Section | None:
    """A table model: each column's log-likelihood share and its check by column type."""
    if r.columns is None:
        return None
    from bayesvae import plots

    s = Section("Columns")
    s.paragraphs.append(("Held-out log-likelihood by column (nats per row, original scale) and the posterior predictive check by column type: mean and variance of continuous and count columns, the frequency of every level of categorical and binary columns.", ""))
    s.tables.append(("Log-likelihood share of each column", r.columns["log_likelihood"]))
    ppc = r.columns["ppc"]
    s.tables.append(("Posterior predictive check by column", ppc))
    freq = ppc[ppc["statistic"] == "frequency"]
    if len(freq):
        s.figures.append(("column_levels", "Observed and replicated frequency of each level (bars: observed; points: replicated mean with 2 sd).", png(plots.plot_level_frequencies(freq), dpi)))
    return s


def settings(r: ReportResults, dpi: int) -> Section:
    """Model, guide, fit and report settings and versions, as JSON."""
    s = Section("Settings")
    s.code.append(json.dumps(r.settings, indent=2, default=str))
    return s


#: The report's sections, in order.
SECTIONS: tuple[Callable[[ReportResults, int], Section | None], ...] = (
    summary,
    psis,
    posterior_predictive,
    training,
    latent_space,
    generative,
    prior,
    columns,
    settings,
)
