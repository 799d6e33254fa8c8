r"""Training objectives: Pyro's ELBOs made lean, the per-point importance-weighted bound,
gradient estimators (reparameterized, sticking the landing, doubly reparameterized) and
KL-weight schedules.

Objectives take ``(model, guide, *args, **kwargs)`` like Pyro's and are independent of
both. Each has ``differentiable_loss`` (the training loss) and ``losses`` (the loss at the
current ``kl_weight`` and the :math:`\beta = 1` loss for reporting).
"""

from __future__ import annotations

from typing import Any

from bayesvae._checks import positive_int
from bayesvae.objectives._sites import DATA_PLATE, GRADIENTS, check_gradient
from bayesvae.objectives.elbo import Trace_ELBO, TraceMeanField_ELBO
from bayesvae.objectives.iwae import IWAE_ELBO
from bayesvae.objectives.schedules import ConstantWeight, LinearWarmup, as_kl_schedule

__all__ = [
    "IWAE_ELBO",
    "Trace_ELBO",
    "TraceMeanField_ELBO",
    "ELBOS",
    "GRADIENTS",
    "make_elbo",
    "LinearWarmup",
    "ConstantWeight",
    "as_kl_schedule",
]

#: Objectives by name: ``"trace"`` is Monte Carlo throughout; ``"meanfield"`` uses the
#: analytic KL(q || p) at every site where one is registered (Monte Carlo elsewhere).
#: ``"iwae"``: the importance-weighted bound with ``num_particles`` samples per point.
ELBOS: dict[str, type] = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO, "iwae": IWAE_ELBO}

#: Which gradient estimators each objective offers.
_VALID = {"trace": ("reparam", "stl"), "meanfield": ("reparam",), "iwae": ("reparam", "stl", "dreg")}


def make_elbo(
    elbo: str | Any,
    *,
    num_particles: int = 1,
    model: Any = None,
    gradient: str = "reparam",
    data_plate: str = DATA_PLATE,
) -> Any:
    r"""Build the objective named ``elbo`` (or pass through an objective object).

    Parameters
    ----------
    elbo : {"trace", "meanfield", "iwae"} or object
        The objective's name (:data:`ELBOS`), or an object with
        ``differentiable_loss(model, guide, ...)``, returned unchanged (``gradient`` must
        then be ``"reparam"``: an object brings its own estimator).
    num_particles : int, default 1
        Samples per step (``"iwae"``: :math:`K` per data point).
    model : optional
        The model; a package :class:`~bayesvae.models.VAE` gets vectorized particles, and
        is checked for guide structures an estimator cannot handle.
    gradient : {"reparam", "stl", "dreg"}, default "reparam"
        The gradient estimator: ``"stl"`` (sticking the landing, Roeder et al. 2017) for
        ``"trace"`` and ``"iwae"``; ``"dreg"`` (doubly reparameterized, Tucker et al. 2019)
        for ``"iwae"``. ``"meanfield"`` has only ``"reparam"``.
    data_plate : str, default "data"
        Name of the model's data plate (its sites are the local ones).

    Returns
    -------
    objective
        :class:`Trace_ELBO`, :class:`TraceMeanField_ELBO` or :class:`IWAE_ELBO`, with a
        settable ``kl_weight`` (default 1).

    Examples
    --------
    >>> make_elbo("iwae", num_particles=5, gradient="dreg").gradient
    'dreg'
    """
    check_gradient(gradient)
    if not isinstance(elbo, str):
        if not hasattr(elbo, "differentiable_loss"):
            raise TypeError(
                f"elbo must be one of {sorted(ELBOS)} or an object with differentiable_loss(model, guide, ...), got {type(elbo).__name__}"
            )
        if gradient != "reparam":
            raise ValueError(
                f"gradient={gradient!r} applies to the named objectives {sorted(ELBOS)}; an objective object ({type(elbo).__name__}) brings its own estimator: construct it with the gradient you want"
            )
        return elbo
    if elbo not in ELBOS:
        raise ValueError(f"unknown elbo {elbo!r}; choose one of {sorted(ELBOS)}")
    positive_int("num_particles", num_particles)
    if gradient not in _VALID[elbo]:
        hint = "elbo='iwae'" if gradient == "dreg" else "elbo='trace' or 'iwae'"
        raise ValueError(
            f"gradient={gradient!r} is not available with elbo={elbo!r} (it offers {list(_VALID[elbo])}); use {hint}"
        )
    if gradient == "dreg":
        _check_dreg_model(model)
    extra: dict[str, Any] = {}
    if gradient != "reparam":
        extra["gradient"] = gradient
    if data_plate != DATA_PLATE:
        extra["data_plate"] = data_plate
    if elbo == "iwae":
        return IWAE_ELBO(num_particles, **extra)
    from bayesvae.models.vae import VAE

    kw: dict[str, Any] = {"num_particles": num_particles, **extra}
    if isinstance(model, VAE):
        # The package's models nest exactly one plate, so particles can be vectorized.
        kw.update(max_plate_nesting=1, vectorize_particles=num_particles > 1)
    return ELBOS[elbo](**kw)


def _check_dreg_model(model: Any) -> None:
    """Refuse package models whose guide would condition one local site on another (DReG is biased there)."""
    prior = getattr(model, "prior", None)
    sites = getattr(prior, "local_sites", None)
    if not callable(sites):
        return
    for site in sites():
        if getattr(site, "conditions_on", ()):
            raise ValueError(
                f"gradient='dreg' needs local guide sites that depend on x (and global latents) only; the model's site {site.name!r} is inferred conditionally on {list(site.conditions_on)}, and detaching its distribution's parameters would cut that path and bias the estimator. Use gradient='stl' with elbo='trace', or gradient='reparam'."
            )
