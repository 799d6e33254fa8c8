r"""Priors p(z) for latent-variable models, as swappable parts of a Pyro model.

A prior owns two kinds of random variables:

* **global** sites, sampled once per model call *outside* the data plate (IBP sticks,
  ARD scales, group means). A guide infers them with a non-amortized variational family.
* **local** sites, one per data point, sampled *inside* the data plate (``z``; IBP
  indicators). A guide infers them with an amortized encoder q(z | x).

Each site is declared by a :class:`GlobalSite` / :class:`LocalSite` record so that guides can
mirror it without reading the prior's code; the record's ``family`` names the variational
family the guide builds for it.

Two further hooks tell the layers above what a prior needs when a fit is *scored* and
*reported*, so that no module above ``models/`` names a concrete prior class:

* :meth:`Prior.scoring_context` -- a context manager entered while a model is scored
  (the IBP prior scores its relaxed indicators as the discrete model);
* :meth:`Prior.summaries` -- the prior's own report sections, each a :class:`PriorSummary`
  (a table and how to draw it: the ARD relevance scales, the IBP feature usage, the group
  effects and their pooling).

:meth:`Prior.make_decoder` builds the decoder a prior needs (an MLP from its
``latent_dim``; ARD's decoder starts after the first weight matrix, which it holds).
"""

from __future__ import annotations

import contextlib
import math
from abc import ABCMeta, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence, register_kl

from bayesvae._checks import positive_int
from bayesvae._registry import register
from bayesvae.nn import MLP

__all__ = [
    "Prior",
    "GlobalSite",
    "LocalSite",
    "PriorSummary",
    "SUMMARY_KINDS",
    "GaussianPrior",
    "StandardNormal",
    "Z",
]

#: Name of the Gaussian latent site.
Z = "z"


@dataclass(frozen=True)
class GlobalSite:
    """A global latent site, sampled once outside the data plate.

    Attributes
    ----------
    name : str
        Pyro site name.
    shape : tuple of int
        Event shape of the site (the whole site is one event).
    family : str
        Variational family a guide should use: ``"normal"`` (real support),
        ``"lognormal"`` (positive), ``"beta"`` (unit interval).
    init_loc : float
        Initial value of the guide's location, in the family's unconstrained space
        (for ``"beta"``: initial log-concentrations).
    init_scale : float
        Initial scale of the guide (unconstrained space).
    """

    name: str
    shape: tuple[int, ...]
    family: str = "normal"
    init_loc: float = 0.0
    init_scale: float = 0.1


@dataclass(frozen=True)
class LocalSite:
    """A local (per data point) latent site, sampled inside the data plate.

    Attributes
    ----------
    name : str
        Pyro site name.
    dim : int
        Event size (the site's value has shape ``(batch, dim)``).
    family : str
        Variational family of the amortized head, e.g. ``"normal"`` (diagonal Gaussian).
    conditions_on : tuple of str
        Names of earlier local sites whose sampled values the guide's head for this site
        also receives (e.g. ``q(z1 | x, z2)`` in a two-level hierarchy).
    """

    name: str
    dim: int
    family: str = "normal"
    conditions_on: tuple[str, ...] = ()


#: How a renderer draws a :class:`PriorSummary`, and the columns its ``frame`` has:
#: ``"usage"`` (IBP feature usage: ``feature``, ``usage``, ``fraction_used``, ``expected_pi``,
#: ``prior_pi``, ``active``), ``"relevance"`` (ARD: ``tau_mean``, ``tau_lower``,
#: ``tau_upper``, ``active``), ``"intervals"`` (posterior mean and interval per element:
#: ``site``, ``element``, ``mean``, ``lower``, ``upper``) and ``"table"`` (shown as a table).
SUMMARY_KINDS = ("usage", "relevance", "intervals", "table")


