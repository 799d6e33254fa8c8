"""Records of a fit: its settings (:class:`FitConfig`), its outcome (:class:`FitResult`) and
the error a diverging fit raises (:class:`DivergenceError`)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bayesvae.data import DataInfo
from bayesvae.infer.params import ParamSet, owned_modules

__all__ = ["FitConfig", "FitResult", "DivergenceError", "history_frame", "HISTORY_COLUMNS"]

#: Columns of a fit's history, in order (those present).
HISTORY_COLUMNS = ["epoch", "elbo", "val_elbo", "lr", "kl_weight", "skipped", "seconds"]


class DivergenceError(RuntimeError):
    """The fit diverged (non-finite loss, gradient or parameters).

    ``.result`` holds the last verified-finite state; a checkpoint on disk is the last good one.
    """

    def __init__(self, message: str, result: FitResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class FitConfig:
    """Settings of one fit; round-trips through JSON (:meth:`to_dict` / :meth:`from_dict`).

    ``lr`` is the base learning rate; ``lr_schedule`` describes a schedule (``None``:
    constant). ``data_plate`` is the name of the data plate read from the first step's trace,
    ``rescaled`` whether the package scaled it by ``N / B`` itself. ``optimizer`` is the Adam
    implementation that ran: ``"adam-fused"`` (torch's fused kernel) or ``"adam"``;
    ``cuda_graphs`` whether full-batch steps were captured as CUDA graphs.
    """

    elbo: str = "trace"
    epochs: int = 10
    batch_size: int | None = 128
    lr: float = 1e-3
    num_particles: int = 1
    device: str = "cpu"
    seed: int = 0
    clip_norm: float | None = None
    adam_eps: float = 1e-8
    lr_schedule: dict[str, Any] | None = None
    gradient: str = "reparam"
    kl_weight: dict[str, Any] | None = None
    on_nonfinite: str = "stop"
    dynamic_binarization: bool = False
    data_plate: str | None = "data"
    rescaled: bool = False
    optimizer: str = "adam"
    cuda_graphs: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def history_frame(history: list[dict[str, float]]) -> pd.DataFrame:
    """The per-epoch records as a DataFrame with :data:`HISTORY_COLUMNS` (those present)."""
    frame = pd.DataFrame(history)
    if not len(frame):
        return pd.DataFrame(columns=["epoch", "elbo", "seconds"])
    extra = [c for c in frame.columns if c not in HISTORY_COLUMNS]
    return frame[[c for c in HISTORY_COLUMNS if c in frame.columns] + extra]


@dataclass(frozen=True)
class FitResult:
    """The outcome of :func:`~bayesvae.fit`.

    Attributes
    ----------
    model, guide : callable
        The trained model and guide (the package's modules, or the user's Pyro functions
        bound to this fit's own parameters).
    history : pandas.DataFrame
        One row per epoch: ``epoch``, ``elbo`` (training ELBO per data point at kl weight 1,
        the average of the minibatch estimates during the epoch), ``val_elbo`` (per point,
        at the epoch's end, when validation data were given), ``lr``, ``kl_weight`` (the
        weight the gradient used), ``skipped`` (updates dropped by ``on_nonfinite="skip"``),
        ``seconds`` (cumulative training time).
    config : FitConfig
        The settings used.
    data : DataInfo
        Size, width, column names and image shape of the training data.
    params : dict of str to Tensor
        ``pyro.param`` values of user-written functions (constrained), beside module weights.
    convergence : dict
        The convergence verdict (see :func:`bayesvae.infer.convergence.check_convergence`):
        ``converged`` (bool or None when too few epochs), ``slope``, ``se``, ``window``;
        plus ``stopped_early`` / ``best_epoch`` when early stopping was on.
    """

    model: Any
    guide: Any
    history: pd.DataFrame
    config: FitConfig
    data: DataInfo
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    convergence: dict[str, Any] = field(default_factory=dict)
    param_set: ParamSet | None = field(default=None, repr=False, compare=False)

    @property
    def elapsed(self) -> float:
        """Training time in seconds."""
        return float(self.history["seconds"].iloc[-1]) if len(self.history) else 0.0

    @property
    def converged(self) -> bool | None:
        """Whether the objective had stopped changing beyond its Monte Carlo noise."""
        return self.convergence.get("converged")

    @property
    def num_parameters(self) -> int:
        """Number of scalar parameters in model and guide."""
        seen: dict[int, torch.Tensor] = {}
        for m in owned_modules(self.model, self.guide):
            seen.update({id(p): p for p in m.parameters()})
        if self.param_set is not None:
            seen.update({id(p): p for p in self.param_set.unconstrained.values()})
        else:
            seen.update({id(p): p for p in self.params.values()})
        return sum(p.numel() for p in seen.values())

    def save(self, path: str | os.PathLike) -> Path:
        """Save to ``path`` (a directory, or a ``.safetensors`` file).

        A directory receives ``fit.safetensors`` (weights with a SHA-256 digest of every
        tensor, config and history as JSON metadata), ``config.json`` (a readable copy) and
        ``history.csv``. Files are written to a temporary name and moved into place, so an
        existing save is never left half-overwritten. Loading never unpickles anything
        (:func:`~bayesvae.load`).
        """
        from bayesvae.infer.io import write_fit

        return write_fit(self, Path(path))

    def encode(self, data: Any) -> pd.DataFrame:
        """Per-row posterior mean and sd of each local latent, ``q(z | x)`` (see :func:`~bayesvae.infer.predict.encode`)."""
        from bayesvae.infer.predict import encode

        return encode(self, data)

    def sample(self, n: int, *, seed: int | None = 0) -> Any:
        """``n`` draws from the fitted model (see :func:`~bayesvae.infer.predict.sample`)."""
        from bayesvae.infer.predict import sample

        return sample(self, n, seed=seed)

    def reconstruct(self, data: Any, *, seed: int | None = 0) -> Any:
        """Mean of ``p(x | z)`` at ``z ~ q(z | x)`` (see :func:`~bayesvae.infer.predict.reconstruct`)."""
        from bayesvae.infer.predict import reconstruct

        return reconstruct(self, data, seed=seed)
