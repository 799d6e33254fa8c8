r"""Fitting: stochastic variational inference with Pyro ELBOs and one torch optimizer.

The package is laid out as the loop reads:

* :mod:`~bayesvae.infer.step` -- :class:`TrainState` and ``step(state, batch) -> (state, loss)``;
* :mod:`~bayesvae.infer.fit` -- :func:`fit`: validate, initialize, step / record / checkpoint;
* :mod:`~bayesvae.infer.result` -- :class:`FitConfig`, :class:`FitResult`, :class:`DivergenceError`;
* :mod:`~bayesvae.infer.io` -- save / load / checkpoints, one atomic writer, digests;
* :mod:`~bayesvae.infer.params` -- the parameters a fit owns (no global param store);
* :mod:`~bayesvae.infer.jit`, :mod:`~bayesvae.infer.distributed` -- traced steps, data parallelism;
* :mod:`~bayesvae.infer.elbo` -- the ELBO per point on a data set (verified chunk scaling);
* :mod:`~bayesvae.infer.schedules`, :mod:`~bayesvae.infer.convergence`, :mod:`~bayesvae.infer.predict`.

The scale of every site is read from the first step's traces (:mod:`bayesvae.scaling`).
"""

from bayesvae.infer.convergence import check_convergence
from bayesvae.infer.elbo import evaluate_elbo
from bayesvae.infer.fit import fit
from bayesvae.infer.io import load
from bayesvae.infer.result import DivergenceError, FitConfig, FitResult
from bayesvae.infer.schedules import StagedLR
from bayesvae.infer.step import TrainState, init_state, step

__all__ = [
    "fit",
    "FitConfig",
    "FitResult",
    "DivergenceError",
    "load",
    "evaluate_elbo",
    "TrainState",
    "init_state",
    "step",
    "StagedLR",
    "check_convergence",
]
