"""A diagnostic report of a fit: one self-contained HTML file and its Markdown twin.

:func:`report` evaluates a fit on data, diagnoses its guide (Pareto-:math:`\\hat k`), runs
posterior predictive checks and draws the figures of :mod:`bayesvae.plots`; it writes

* ``<path>`` -- HTML with every image embedded as a ``data:`` URI, inline CSS and no
  script or external resource (it opens offline, in any browser);
* ``<stem>.md`` -- the same content in Markdown, with the images as PNG files in
  ``<stem>_files/`` beside it.

The work is split in three: :mod:`~bayesvae.report.compute` computes every result once,
:mod:`~bayesvae.report.sections` turns results into sections (text, tables, figures), and
:mod:`~bayesvae.report.render` writes the sections as HTML and Markdown.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from pathlib import Path
from typing import Any

from bayesvae.report.render import Section

__all__ = ["report", "Section"]


def _check(num_samples: int, ppc_samples: int, dpi: int, out: Path) -> None:
    from bayesvae.diagnostics.psis import MIN_SAMPLES
    from bayesvae.scoring import check_positive_int

    check_positive_int("num_samples", num_samples)
    check_positive_int("ppc_samples", ppc_samples)
    check_positive_int("dpi", dpi)
    if num_samples < MIN_SAMPLES:
        raise ValueError(
            f"the report's PSIS diagnostic needs num_samples >= {MIN_SAMPLES} importance samples per point; got {num_samples}. Use --num-samples {MIN_SAMPLES} or more (1000 is typical)."
        )
    if ppc_samples < 2:
        raise ValueError(f"ppc_samples must be at least 2 replicated data sets, got {ppc_samples}")
    if out.is_dir():
        raise ValueError(f"report path {str(out)!r} is a directory; pass a file name such as {str(out / 'report.html')!r}")
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"report path must end in .html (the Markdown twin gets .md); got {str(out)!r}")


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
    posterior means, traversals); reconstructions and prior samples; and the prior's own
    summaries (:meth:`~bayesvae.models.Prior.summaries`: IBP feature usage, ARD relevance
    scales, group effects) with the intervals of the global sites. The sections are the
    builders of :data:`bayesvae.report.sections.SECTIONS`, drawn from one compute step
    (:func:`bayesvae.report.compute.compute`). The HTML holds no script and loads nothing
    over the network.

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
    from bayesvae.diagnostics.inference_data import require_arviz
    from bayesvae.report.compute import compute, version
    from bayesvae.report.render import write_html, write_markdown
    from bayesvae.report.sections import SECTIONS

    out = Path(path)
    _check(num_samples, ppc_samples, dpi, out)
    require_arviz()
    started = time.perf_counter()
    results = compute(fit, x, num_samples=num_samples, seed=seed, groups=groups, labels=labels, ppc_samples=ppc_samples)
    sections = [s for s in (build(results, dpi) for build in SECTIONS) if s is not None]
    elapsed = time.perf_counter() - started
    meta = f"Generated {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by bayesvae {version()} in {elapsed:.1f} s."
    out.parent.mkdir(parents=True, exist_ok=True)
    write_html(out, title, meta, sections)
    write_markdown(out.with_suffix(".md"), title, meta, sections)
    return out
