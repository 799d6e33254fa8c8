"""A diagnostic report of a fit: one self-contained HTML file and its Markdown twin.

:func:`report` evaluates a fit on data, diagnoses its guide (Pareto-:math:`\\hat k`), runs
posterior predictive checks and draws the figures of :mod:`bayesvae.plots`; it writes

* ``<path>`` -- HTML with every image embedded as a ``data:`` URI, inline CSS and no
  script or external resource (it opens offline, in any browser);
* ``<stem>.md`` -- the same content in Markdown, with the images as PNG files in
  ``<stem>_files/`` beside it.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["report", "Section"]

logger = logging.getLogger(__name__)

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table.bayesvae-table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
table.bayesvae-table th, table.bayesvae-table td { border: 1px solid #ccc; padding: .25em .6em; }
table.bayesvae-table th { background: #f2f2f2; }
.verdict { padding: .7em 1em; border-left: 5px solid #999; background: #f7f7f7; }
.verdict.good { border-color: #1b9e77; } .verdict.ok { border-color: #d95f02; }
.verdict.bad { border-color: #d7191c; }
figure { margin: 1em 0; } figcaption { font-size: .85em; color: #555; }
img { max-width: 100%; height: auto; }
.meta { color: #666; font-size: .9em; } pre { background: #f7f7f7; padding: .6em; overflow-x: auto; }
"""


@dataclass
class Section:
    """One part of the report: a heading, paragraphs, tables and figures, in that order."""

    title: str
    paragraphs: list[tuple[str, str]] = field(default_factory=list)  # (text, css class)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (caption, frame)
    figures: list[tuple[str, str, bytes]] = field(default_factory=list)  # (name, caption, png)
    code: list[str] = field(default_factory=list)


