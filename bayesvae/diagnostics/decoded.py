r"""What a fitted decoder makes of latent values: reconstructions, prior samples, traversals.

Each function computes a small frozen record that :mod:`bayesvae.plots` draws, so figures
compute nothing and the numbers they show can be read and tested on their own:

* :func:`reconstructions` -- :math:`\mathbb E[x \mid z = \mathbb E_q[z \mid x]]` beside the data;
* :func:`prior_samples` -- :math:`\mathbb E[x \mid z]` for :math:`z \sim p(z)`;
* :func:`latent_traversals` -- decoded means along one latent unit at a time;
* :func:`global_site_intervals` -- posterior mean and central interval of every element of
  every global latent site, from draws of :math:`q(g)`.

Everything is decoded inside :func:`~bayesvae.evaluation.evaluation_mode`, so a prior with a
relaxed training mode (an IBP prior) is shown as the model that was meant
(:meth:`~bayesvae.models.Prior.scoring_context`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch

from bayesvae.data import as_tensor
from bayesvae.scoring import evaluation_mode

__all__ = [
    "fit_parts",
    "Reconstructions",
    "reconstructions",
    "PriorSamples",
    "prior_samples",
    "Traversals",
    "latent_traversals",
    "global_site_intervals",
    "main_site",
    "sample_groups",
]


def fit_parts(fit: Any) -> Any:
    """A FitResult as is; a ``(model, guide)`` pair as an object with ``model``, ``guide``,
    ``data = None`` and ``history = None``."""
    if isinstance(fit, (tuple, list)) and len(fit) == 2:
        return SimpleNamespace(model=fit[0], guide=fit[1], data=None, history=None)
    return fit


def _device_of(module: Any) -> torch.device:
    ref = next(iter(module.parameters()), None) if hasattr(module, "parameters") else None
    return ref.device if ref is not None else torch.device("cpu")


def _dtype_of(module: Any) -> torch.dtype:
    ref = next(iter(module.parameters()), None) if hasattr(module, "parameters") else None
    return ref.dtype if ref is not None and ref.is_floating_point() else torch.float32


def _image_shape(fit: Any) -> tuple[int, ...] | None:
    return getattr(getattr(fit, "data", None), "image_shape", None)


def _global_means(fit: Any) -> dict[str, torch.Tensor]:
    glob = getattr(fit.guide, "globals", None)
    if glob is None:
        return {}
    return {s.name: glob.distribution(s.name).mean for s in glob.sites}


def _is_vae(model: Any) -> bool:
    return hasattr(model, "reconstruct") and hasattr(getattr(model, "prior", None), "decoder_input")


@dataclass(frozen=True)
class Reconstructions:
    """Data rows and their decoded posterior means.

    Attributes
    ----------
    data : ndarray of shape (num, d)
        The first ``num`` rows of the data.
    reconstruction : ndarray of shape (num, d)
        :math:`\\mathbb E[x \\mid z = \\mathbb E_q[z \\mid x]]` (global sites at their posterior means).
    image_shape : tuple of int or None
        Shape of one image, when the rows are images.
    """

    data: np.ndarray
    reconstruction: np.ndarray
    image_shape: tuple[int, ...] | None


@torch.no_grad()
def reconstructions(fit: Any, data: Any, *, num: int = 10) -> Reconstructions:
    r"""Reconstruct the first ``num`` rows: decode the guide's posterior means.

    Parameters
    ----------
    fit : FitResult or (model, guide)
        A fit of a :class:`~bayesvae.VAE` with a guide that has ``posterior(x)`` (e.g.
        :class:`~bayesvae.AmortizedGuide`).
    data : Dataset, Tensor, ndarray or DataFrame of shape (N, d)
        Data.
    num : int, default 10
        Rows to reconstruct.

    Returns
    -------
    Reconstructions
        ``data``, ``reconstruction`` (both ``(num, d)``) and ``image_shape``.
    """
    fit = fit_parts(fit)
    x, _ = as_tensor(data, device=_device_of(fit.model), dtype=_dtype_of(fit.model))
    x = x[:num]
    with evaluation_mode(fit.model, fit.guide):
        q = fit.guide.posterior(x)
        means = {name: d.mean for name, d in q.items()}
        z = fit.model.prior.decoder_input(means, _global_means(fit))
        recon = fit.model.reconstruct(z)
    return Reconstructions(x.cpu().numpy(), recon.cpu().numpy(), _image_shape(fit))


@dataclass(frozen=True)
class PriorSamples:
    """Decoded means of draws from the prior.

    Attributes
    ----------
    mean : ndarray of shape (num, d)
        :math:`\\mathbb E[x \\mid z]` for :math:`z \\sim p(z)`.
    image_shape : tuple of int or None
        Shape of one image, when the rows are images.
    """

    mean: np.ndarray
    image_shape: tuple[int, ...] | None


@torch.no_grad()
def prior_samples(fit: Any, *, num: int = 25, seed: int = 0, groups: Any = None) -> PriorSamples:
    r"""Decode ``num`` draws from the prior: :math:`\mathbb E[x \mid z]`, :math:`z \sim p(z)`.

    Parameters
    ----------
    fit : FitResult or (model, guide)
        A fit of a :class:`~bayesvae.VAE` (``model.sample``).
    num : int, default 25
        Draws.
    seed : int, default 0
        Seeds torch's global RNG before drawing (``model.sample`` draws from it).
    groups : Tensor of shape (num,), optional
        One group label per draw, for priors that need them.

    Returns
    -------
    PriorSamples
        ``mean`` of shape ``(num, d)`` and ``image_shape``.
    """
    fit = fit_parts(fit)
    torch.manual_seed(seed)
    with evaluation_mode(fit.model, fit.guide):
        out = fit.model.sample(num) if groups is None else fit.model.sample(num, groups=groups)
    return PriorSamples(out["mean"].cpu().numpy(), _image_shape(fit))


@dataclass(frozen=True)
class Traversals:
    """Decoded means along one latent unit at a time.

    Attributes
    ----------
    site : str
        The local site traversed.
    units : list of int
        The units traversed (rows of the figure).
    values : list of ndarray of shape (num_steps,)
        The grid of each unit's values.
    decoded : list of ndarray of shape (num_steps, d)
        :math:`\\mathbb E[x \\mid z]` at each grid value.
    image_shape : tuple of int or None
        Shape of one image, when the rows are images.
    columns : sequence of str or None
        Column names of tabular data.
    """

    site: str
    units: list[int]
    values: list[np.ndarray]
    decoded: list[np.ndarray]
    image_shape: tuple[int, ...] | None
    columns: Sequence[str] | None


def main_site(summary: Any, site: str | None) -> str:
    """The local site to show: ``site`` if given (checked), else ``"z"`` or the first one."""
    if site is not None:
        if site not in summary.means:
            raise ValueError(f"no local latent site {site!r}; the fit's local sites are {list(summary.means)}")
        return site
    return "z" if "z" in summary.means else next(iter(summary.means))


@torch.no_grad()
def latent_traversals(
    fit: Any,
    x: Any,
    *,
    site: str | None = None,
    units: Sequence[int] | None = None,
    num_steps: int = 7,
    point: int = 0,
    max_units: int = 8,
    summary: Any = None,
    groups: Any = None,
) -> Traversals:
    r"""Decoded means along one latent unit at a time, the others fixed at a point's posterior mean.

    Unit :math:`u` of ``site`` moves over the 5%--95% range of the posterior means across
    the data (a range every prior fills, Gaussian or IBP); other sites and units stay at
    the posterior mean of row ``point``; global sites at their posterior means.

    Parameters
    ----------
    fit : FitResult or (model, guide)
        A fit of a :class:`~bayesvae.VAE` (``prior.decoder_input`` and ``reconstruct``).
    x : array-like of shape (N, d)
        Data whose posterior means set the range (unused when ``summary`` is given).
    site : str, optional
        Local site to traverse (default ``"z"`` or the first local site).
    units : sequence of int, optional
        Units to traverse (default: the ``max_units`` most active).
    num_steps : int, default 7
        Grid points per unit (at least 2).
    point : int, default 0
        Row whose posterior mean fixes the other units.
    max_units : int, default 8
        Most units shown by default.
    summary : LatentSummary, optional
        Precomputed :func:`~bayesvae.diagnostics.latent_summary` of ``x``.
    groups : array-like of int, optional
        Group labels, for priors that use them.

    Returns
    -------
    Traversals
        The units, their grids and the decoded means.
    """
    fit = fit_parts(fit)
    if not _is_vae(fit.model):
        raise TypeError(
            f"latent traversals need a bayesvae VAE (prior.decoder_input and reconstruct); got {type(fit.model).__name__}"
        )
    if num_steps < 2:
        raise ValueError(f"num_steps must be at least 2, got {num_steps}")
    if summary is None:
        from bayesvae.diagnostics.latents import latent_summary

        summary = latent_summary((fit.model, fit.guide), x, groups=groups, seed=0)
    name = main_site(summary, site)
    mu = summary.means[name]
    if not 0 <= point < len(mu):
        raise ValueError(f"point must be a row number in 0..{len(mu) - 1}, got {point}")
    if units is None:
        units = list(np.argsort(-summary.activity[name])[: min(max_units, mu.shape[1])])
    units = [int(u) for u in units]
    lo, hi = np.quantile(mu, [0.05, 0.95], axis=0)
    device, dtype = _device_of(fit.model), _dtype_of(fit.model)
    rows, values = [], []
    for u in units:
        grid = np.linspace(lo[u], hi[u], num_steps)
        values.append(grid)
        locals_ = {}
        for other, m in summary.means.items():
            ref = torch.as_tensor(m[point], device=device, dtype=dtype).expand(num_steps, -1).clone()
            if other == name:
                ref[:, u] = torch.as_tensor(grid, device=device, dtype=dtype)
            locals_[other] = ref
        with evaluation_mode(fit.model, fit.guide):
            z = fit.model.prior.decoder_input(locals_, _global_means(fit))
            rows.append(fit.model.reconstruct(z).cpu().numpy())
    columns = getattr(getattr(fit, "data", None), "columns", None)
    return Traversals(name, units, values, rows, _image_shape(fit), columns)


@torch.no_grad()
def global_site_intervals(
    fit: Any,
    *,
    sites: Sequence[str] | None = None,
    level: float = 0.9,
    num_draws: int = 2000,
    max_elements: int = 40,
    seed: int = 0,
) -> pd.DataFrame:
    r"""Posterior mean and central ``level`` interval of each global latent site's elements.

    Reads :math:`q(g)` from the guide's mean-field global part (``guide.globals``, as in
    :class:`~bayesvae.AmortizedGuide`); means and intervals are those of ``num_draws``
    draws (so any family works: normal, log-normal, Beta). Group effects, variance
    components, ARD scales and IBP sticks all appear here.

    Parameters
    ----------
    fit : FitResult or (model, guide)
        A fit whose guide has a mean-field global part.
    sites : sequence of str, optional
        Global sites to summarize (default: all).
    level : float, default 0.9
        Mass of the central interval, in (0, 1).
    num_draws : int, default 2000
        Draws of :math:`q(g)` per site.
    max_elements : int, default 40
        Elements kept per site (the first ones, in C order).
    seed : int, default 0
        Seed of the draws (the caller's RNG is restored afterwards).

    Returns
    -------
    pandas.DataFrame
        One row per element: ``site``, ``element`` (its index, e.g. ``"2,0"``; empty for a
        scalar site), ``mean``, ``lower``, ``upper``. ``attrs["level"]`` is ``level`` and
        ``attrs["shapes"]`` maps each site to its event shape.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    fit = fit_parts(fit)
    glob = getattr(fit.guide, "globals", None)
    available = [s.name for s in getattr(glob, "sites", ())]
    if not available:
        raise ValueError(
            "the fit's guide has no mean-field global part (guide.globals) with global sites; only models with global latents (IBP, ARD, group priors) have them"
        )
    chosen = list(available if sites is None else sites)
    unknown = [s for s in chosen if s not in available]
    if unknown:
        raise ValueError(f"unknown global sites {unknown}; the guide's global sites are {available}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    a = (1 - level) / 2
    parts, shapes = [], {}
    for name in chosen:
        q = glob.distribution(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            draws = q.sample((num_draws,)).reshape(num_draws, -1).double().cpu().numpy()
        draws = draws[:, :max_elements]
        lo, hi = np.quantile(draws, [a, 1 - a], axis=0)
        shape = tuple(q.event_shape)
        shapes[name] = shape
        index = [",".join(map(str, i)) for i in np.ndindex(*shape)][: draws.shape[1]] if shape else [""]
        parts.append(pd.DataFrame({"site": name, "element": index, "mean": draws.mean(0), "lower": lo, "upper": hi}))
    frame = pd.concat(parts, ignore_index=True)
    frame.attrs["level"] = float(level)
    frame.attrs["shapes"] = shapes
    return frame


def sample_groups(groups: Any, num: int) -> Any:
    """``num`` group labels for prior samples: the data's first ones, repeated as needed."""
    if groups is None:
        return None
    reps = math.ceil(num / groups.shape[0])
    return groups.repeat(reps)[:num]
