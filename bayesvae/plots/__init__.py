"""Figures of a fit (matplotlib; every function returns the Figure and shows nothing).

Figures are built as ``matplotlib.figure.Figure`` objects, not through pyplot's global state,
so a report that draws dozens of them leaks nothing; save them with ``fig.savefig(path)``.
Each function *draws* a result object computed elsewhere (a
:class:`~bayesvae.diagnostics.LatentSummary`, :class:`~bayesvae.diagnostics.PPCResult`,
:class:`~bayesvae.diagnostics.ParetoDiagnostic`, a record of
:mod:`bayesvae.diagnostics.decoded`, a :class:`~bayesvae.models.PriorSummary`); where it also
accepts a fit, it first calls the public function that computes that object.

* training: :func:`plot_history` (training / validation ELBO per epoch);
* the latent space: :func:`plot_kl_per_dimension`, :func:`plot_latent_embedding`,
  :func:`plot_latent_traversals`;
* the generative model: :func:`plot_reconstructions`, :func:`plot_prior_samples`;
* diagnostics: :func:`plot_khat`, :func:`plot_ppc_columns`, :func:`plot_ppc_statistics`,
  :func:`plot_level_frequencies` (a table model's categorical columns);
* priors: :func:`plot_feature_usage` (IBP), :func:`plot_relevance` (ARD),
  :func:`plot_global_sites` (any global latent: scales, group effects) with intervals, and
  :func:`plot_prior_summary` (the figure of a prior's summary, by its kind).
"""

from __future__ import annotations

from bayesvae.plots._base import image_grid
from bayesvae.plots.checks import (
    plot_khat,
    plot_level_frequencies,
    plot_ppc_columns,
    plot_ppc_statistics,
)
from bayesvae.plots.model import (
    plot_history,
    plot_kl_per_dimension,
    plot_latent_embedding,
    plot_latent_traversals,
    plot_prior_samples,
    plot_reconstructions,
)
from bayesvae.plots.priors import (
    plot_feature_usage,
    plot_global_sites,
    plot_prior_summary,
    plot_relevance,
)

__all__ = [
    "plot_history",
    "plot_reconstructions",
    "plot_prior_samples",
    "image_grid",
    "plot_kl_per_dimension",
    "plot_latent_embedding",
    "plot_latent_traversals",
    "plot_khat",
    "plot_ppc_columns",
    "plot_ppc_statistics",
    "plot_level_frequencies",
    "plot_feature_usage",
    "plot_relevance",
    "plot_global_sites",
    "plot_prior_summary",
]
