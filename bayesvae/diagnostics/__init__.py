"""Diagnostics of a fitted latent-variable model: is the variational posterior trustworthy?

* :func:`to_inference_data` -- draws from the guide, replicates, pointwise log-likelihoods and
  importance weights as an ArviZ ``InferenceData`` (one builder per group).
* :func:`psis_diagnostic` -- Pareto-:math:`\\hat k` of each point's importance weights
  (Yao et al. 2018), the share of points with :math:`\\hat k > 0.7`, and the PSIS-corrected
  :math:`\\log \\hat p(x)` next to the raw IWAE estimate.
* :func:`posterior_predictive_check` -- per-column and correlation posterior predictive
  p-values of replicated data.
* :func:`latent_summary` -- posterior means, KL per latent unit and unit activity.
"""

from bayesvae.diagnostics.inference_data import (
    Group,
    inference_attrs,
    log_likelihood_group,
    observed_data_group,
    posterior_group,
    posterior_predictive_group,
    sample_stats_group,
    to_inference_data,
)
from bayesvae.diagnostics.latents import LatentSummary, latent_summary
from bayesvae.diagnostics.ppc import PPCResult, posterior_predictive_check, ppc_pvalues
from bayesvae.diagnostics.psis import (
    EXACT_RTOL,
    MIN_SAMPLES,
    ParetoDiagnostic,
    PSISResult,
    diagnose_weights,
    pareto_smooth,
    psis_diagnostic,
    sample_size_threshold,
)

__all__ = [
    "to_inference_data",
    "Group",
    "posterior_group",
    "posterior_predictive_group",
    "observed_data_group",
    "log_likelihood_group",
    "sample_stats_group",
    "inference_attrs",
    "psis_diagnostic",
    "diagnose_weights",
    "pareto_smooth",
    "ParetoDiagnostic",
    "PSISResult",
    "sample_size_threshold",
    "MIN_SAMPLES",
    "EXACT_RTOL",
    "posterior_predictive_check",
    "ppc_pvalues",
    "PPCResult",
    "latent_summary",
    "LatentSummary",
]
