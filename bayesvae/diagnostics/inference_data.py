r"""A fit as an ArviZ ``InferenceData``: draws from the guide, replicates, log-likelihoods, weights.

Each group has its own builder below, returning a :class:`Group` (variables, dims, coords);
:func:`to_inference_data` assembles them with ``arviz.from_dict``. All densities are read from
traces of the fit's own model and guide by
:func:`bayesvae.evaluation.importance_log_weights` (nothing is re-typed), so a user's
hand-written Pyro model and guide work unchanged.

.. warning::

    Written against ArviZ 0.23 (the line that installs on Python 3.10 and 3.11). ArviZ 1.x
    (Python >= 3.12) returns an ``xarray.DataTree`` instead of ``InferenceData``, takes
    ``from_dict({group: {...}})``, and renames the plots used on this object
    (``plot_posterior`` -> ``plot_dist``, ``plot_ppc`` -> ``plot_ppc_dist``); the package
    therefore requires ``arviz < 1`` (:func:`require_arviz` says so at run time).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from bayesvae.diagnostics._common import (
    Inputs,
    draw_importance_samples,
    read_inputs,
    replicate,
    require_arviz,
)
from bayesvae.scoring import ImportanceSamples, check_positive_int

__all__ = [
    "Group",
    "to_inference_data",
    "posterior_group",
    "posterior_predictive_group",
    "observed_data_group",
    "log_likelihood_group",
    "sample_stats_group",
    "inference_attrs",
    "require_arviz",
    "OBS",
    "LATENT",
    "FEATURE",
]

#: Dimension of the data points.
OBS = "obs"
#: Event dimension of the Gaussian latent site ``"z"``.
LATENT = "latent"
#: Dimension of the observed columns of ``"x"`` (coordinates: the column names).
FEATURE = "feature"


@dataclass(frozen=True)
class Group:
    """The variables of one InferenceData group, with their dims (beyond chain/draw) and coords."""

    data: dict[str, np.ndarray]
    dims: dict[str, list[str]] = field(default_factory=dict)
    coords: dict[str, Any] = field(default_factory=dict)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _chain(a: np.ndarray) -> np.ndarray:
    """Add the chain dimension: draws from the guide are one 'chain' of independent draws."""
    return a[None, ...]


def _site_dims(name: str, event_ndim: int) -> list[str]:
    if name == "z" and event_ndim == 1:
        return [OBS, LATENT]
    return [OBS] + [f"{name}_dim_{i}" for i in range(event_ndim)]


def posterior_group(iw: ImportanceSamples) -> Group:
    r"""``posterior``: each latent site's draws from the guide.

    Local sites have dims ``(chain, draw, obs, ...)`` (``"z"``: ``(chain, draw, obs,
    latent)``); global sites ``(chain, draw, <site>_dim_0, ...)``. One chain of :math:`S`
    independent draws :math:`z_n^s \sim q(z \mid x_n, g^s)`, :math:`g^s \sim q(g)`.
    """
    if iw.samples is None:
        raise ValueError("posterior_group needs importance samples drawn with return_samples=True")
    data: dict[str, np.ndarray] = {}
    dims: dict[str, list[str]] = {}
    coords: dict[str, Any] = {}
    for name in iw.local_sites:
        value = _numpy(iw.samples[name])
        data[name] = _chain(value)
        dims[name] = _site_dims(name, value.ndim - 2)
        if dims[name][1:] == [LATENT]:
            coords[LATENT] = np.arange(value.shape[-1])
    for name in iw.global_sites:
        data[name] = _chain(_numpy(iw.samples[name]))
    return Group(data, dims, coords)


def _feature_dims(name: str, shape: tuple[int, ...], columns: tuple[str, ...]) -> tuple[list[str], dict[str, Any]]:
    if name == "x" and len(shape) == 1 and shape[0] == len(columns):
        # object dtype: netCDF (h5netcdf) stores variable-length strings, not numpy's '<U'
        return [OBS, FEATURE], {FEATURE: np.array(columns, dtype=object)}
    return [OBS] + [f"{name}_dim_{i}" for i in range(len(shape))], {}


def posterior_predictive_group(replicates: Mapping[str, np.ndarray], columns: tuple[str, ...]) -> Group:
    r"""``posterior_predictive``: replicated data :math:`x^{rep}_{sn} \sim p(x \mid z_n^s, g^s)`,
    dims ``(chain, draw, obs, feature)`` for ``"x"``."""
    data, dims, coords = {}, {}, {}
    for name, value in replicates.items():
        data[name] = _chain(value)
        dims[name], c = _feature_dims(name, value.shape[2:], columns)
        coords.update(c)
    return Group(data, dims, coords)


def observed_data_group(observed: Mapping[str, np.ndarray], columns: tuple[str, ...]) -> Group:
    """``observed_data``: the data, dims ``(obs, feature)`` with the column names as coords."""
    data, dims, coords = {}, {}, {}
    for name, value in observed.items():
        data[name] = value
        dims[name], c = _feature_dims(name, value.shape[1:], columns)
        coords.update(c)
    return Group(data, dims, coords)


def log_likelihood_group(iw: ImportanceSamples) -> Group:
    r"""``log_likelihood``: pointwise :math:`\log p(x_n \mid z_n^s, g^s)`, dims ``(chain, draw, obs)``.

    Named after the observed site, whatever its name (summed over its event dims); with
    several observed sites, one variable per site.
    """
    if iw.site_log_likelihood:
        data = {name: _chain(_numpy(v)) for name, v in iw.site_log_likelihood.items()}
        return Group(data, {name: [OBS] for name in data})
    name = iw.observed_sites[0] if iw.observed_sites else "x"
    return Group({name: _chain(_numpy(iw.log_likelihood))}, {name: [OBS]})


def sample_stats_group(iw: ImportanceSamples) -> Group:
    r"""``sample_stats``: log importance weights and their parts, dims ``(chain, draw, obs)``.

    * ``log_weight`` -- :math:`\log p(x_n, z_n^s \mid g^s) - \log q(z_n^s \mid x_n, g^s)
      + \frac1N \log p(g^s)/q(g^s)` (the weights of :func:`~bayesvae.diagnostics.psis_diagnostic`);
    * ``log_joint`` -- :math:`\log p(x_n, z_n^s \mid g^s)`;
    * ``log_q`` -- :math:`\log q(z_n^s \mid x_n, g^s)`;
    * ``global_log_weight`` -- :math:`\log p(g^s) - \log q(g^s)`, dims ``(chain, draw)``.
    """
    data = {
        "log_weight": _chain(_numpy(iw.log_weights)),
        "log_joint": _chain(_numpy(iw.log_likelihood + iw.log_prior)),
        "log_q": _chain(_numpy(iw.log_q)),
        "global_log_weight": _chain(_numpy(iw.global_log_weights)),
    }
    dims = {k: [OBS] for k in ("log_weight", "log_joint", "log_q")}
    return Group(data, dims)


def _describe(part: Any) -> str:
    if hasattr(part, "to_config"):
        try:
            return json.dumps(part.to_config(), sort_keys=True)
        except (TypeError, ValueError):
            pass
    return getattr(part, "__qualname__", type(part).__name__)


def inference_attrs(fit: Any, inputs: Inputs, iw: ImportanceSamples, *, seed: int | None) -> dict[str, Any]:
    """Attributes: model, guide, objective, draws, and package versions (netCDF-safe values)."""
    import pyro

    import bayesvae

    az = require_arviz()
    config = getattr(fit, "config", None)
    return {
        "inference_library": "pyro",
        "inference_library_version": pyro.__version__,
        "bayesvae_version": bayesvae.__version__,
        "torch_version": str(torch.__version__),  # a TorchVersion (str subclass) that h5py cannot store
        "arviz_version": az.__version__,
        "model": _describe(inputs.model),
        "guide": _describe(inputs.guide),
        "objective": str(config.elbo) if config is not None else "unknown",
        "fit_config": json.dumps(config.to_dict(), sort_keys=True) if config is not None else "{}",
        "num_samples": int(iw.num_samples),
        "seed": -1 if seed is None else int(seed),
        "globals_once": int(iw.globals_once),
        "local_sites": ",".join(iw.local_sites),
        "global_sites": ",".join(iw.global_sites),
        "observed_sites": ",".join(iw.observed_sites),
        "draws": "posterior: independent draws from the guide q (not reweighted); sample_stats.log_weight holds log p(x, z) - log q(z | x) per draw and point",
        "loo_waic": "meaningless for this object: the draws are per-point latents from the encoder, not posterior draws of shared parameters; use bayesvae.evaluation.log_marginal_likelihood on held-out data and bayesvae.diagnostics.psis_diagnostic",
    }


def _obs_coords(data: Any, n: int) -> np.ndarray:
    if isinstance(data, pd.DataFrame) and len(data.index) == n:
        values = np.asarray(data.index)
        return values if values.dtype.kind in "iuf" else values.astype(str).astype(object)
    return np.arange(n)


def to_inference_data(
    fit: Any,
    x: Any,
    *,
    num_samples: int = 100,
    seed: int | None = 0,
    groups: Any = None,
    covariates: Mapping[str, Any] | None = None,
    globals_once: bool | None = None,
    posterior_predictive: bool = True,
    chunk_size: int | None = None,
) -> Any:
    r"""Draws from a fitted guide, replicates and importance weights as ArviZ ``InferenceData``.

    Parameters
    ----------
    fit : FitResult or (model, guide)
        A fitted model and guide.
    x : Tensor, ndarray, DataFrame of shape (N, d), or Rows
        Data; a DataFrame's column names become the ``feature`` coordinates and its index
        the ``obs`` coordinates.
    num_samples : int, default 100
        :math:`S`, draws per point (the ``draw`` dimension; one chain).
    seed : int or None, default 0
        Seed for all draws (the caller's RNG state is restored).
    groups : array-like of int, optional
        Group labels, for priors that use them (shorthand for ``covariates={"groups": ...}``).
    covariates : mapping of str to array-like of shape (N, ...), optional
        Per-row side information passed to model and guide as keywords.
    globals_once : bool, optional
        ``True``: one global draw :math:`g \sim q(g)` shared by all draws (the convention of
        :func:`~bayesvae.evaluation.log_marginal_likelihood`); ``False``: a fresh
        :math:`g^s` per draw, so that the ``posterior`` of the global sites is a sample from
        :math:`q(g)` that ``az.summary`` can summarize. Default: ``False`` when the model has
        global sites (no effect otherwise).
    posterior_predictive : bool, default True
        Also draw the replicates (``posterior_predictive`` group); they take
        :math:`S \times N \times d` values.
    chunk_size : int, optional
        Largest number of (sample, point) pairs evaluated at once.

    Returns
    -------
    arviz.InferenceData
        Groups:

        * ``posterior`` -- local latent sites, dims ``(chain, draw, obs, ...)`` (``"z"``:
          ``(chain, draw, obs, latent)``), global sites with their own dims;
        * ``posterior_predictive`` -- ``"x"`` replicated, ``(chain, draw, obs, feature)``;
        * ``observed_data`` -- ``"x"``, ``(obs, feature)``, column names as coords;
        * ``log_likelihood`` -- ``"x"``: :math:`\log p(x_n \mid z_n^s)`, ``(chain, draw, obs)``;
        * ``sample_stats`` -- ``log_weight`` :math:`= \log p(x_n, z_n^s) - \log q(z_n^s \mid
          x_n)`, ``log_joint``, ``log_q`` (``(chain, draw, obs)``) and ``global_log_weight``;
        * ``attrs`` (and ``posterior.attrs``) -- model, guide, objective, fit settings,
          number of draws, seed and package versions (ArviZ keeps ``arviz_version`` and
          ``created_at`` in the groups' attrs only).

    Notes
    -----
    The ``posterior`` holds draws from the *variational* posterior, not from
    :math:`p(z \mid x)`; ``sample_stats.log_weight`` are the importance log weights that
    correct them (e.g. ``az.psislw`` on them, or :func:`~bayesvae.diagnostics.psis_diagnostic`).
    The object is accepted as is by ``az.summary``, ``az.plot_posterior``, ``az.plot_ppc``,
    ``az.plot_khat`` and round-trips through ``to_netcdf`` / ``from_netcdf``.

    .. warning::

        ``az.loo`` and ``az.waic`` run on the ``log_likelihood`` group but are meaningless
        here: their "draws" are per-point latents from the *encoder*, a different
        distribution for every point, not draws of shared parameters from a posterior (on
        digits 83.6 % of points get :math:`\hat k > 1`). For model comparison use the
        package's held-out :func:`~bayesvae.evaluation.log_marginal_likelihood` and its
        per-point PSIS :func:`~bayesvae.diagnostics.psis_diagnostic`. The data's
        ``attrs["loo_waic"]`` says the same.

    Examples
    --------
    >>> import torch, bayesvae
    >>> from bayesvae.diagnostics import to_inference_data
    >>> model = bayesvae.VAE(prior=bayesvae.GaussianPrior(2), likelihood=bayesvae.Gaussian(scale=1.0),
    ...                      decoder=bayesvae.MLP(2, 5))
    >>> guide = bayesvae.AmortizedGuide(model, hidden=(8,))
    >>> idata = to_inference_data((model, guide), torch.randn(10, 5), num_samples=20)
    >>> dict(idata.posterior["z"].sizes)
    {'chain': 1, 'draw': 20, 'obs': 10, 'latent': 2}
    """
    require_arviz()
    check_positive_int("num_samples", num_samples)
    if globals_once is not None and not isinstance(globals_once, bool):
        raise TypeError(f"globals_once must be True, False or None, got {globals_once!r}")
    inputs = read_inputs(fit, x, groups, covariates)
    if globals_once is None:
        globals_once = not _has_global_sites(inputs)
    iw = draw_importance_samples(
        inputs, num_samples=num_samples, seed=seed, globals_once=globals_once, return_samples=True, chunk_size=chunk_size
    )
    reps, observed = replicate(inputs, iw, seed=None if seed is None else seed + 1, chunk_size=chunk_size)
    return assemble(
        fit,
        inputs,
        iw,
        reps if posterior_predictive else None,
        observed,
        seed=seed,
        obs_coords=_obs_coords(x, inputs.x.shape[0]),
    )


def _has_global_sites(inputs: Inputs) -> bool:
    prior = getattr(inputs.model, "prior", None)
    if prior is not None and hasattr(prior, "global_sites"):
        return bool(prior.global_sites())
    # a hand-written model: let the kernel find out (one global draw is always valid)
    return False


def assemble(
    fit: Any,
    inputs: Inputs,
    iw: ImportanceSamples,
    replicates: Mapping[str, np.ndarray] | None,
    observed: Mapping[str, np.ndarray],
    *,
    seed: int | None,
    obs_coords: np.ndarray | None = None,
) -> Any:
    """Assemble the group builders' output with ``az.from_dict``."""
    az = require_arviz()
    parts = {
        "posterior": posterior_group(iw),
        "observed_data": observed_data_group(observed, inputs.columns),
        "log_likelihood": log_likelihood_group(iw),
        "sample_stats": sample_stats_group(iw),
    }
    if replicates is not None:
        parts["posterior_predictive"] = posterior_predictive_group(replicates, inputs.columns)
    dims: dict[str, list[str]] = {}
    coords: dict[str, Any] = {OBS: np.arange(iw.num_data) if obs_coords is None else obs_coords}
    for group in parts.values():
        for name, d in group.dims.items():
            # the observed site's (obs, feature) dims serve observed_data and
            # posterior_predictive; log_likelihood drops the trailing ones (skip_event_dims)
            if name not in dims or len(d) > len(dims[name]):
                dims[name] = d
        coords.update(group.coords)
    names = {name for part in parts.values() for name in part.data}
    if OBS in names:  # a site named like the data dimension (Pyro's tutorial calls x "obs")
        point = "point"
        dims = {k: [point if d == OBS else d for d in v] for k, v in dims.items()}
        coords[point] = coords.pop(OBS)
    attrs = inference_attrs(fit, inputs, iw, seed=seed)
    idata = az.from_dict(
        **{k: v.data for k, v in parts.items()},
        coords=coords,
        dims=dims,
        attrs=dict(attrs),  # ArviZ removes its own keys (arviz_version, created_at) from this one
        posterior_attrs=dict(attrs),
    )
    return idata
