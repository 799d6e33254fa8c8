r"""The records the scoring engine returns: a global draw, one block of local terms, all weights."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from pyro.poutine.trace_struct import Trace

__all__ = ["GlobalDraw", "ImportanceChunk", "ImportanceSamples"]


@dataclass(frozen=True)
class GlobalDraw:
    """One draw :math:`g \\sim q(g)` of the global sites, replayed into every chunk.

    Attributes
    ----------
    values : dict of str to Tensor
        The sampled value of each global site, by name (its event shape; no batch dims).
    log_prior : Tensor, scalar
        :math:`\\log p(g)`: the model's global sites' unscaled log-densities at ``values``.
    log_q : Tensor, scalar
        :math:`\\log q(g)`: the guide's global sites' log-densities at ``values``.
    trace : pyro.poutine.Trace
        A trace holding only the guide's global sample sites (what ``poutine.replay`` needs).
    """

    values: dict[str, torch.Tensor]
    log_prior: torch.Tensor
    log_q: torch.Tensor
    trace: Trace = field(repr=False)

    @property
    def log_weight(self) -> torch.Tensor:
        """:math:`\\log p(g) - \\log q(g)` (0 for a model without global sites)."""
        return self.log_prior - self.log_q


@dataclass(frozen=True)
class ImportanceChunk:
    """Local terms for ``S`` samples of the points ``rows`` (one block of the (S, N) arrays).

    Attributes
    ----------
    rows : LongTensor of shape (n,)
        Row numbers of the points in the evaluated data.
    log_likelihood : Tensor of shape (S, n)
        :math:`\\log p(x_n \\mid z_n^s, g)`, observed sites summed.
    log_prior : Tensor of shape (S, n)
        :math:`\\log p(z_n^s \\mid g)`, latent local sites of the model summed.
    log_q : Tensor of shape (S, n)
        :math:`\\log q(z_n^s \\mid x_n, g)`, latent local sites of the guide summed.
    samples : dict of str to Tensor of shape (S, n, ...), or None
        The sampled local latent values by site, when requested.
    site_log_likelihood : dict of str to Tensor of shape (S, n), or None
        Each observed site's term, when the model has more than one observed site.
    """

    rows: torch.Tensor
    log_likelihood: torch.Tensor
    log_prior: torch.Tensor
    log_q: torch.Tensor
    samples: dict[str, torch.Tensor] | None = None
    site_log_likelihood: dict[str, torch.Tensor] | None = None

    @property
    def local_log_weights(self) -> torch.Tensor:
        """:math:`\\log p(x_n, z_n^s \\mid g) - \\log q(z_n^s \\mid x_n, g)`, shape (S, n)."""
        return self.log_likelihood + self.log_prior - self.log_q


@dataclass(frozen=True)
class ImportanceSamples:
    r"""Per-point importance log weights of :math:`S` draws from the guide.

    For data point :math:`n` and sample :math:`s`, with :math:`z_n^s \sim q(z \mid x_n, g^s)`
    and :math:`g^s \sim q(g)` (one :math:`g` for all :math:`s` when ``globals_once``):

    .. math::

        \log w_n^s = \log p(x_n \mid z_n^s, g^s) + \log p(z_n^s \mid g^s)
            - \log q(z_n^s \mid x_n, g^s) + \tfrac1N\big(\log p(g^s) - \log q(g^s)\big).

    Attributes
    ----------
    log_weights : Tensor of shape (S, N)
        :math:`\log w_n^s` above: local log weight plus the per-point share of the global one.
        ``logsumexp(log_weights, 0) - log S`` is the IWAE estimate per point, whose sum over
        points is the data-set bound of :mod:`bayesvae.scoring`.
    log_likelihood : Tensor of shape (S, N)
        :math:`\log p(x_n \mid z_n^s, g^s)`: the observed sites' unscaled log-densities,
        summed over event dimensions.
    log_prior : Tensor of shape (S, N)
        :math:`\log p(z_n^s \mid g^s)`: the model's local latent sites.
    log_q : Tensor of shape (S, N)
        :math:`\log q(z_n^s \mid x_n, g^s)`: the guide's local latent sites.
    global_log_prior : Tensor of shape (S,)
        :math:`\log p(g^s)` (zeros without global sites; one value repeated if ``globals_once``).
    global_log_q : Tensor of shape (S,)
        :math:`\log q(g^s)`.
    samples : dict of str to Tensor, or None
        With ``return_samples=True``: each local latent site's values, shape (S, N, ...), and
        each global site's values, shape (S, ...) (repeated if ``globals_once``).
    local_sites : tuple of str
        Names of the local latent sites (in guide order).
    global_sites : tuple of str
        Names of the global latent sites.
    observed_sites : tuple of str
        Names of the observed sites.
    globals_once : bool
        Whether one global draw was shared by all samples.
    vectorized : bool
        Whether samples were drawn in a particle plate (else one at a time).
    site_log_likelihood : dict of str to Tensor of shape (S, N), or None
        Each observed site's :math:`\log p`, when the model has more than one observed site
        (their sum is ``log_likelihood``).
    """

    log_weights: torch.Tensor
    log_likelihood: torch.Tensor
    log_prior: torch.Tensor
    log_q: torch.Tensor
    global_log_prior: torch.Tensor
    global_log_q: torch.Tensor
    samples: dict[str, torch.Tensor] | None
    local_sites: tuple[str, ...]
    global_sites: tuple[str, ...]
    observed_sites: tuple[str, ...]
    globals_once: bool
    vectorized: bool
    site_log_likelihood: dict[str, torch.Tensor] | None = None

    @property
    def num_samples(self) -> int:
        """:math:`S`."""
        return int(self.log_weights.shape[0])

    @property
    def num_data(self) -> int:
        """:math:`N`."""
        return int(self.log_weights.shape[1])

    @property
    def local_log_weights(self) -> torch.Tensor:
        """:math:`\\log p(x_n, z_n^s \\mid g^s) - \\log q(z_n^s \\mid x_n, g^s)`, shape (S, N)."""
        return self.log_likelihood + self.log_prior - self.log_q

    @property
    def global_log_weights(self) -> torch.Tensor:
        """:math:`\\log p(g^s) - \\log q(g^s)`, shape (S,)."""
        return self.global_log_prior - self.global_log_q

    def iwae(self) -> torch.Tensor:
        """Per-point IWAE estimate :math:`\\log \\frac1S \\sum_s w_n^s`, shape (N,)."""
        return torch.logsumexp(self.log_weights, 0) - math.log(self.num_samples)