@dataclass(frozen=True)
class PriorSummary:
    """One report section a prior asks for: a table and how to draw it.

    Attributes
    ----------
    name : str
        Identifier, unique within a report (a figure's id and file name), e.g.
        ``"ard_relevance"``.
    title : str
        Short heading, e.g. ``"ARD relevance scales"``.
    kind : str
        One of :data:`SUMMARY_KINDS`: which figure draws ``frame``.
    frame : pandas.DataFrame
        The numbers, with the columns its ``kind`` names.
    caption : str, default ""
        One sentence saying what is shown.
    """

    name: str
    title: str
    kind: str
    frame: pd.DataFrame
    caption: str = ""

    def __post_init__(self) -> None:
        if self.kind not in SUMMARY_KINDS:
            raise ValueError(f"PriorSummary kind must be one of {SUMMARY_KINDS}, got {self.kind!r}")
        if not isinstance(self.frame, pd.DataFrame):
            raise TypeError(f"PriorSummary frame must be a pandas DataFrame, got {type(self.frame).__name__}")


class Prior(nn.Module, metaclass=ABCMeta):
    """Base class of priors; a subclass overrides the hooks below.

    ``latent_dim`` is the width of the decoder's input. Hooks:

    * :meth:`global_sites`, :meth:`local_sites` -- the site declarations.
    * :meth:`sample_globals` -- ``pyro.sample`` every global site (called outside the plate).
    * :meth:`sample_locals` -- ``pyro.sample`` every local site (called inside the plate).
    * :meth:`decoder_input` -- map sampled values to the decoder's input.
    * :meth:`scoring_context` -- what to enter while the model is scored (nothing by default).
    * :meth:`summaries` -- the prior's own report sections (none by default).
    * :meth:`make_decoder` -- the decoder network this prior needs (an MLP by default).
    """

    latent_dim: int

    def global_sites(self) -> tuple[GlobalSite, ...]:
        """Declarations of the global sites (none by default)."""
        return ()

    @abstractmethod
    def local_sites(self) -> tuple[LocalSite, ...]:
        """Declarations of the local sites."""

    def sample_globals(self, *, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sample the global sites; ``like`` gives device and dtype."""
        return {}

    @abstractmethod
    def sample_locals(
        self,
        batch_size: int,
        globals_: dict[str, torch.Tensor],
        *,
        like: torch.Tensor,
        groups: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Sample the local sites for ``batch_size`` points (inside the data plate)."""

    def decoder_input(
        self, locals_: dict[str, torch.Tensor], globals_: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The decoder's input ``(batch, latent_dim)``; by default the single local site."""
        (site,) = self.local_sites()
        return locals_[site.name]

    def scoring_context(self) -> contextlib.AbstractContextManager[Any]:
        """A context manager entered while a model with this prior is scored.

        Evaluation (log p(x), ELBO parts, importance weights, replicates) enters it so that
        every log-density in a trace is a proper one of the model that was meant, e.g. the
        discrete indicators of a relaxed IBP prior. The default changes nothing.
        """
        return contextlib.nullcontext()

    def summaries(
        self, guide: Any, x: torch.Tensor | None = None, *, groups: torch.Tensor | None = None
    ) -> tuple[PriorSummary, ...]:
        """The prior's own report sections, computed from a fitted guide (none by default).

        Parameters
        ----------
        guide : callable
            The fitted guide (e.g. an :class:`~bayesvae.AmortizedGuide`).
        x : Tensor of shape (N, d), optional
            Validated data on the model's device, for summaries that encode data.
        groups : Tensor of shape (N,), optional
            Group labels of ``x``, for priors that use them.

        Returns
        -------
        tuple of PriorSummary
            In the order a report shows them.
        """
        return ()

    def make_decoder(
        self, out_features: int, *, hidden: Sequence[int] = (), activation: str = "relu"
    ) -> nn.Module:
        """The decoder this prior needs: by default ``MLP(latent_dim, out_features, hidden=)``.

        Parameters
        ----------
        out_features : int
            Width of the decoder's output (the likelihood's ``num_outputs``).
        hidden : sequence of int, default ()
            Hidden widths from the latent side to the data side.
        activation : str, default "relu"
            Hidden-layer nonlinearity.
        """
        return MLP(self.latent_dim, out_features, hidden=tuple(hidden), activation=activation)

    @abstractmethod
    def to_config(self) -> dict[str, Any]:
        """JSON-serializable constructor arguments, with ``"type"``."""


class StandardNormal(dist.Independent):
    r""":math:`\mathcal N(0, I_L)` per batch element: ``Normal(0, 1).to_event(1)`` with cheap arithmetic.

    The same distribution as the generic one (a subclass of ``Independent(Normal)``), with
    :math:`\log p(z) = -\tfrac12 \lVert z\rVert^2 - \tfrac L2 \log 2\pi` written directly and the
    KL from a diagonal Gaussian registered in closed form,

    .. math:: \mathrm{KL}(\mathcal N(\mu, \mathrm{diag}\,\sigma^2) \,\|\, \mathcal N(0, I))
        = \tfrac12 \sum_l (\mu_l^2 + \sigma_l^2 - 1 - 2 \log \sigma_l)

    (Kingma & Welling 2014, App. B) -- fewer tensor operations per training step than the
    generic Normal--Normal KL against expanded zeros and ones.
    """

    def __init__(self, batch_size: int, latent_dim: int, *, like: torch.Tensor, validate_args=None) -> None:
        zero = like.new_zeros(()).expand(batch_size, latent_dim)
        super().__init__(dist.Normal(zero, zero + 1.0), 1, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(StandardNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.base_dist = self.base_dist.expand(batch_shape + self.event_shape)
        new.reinterpreted_batch_ndims = 1
        super(Independent, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        dim = value.shape[-1]
        out = value.pow(2).sum(-1).mul(-0.5) - 0.5 * dim * math.log(2 * math.pi)
        shape = torch.broadcast_shapes(out.shape, self.batch_shape)
        return out.expand(shape) if out.shape != shape else out


@register_kl(Independent, StandardNormal)
def _kl_diagonal_standard(q: Independent, p: StandardNormal) -> torch.Tensor:
    if not isinstance(q.base_dist, Normal) or q.reinterpreted_batch_ndims != 1:
        # anything else: the generic rule for Independent pairs
        return kl_divergence(q.base_dist, p.base_dist).sum(-1)
    loc, scale = q.base_dist.loc, q.base_dist.scale
    return 0.5 * (loc.pow(2) + scale.pow(2) - 1.0).sum(-1) - scale.log().sum(-1)


@register
class GaussianPrior(Prior):
    r"""Standard normal prior :math:`z_n \sim \mathcal N(0, I_L)`, one event per data point.

    Parameters
    ----------
    latent_dim : int
        Dimension :math:`L` of :math:`z`.

    Notes
    -----
    The site ``"z"`` is ``Normal(0, 1).to_event(1)``, so ``TraceMeanField_ELBO`` uses the
    analytic Gaussian KL against a diagonal-Gaussian guide (Kingma & Welling 2014, App. B).

    References
    ----------
    .. [1] D. P. Kingma and M. Welling, "Auto-Encoding Variational Bayes", ICLR 2014,
       arXiv:1312.6114.
    """

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = positive_int("latent_dim", latent_dim)

    def local_sites(self) -> tuple[LocalSite, ...]:
        return (LocalSite(Z, self.latent_dim, "normal"),)

    def sample_locals(self, batch_size, globals_, *, like, groups=None):
        return {Z: pyro.sample(Z, StandardNormal(batch_size, self.latent_dim, like=like))}

    def to_config(self) -> dict[str, Any]:
        return {"type": "GaussianPrior", "latent_dim": self.latent_dim}
