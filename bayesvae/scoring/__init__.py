r"""The scoring engine of evaluation and diagnostics: per-point log importance weights from traces.

Every density an estimator needs -- :math:`\log p(x_n \mid z_n, g)`, :math:`\log p(z_n \mid g)`,
:math:`\log q(z_n \mid x_n, g)`, :math:`\log p(g)`, :math:`\log q(g)` -- is read from Pyro traces
of the *same* model and guide that were fitted: the guide is traced, the model is replayed on
the guide's values, and each site contributes its *unscaled* ``fn.log_prob(value)`` (not the
trace's ``log_prob_sum``, which carries the minibatch scale ``N / batch``), summed over event
dimensions and over every batch dimension except the data plate's. Nothing is re-typed, so a
user's hand-written Pyro model and guide work unchanged.

Sites are classified by the plate they sit in:

* **local** -- inside the plate named ``"data"`` (:data:`~bayesvae.convention.DATA_PLATE`); one value per data
  point. Latent local sites form :math:`z_n`; observed sites (which must be local) form
  :math:`x_n`.
* **global** -- every latent site outside that plate (IBP sticks, ARD scales, group effects):
  :math:`g`.

The estimator with global latents
---------------------------------
With global latents :math:`g` the joint :math:`\log p(x_{1:N})` does not factorize over data
points, so "the log-likelihood of one point" needs a convention. This module uses the bound

.. math::

    \log p(x_{1:N}) \;\ge\; \mathbb E_{q(g)}\Big[\log \frac{p(g)}{q(g)}
        + \sum_{n=1}^N \log \frac1K \sum_{k=1}^K
          \frac{p(x_n, z_{nk} \mid g)}{q(z_{nk} \mid x_n, g)}\Big],
    \qquad z_{nk} \sim q(z \mid x_n, g),

which is a valid lower bound for the *data set* (Jensen's inequality over :math:`g`, then the
IWAE bound of Burda et al. [1]_ for each :math:`\log p(x_n \mid g)`, the points being
conditionally independent given :math:`g`). One draw :math:`g \sim q(g)` is taken per estimate
(``globals_once=True``) and shared by all :math:`K` samples and all points; its log weight
:math:`\log p(g) - \log q(g)` (minus the global KL, in expectation) is reported separately and
its per-point share :math:`\frac1N (\log p(g) - \log q(g))` is added to every point's log weight,
so that the per-point terms sum to the data-set bound and are what model comparisons use.
Dropping the share gives :math:`\log p(x_n \mid g)` conditional on the draw, a plug-in estimate
of the posterior predictive :math:`\log p(x_n \mid x_{\text{train}})` when :math:`q(g)`
approximates the posterior of :math:`g` given the training data.

.. warning::

    Pyro's ``RenyiELBO`` (whose :math:`\alpha = 0` case is the IWAE bound) is not a per-point
    estimate once a model has global latents or a subsampled data plate: it weights whole
    traces with the *scaled* log-probabilities (global terms added once per particle, local
    terms multiplied by ``N / batch``), so its "per point" value depends on the batch size and
    mixes the global KL into every sample's weight. Use the per-point log weights here.

Vectorization
-------------
The :math:`S` samples are drawn in one call by wrapping model and guide in
``pyro.plate("_bayesvae_particles", S, dim=-(M + 1))`` (:math:`M` the model's plate nesting,
read from a first trace; 1 for the package's models), in chunks of at most ``chunk_size``
(sample, point) pairs so that memory stays bounded whatever :math:`S` and :math:`N` are.
Functions that do not broadcast over a leading particle dimension (e.g. ones that reshape by
``x.shape[0]``) are detected on the first chunk and evaluated one sample at a time instead.

What is scored
--------------
The estimators run in one scoring mode (:func:`scoring_session`): under ``torch.no_grad()``
with modules in eval mode, and a model whose prior has a scoring context
(``prior.scoring_context()``, or ``prior.discrete()`` -- the IBP prior's relaxed indicators)
is scored inside it: log-densities are those of the discrete model (:func:`evaluation_mode`).
Pyro's and torch's argument validation follow the caller's setting for the first row and the
first block, and are off for the rest (the data were validated once at the boundary).

Data and covariates
-------------------
What is scored is one :class:`~bayesvae.convention.Rows` record: the validated ``(N, d)``
data and its per-row covariates (group labels, ...), built once at the boundary by
:func:`~bayesvae.scoring.inputs.prepare`. Each block of rows is passed to model and guide as
``fn(x[rows], index=rows, num_data=N, **{name: value[rows]})`` through
:class:`~bayesvae.convention.Call`, each function receiving the keywords it accepts.

Modules
-------
* :mod:`~bayesvae.scoring.inputs` -- the boundary: :func:`resolve` a fit, :func:`prepare` data.
* :mod:`~bayesvae.scoring.scorer` -- :class:`TraceScorer` and :func:`scoring_session`.
* :mod:`~bayesvae.scoring.weights` -- :func:`importance_log_weights`.
* :mod:`~bayesvae.scoring.records` -- :class:`GlobalDraw`, :class:`ImportanceChunk`,
  :class:`ImportanceSamples`.
* :mod:`~bayesvae.scoring.chunks` -- block shapes and :func:`iter_importance_chunks`.
* :mod:`~bayesvae.scoring.sites` -- a site's unscaled per-point log-density.
* :mod:`~bayesvae.scoring.modes` -- :func:`evaluation_mode`, :func:`seeded`.

References
----------
.. [1] Y. Burda, R. Grosse and R. Salakhutdinov, "Importance Weighted Autoencoders",
   ICLR 2016, arXiv:1509.00519.
.. [2] E. Bingham et al., "Pyro: Deep Universal Probabilistic Programming", JMLR 20, 2019,
   arXiv:1810.09538.
"""

from __future__ import annotations

from bayesvae.convention import DATA_PLATE
from bayesvae.scoring.chunks import (
    DEFAULT_ELEMENTS,
    block_shape,
    default_chunk_size,
    iter_importance_chunks,
    row_blocks,
)
from bayesvae.scoring.inputs import as_rows, check_positive_int, merge_covariates, prepare, resolve
from bayesvae.scoring.modes import evaluation_mode, scoring_context, seeded
from bayesvae.scoring.records import GlobalDraw, ImportanceChunk, ImportanceSamples
from bayesvae.scoring.scorer import TraceScorer, scoring_session
from bayesvae.scoring.sites import (
    PARTICLES,
    SHAPE_ERRORS,
    plate_frame,
    reduce_log_prob,
    sample_sites,
    site_log_prob,
)
from bayesvae.scoring.weights import importance_log_weights

__all__ = [
    "DATA_PLATE",
    "PARTICLES",
    "DEFAULT_ELEMENTS",
    "SHAPE_ERRORS",
    "GlobalDraw",
    "ImportanceChunk",
    "ImportanceSamples",
    "TraceScorer",
    "scoring_session",
    "importance_log_weights",
    "iter_importance_chunks",
    "default_chunk_size",
    "block_shape",
    "row_blocks",
    "evaluation_mode",
    "scoring_context",
    "seeded",
    "resolve",
    "prepare",
    "as_rows",
    "merge_covariates",
    "check_positive_int",
    "plate_frame",
    "site_log_prob",
    "reduce_log_prob",
    "sample_sites",
]