def _png(fig: Any, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _fmt(value: Any) -> str:
    """A number for a table: integers plainly, floats to 4 significant digits, NaN empty."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    v = float(value)
    if np.isnan(v):
        return ""
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == round(v) and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.4g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.4f}".rstrip("0").rstrip(".")


def _metrics_table(frame: pd.DataFrame) -> pd.DataFrame:
    from bayesvae.evaluation import METRICS

    row = frame.iloc[0]
    table = pd.DataFrame(
        {"value": [_fmt(row[c]) for c in frame.columns], "meaning": [METRICS.get(c, "") for c in frame.columns]},
        index=pd.Index(list(frame.columns), name="metric"),
    )
    return table


def _psis_table(diag: Any) -> pd.DataFrame:
    s = diag.summary()
    labels = {
        "share_khat_gt_threshold": f"share of points with k-hat > {diag.threshold:g}",
        "share_khat_0.5_to_threshold": f"share with 0.5 <= k-hat <= {diag.threshold:g}",
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
    return pd.DataFrame(
        {"value": [_fmt(s[k]) for k in labels]}, index=pd.Index(list(labels.values()), name="PSIS diagnostic")
    )


def _verdict_class(diag: Any) -> str:
    shares = diag.shares()
    if shares["bad"] > 0.1:
        return "bad"
    if shares["bad"] > 0 or shares["ok"] > 0.1:
        return "ok"
    return "good"


def _prior_of(fit: Any) -> Any:
    return getattr(getattr(fit, "model", None), "prior", None)


def _isinstance_lazy(obj: Any, module: str, name: str) -> bool:
    """``isinstance(obj, module.name)``, False when that module or class does not exist."""
    import importlib

    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    return isinstance(obj, cls)


def _is_vae(fit: Any) -> bool:
    model = getattr(fit, "model", None)
    return hasattr(model, "reconstruct") and hasattr(getattr(model, "prior", None), "decoder_input")


def report(
    fit: Any,
    x: Any,
    path: str | os.PathLike,
    *,
    title: str = "bayesvae report",
    num_samples: int = 1000,
    seed: int = 0,
    groups: Any = None,
    labels: Any = None,
    ppc_samples: int = 100,
    dpi: int = 80,
) -> Path:
    r"""Write a self-contained HTML diagnostic report of a fit and its Markdown twin.

    Parameters
    ----------
    fit : FitResult or (model, guide)
        A fitted model and guide.
    x : Dataset, Tensor, ndarray or DataFrame of shape (N, d)
        Data to evaluate on (usually held out). A :class:`~bayesvae.datasets.Dataset`'s
        labels colour the latent embedding.
    path : str or PathLike
        The HTML file to write (its folder is created). The Markdown twin is written next
        to it with the same stem and suffix ``.md``, its images in ``<stem>_files/``.
    title : str, default "bayesvae report"
        Heading of the report.
    num_samples : int, default 1000
        Importance samples per point for :math:`\log p(x)` and Pareto-:math:`\hat k`
        (at least 25).
    seed : int, default 0
        Seed for every draw.
    groups : array-like of int, optional
        Group labels, for priors that use them.
    labels : array-like, optional
        Labels to colour the latent embedding (default: ``x.labels`` when present).
    ppc_samples : int, default 100
        Replicated data sets for the posterior predictive checks.
    dpi : int, default 80
        Resolution of the embedded PNG figures.

    Returns
    -------
    pathlib.Path
        The HTML file written.

    Notes
    -----
    Sections: a summary table of :func:`bayesvae.evaluation.evaluate`; the PSIS diagnostic
    (:func:`bayesvae.diagnostics.psis_diagnostic`) with its verdict in words and the
    :math:`\hat k` histogram; posterior predictive checks
    (:func:`bayesvae.diagnostics.posterior_predictive_check`) with their verdict; the
    training curves; the latent space (KL per unit with active units, a 2-D embedding of
    posterior means, traversals); reconstructions and prior samples; and, when the prior is
    an IBP, ARD or group prior, feature usage, relevance scales or global effects with
    intervals. The HTML holds no script and loads nothing over the network.

    Examples
    --------
    >>> import bayesvae
    >>> from bayesvae.report import report
    >>> data = bayesvae.datasets.digits(binarize=True)
    >>> model = bayesvae.VAE(prior=bayesvae.GaussianPrior(2), likelihood=bayesvae.Bernoulli(),
    ...                      decoder=bayesvae.MLP(2, 64, hidden=(32,)))
    >>> guide = bayesvae.AmortizedGuide(model, hidden=(32,))
    >>> fit = bayesvae.fit(model, guide, data, epochs=1)
    >>> path = report(fit, data, "/tmp/bayesvae_report.html", num_samples=50)  # doctest: +SKIP
    """
    from bayesvae.diagnostics._common import draw_importance_samples, read_inputs, scoring_mode
    from bayesvae.diagnostics.inference_data import assemble, require_arviz
    from bayesvae.diagnostics.latents import latent_summary
    from bayesvae.diagnostics.ppc import PPCResult
    from bayesvae.diagnostics.psis import MIN_SAMPLES, diagnose_weights
    from bayesvae.evaluation import evaluate
    from bayesvae.evaluation._inputs import check_positive_int

    check_positive_int("num_samples", num_samples)
    check_positive_int("ppc_samples", ppc_samples)
    check_positive_int("dpi", dpi)
    if num_samples < MIN_SAMPLES:
        raise ValueError(
            f"the report's PSIS diagnostic needs num_samples >= {MIN_SAMPLES} importance samples per point; got {num_samples}. Use --num-samples {MIN_SAMPLES} or more (1000 is typical)."
        )
    if ppc_samples < 2:
        raise ValueError(f"ppc_samples must be at least 2 replicated data sets, got {ppc_samples}")
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"report path {str(out)!r} is a directory; pass a file name such as {str(out / 'report.html')!r}")
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"report path must end in .html (the Markdown twin gets .md); got {str(out)!r}")
    require_arviz()
    from bayesvae import plots

    started = time.perf_counter()
    inputs = read_inputs(fit, x, groups)
    view = plots._as_fit(fit)  # a FitResult, or a (model, guide) pair seen as one
    if labels is None:
        labels = inputs.labels
    n, d = inputs.x.shape
    sections: list[Section] = []

    # Evaluation -------------------------------------------------------------------------------
    with scoring_mode(inputs.model):
        metrics = evaluate(fit, inputs.x, num_samples=num_samples, seed=seed, groups=inputs.groups)
    summary = Section("Summary")
    summary.paragraphs.append(
        (f"Evaluated on {n} points with {d} columns; {num_samples} importance samples per point. log p(x) is the importance-weighted (IWAE) estimate with its standard error over points.", "")
    )
    summary.tables.append(("Evaluation metrics (per data point)", _metrics_table(metrics)))
    sections.append(summary)

    # PSIS ---------------------------------------------------------------------------------------
    iw = draw_importance_samples(inputs, num_samples=num_samples, seed=seed)
    diag = diagnose_weights(iw)
    del iw

    psis = Section("Is the variational posterior trustworthy?")
    psis.paragraphs.append((diag.verdict(), f"verdict {_verdict_class(diag)}"))
    psis.paragraphs.append(
        ("Pareto k-hat of the importance weights p(x, z) / q(z | x) per point (Yao, Vehtari, Simpson and Gelman 2018, arXiv:1802.02538; Vehtari et al. 2024, arXiv:1507.02646): below 0.5 the weights have finite variance; above 0.7 importance-weighted estimates are unreliable and the guide misses posterior mass.", "")
    )
    psis.tables.append(("Pareto-smoothed importance sampling", _psis_table(diag)))
    psis.figures.append(("khat", "Histogram of k-hat over data points.", _png(plots.plot_khat(diag), dpi)))
    sections.append(psis)

    # Posterior predictive checks -----------------------------------------------------------------
    has_globals = bool(getattr(_prior_of(view), "global_sites", lambda: ())())
    iw_pp = draw_importance_samples(
        inputs, num_samples=ppc_samples, seed=seed + 1, globals_once=not has_globals, return_samples=True
    )
    from bayesvae.diagnostics._common import replicate

    reps, observed = replicate(inputs, iw_pp, seed=seed + 2)
    idata = assemble(view, inputs, iw_pp, reps, observed, seed=seed)
    del iw_pp, reps
    obs_name = next(iter(observed))
    ppc = PPCResult.from_inference_data(idata, var_name=obs_name)
    del idata
    check = Section("Posterior predictive checks")
    check.paragraphs.append((ppc.verdict(), "verdict " + ("bad" if ppc.fails else "good")))
    check.paragraphs.append(
        (f"{ppc_samples} replicated data sets x_rep ~ p(x | z), z ~ q(z | x_n), one per draw; p-value = Pr(T(x_rep) >= T(x)) for each column's mean and variance and for the correlation discrepancy (Gelman et al., BDA3 ch. 6.3). A statistic is extreme when p <= {ppc.alpha / 2:g} or p >= {1 - ppc.alpha / 2:g} (correlation: p <= {ppc.alpha:g}).", "")
    )
    extreme = ppc.extreme()
    if len(extreme):
        check.tables.append(("Extreme statistics (at most 15 shown)", extreme.head(15).set_index(["statistic", "column"])))
    check.figures.append(("ppc_statistics", "Observed statistics (dots) against the 95% interval of the replicates.", _png(plots.plot_ppc_statistics(ppc), dpi)))
    check.figures.append(("ppc_columns", "Observed (black) against replicated (grey) ECDFs of the columns with the most extreme p-values.", _png(plots.plot_ppc_columns(ppc), dpi)))
    sections.append(check)
    del ppc

    # Training -----------------------------------------------------------------------------------
    history = getattr(view, "history", None)
    if isinstance(history, pd.DataFrame) and len(history):
        train = Section("Training")
        train.figures.append(("history", "ELBO per data point during training (and on the validation data).", _png(plots.plot_history(view), dpi)))
        sections.append(train)

    # Latent space ---------------------------------------------------------------------------------
    lat = latent_summary((inputs.model, inputs.guide), inputs.x, seed=seed, groups=inputs.groups)
    latent = Section("Latent space")
    latent.paragraphs.append(
        (f"{lat.num_active} active units (variance over points of the posterior mean above {lat.threshold:g}; Burda et al. 2016). KL per unit: {', '.join(f'{k}: {v}' for k, v in lat.kl_method.items())}.", "")
    )
    latent.figures.append(("kl_per_dimension", "KL(q(z_u | x) || p(z_u)) per latent unit, sorted; active units in green.", _png(plots.plot_kl_per_dimension(summary=lat), dpi)))
    if labels is not None and len(np.asarray(labels)) != n:
        logger.warning("labels have %d entries but the data %d rows; the embedding is drawn without them", len(np.asarray(labels)), n)
        labels = None
    latent.figures.append(("embedding", "Posterior means in 2-D" + (", coloured by label." if labels is not None else "."), _png(plots.plot_latent_embedding(summary=lat, labels=labels), dpi)))
    if _is_vae(view):
        latent.figures.append(("traversals", "Decoded means along each of the most active units (5%-95% range of the posterior means), other units at the first point's posterior mean.", _png(plots.plot_latent_traversals(view, inputs.x, summary=lat), dpi)))
    sections.append(latent)

    # Generative model -------------------------------------------------------------------------------
    if _is_vae(view):
        gen = Section("Reconstructions and samples")
        if hasattr(view.guide, "posterior"):
            gen.figures.append(("reconstructions", "Inputs (top) and E[x | z = E_q z] (bottom).", _png(plots.plot_reconstructions(view, inputs.x), dpi)))
        gen.figures.append(("prior_samples", "E[x | z] for z drawn from the prior.", _png(plots.plot_prior_samples(view, seed=seed, groups=_sample_groups(inputs.groups, 25)), dpi)))
        sections.append(gen)

    # Priors ---------------------------------------------------------------------------------------
    prior = _prior_of(view)
    prior_section = Section("Prior")
    if _isinstance_lazy(prior, "bayesvae.models.ibp", "IBPPrior"):
        prior_section.figures.append(("ibp_usage", "IBP feature usage against the fitted and prior expected frequencies.", _png(plots.plot_feature_usage(view, inputs.x), dpi)))
    if _isinstance_lazy(prior, "bayesvae.models.hierarchical.ard", "ARDPrior"):
        prior_section.figures.append(("ard_relevance", "ARD relevance scales with 90% intervals.", _png(plots.plot_relevance(view), dpi)))
    if has_globals and getattr(view.guide, "globals", None) is not None:
        prior_section.figures.append(("global_sites", "Global latent sites: posterior mean and 90% interval of each element.", _png(plots.plot_global_sites(view, seed=seed), dpi)))
    if prior_section.figures:
        sections.append(prior_section)

    # Settings -----------------------------------------------------------------------------------
    settings = Section("Settings")
    settings.code.append(json.dumps(_settings(view, inputs, num_samples, ppc_samples, seed), indent=2, default=str))
    sections.append(settings)

    elapsed = time.perf_counter() - started
    meta = f"Generated {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by bayesvae {_version()} in {elapsed:.1f} s."
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_html(out, title, meta, sections)
    _write_markdown(out.with_suffix(".md"), title, meta, sections)
    return out


def _sample_groups(groups: Any, num: int) -> Any:
    """``num`` group labels for prior samples: the data's first ones, repeated as needed."""
    if groups is None:
        return None
    reps = -(-num // groups.shape[0])
    return groups.repeat(reps)[:num]


def _version() -> str:
    import bayesvae

    return bayesvae.__version__


def _settings(fit: Any, inputs: Any, num_samples: int, ppc_samples: int, seed: int) -> dict[str, Any]:
    import pyro
    import torch

    from bayesvae.diagnostics.inference_data import require_arviz

    def describe(part: Any) -> Any:
        return part.to_config() if hasattr(part, "to_config") else type(part).__name__

    config = getattr(fit, "config", None)
    return {
        "model": describe(inputs.model),
        "guide": describe(inputs.guide),
        "fit": config.to_dict() if config is not None else None,
        "data": {"rows": int(inputs.x.shape[0]), "columns": int(inputs.x.shape[1])},
        "report": {"num_samples": num_samples, "ppc_samples": ppc_samples, "seed": seed},
        "versions": {
            "bayesvae": _version(),
            "torch": str(torch.__version__),
            "pyro": pyro.__version__,
            "arviz": require_arviz().__version__,
        },
    }


def _write_html(path: Path, title: str, meta: str, sections: list[Section]) -> None:
    from bayesvae.compare import to_html

    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="meta">{esc(meta)}</p>',
    ]
    for s in sections:
        parts.append(f"<h2>{esc(s.title)}</h2>")
        for text, cls in s.paragraphs:
            parts.append(f'<p class="{esc(cls)}">{esc(text)}</p>' if cls else f"<p>{esc(text)}</p>")
        for caption, frame in s.tables:
            parts.append(f"<p><strong>{esc(caption)}</strong></p>")
            parts.append(to_html(frame))
        for name, caption, png in s.figures:
            data = base64.b64encode(png).decode("ascii")
            parts.append(
                f'<figure id="fig-{esc(name)}"><img alt="{esc(caption)}" src="data:image/png;base64,{data}"><figcaption>{esc(caption)}</figcaption></figure>'
            )
        for block in s.code:
            parts.append(f"<pre>{esc(block)}</pre>")
    parts.append("</body></html>")
    _atomic_write(path, "\n".join(parts))


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _write_markdown(path: Path, title: str, meta: str, sections: list[Section]) -> None:
    from bayesvae.compare import to_markdown

    folder = path.with_name(f"{path.stem}_files")
    lines = [f"# {title}", "", f"_{meta}_", ""]
    wrote_images = False
    for s in sections:
        lines += [f"## {s.title}", ""]
        for text, cls in s.paragraphs:
            lines += [f"> {text}" if cls.startswith("verdict") else text, ""]
        for caption, frame in s.tables:
            safe = frame.rename(index=_md_escape_any, columns=_md_escape_any).map(_md_escape_any)
            lines += [f"**{caption}**", "", to_markdown(safe), ""]
        for name, caption, png in s.figures:
            if not wrote_images:
                folder.mkdir(parents=True, exist_ok=True)
                wrote_images = True
            (folder / f"{name}.png").write_bytes(png)
            alt = caption.replace("[", "\\[").replace("]", "\\]")
            lines += [f"![{alt}]({folder.name}/{name}.png)", "", f"*{_md_escape(caption)}*", ""]
        for block in s.code:
            lines += ["```json", block, "```", ""]
    _atomic_write(path, "\n".join(lines))


def _md_escape_any(value: Any) -> Any:
    return _md_escape(value) if isinstance(value, str) else value


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)

