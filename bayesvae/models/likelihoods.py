r"""Observation likelihoods p(x | z) with decoder outputs as natural parameters.

Each likelihood turns the decoder's output ``(batch, params_per_feature * d)`` into a
distribution with event shape ``(d,)`` and checks, once at the data boundary, that the data
lie in its support (:meth:`Likelihood.validate`).
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from bayesvae._registry import register

__all__ = ["Likelihood", "Bernoulli", "ContinuousBernoulli", "Gaussian", "Poisson"]

#: Name of the observed site.
X = "x"


def _where(mask: torch.Tensor, columns: Sequence[str] | None, limit: int = 5) -> str:
    """Human-readable description of which entries of ``mask`` are set."""
    bad_rows = int(mask.any(dim=-1).sum()) if mask.dim() > 1 else int(mask.sum())
    cols = torch.nonzero(mask.reshape(-1, mask.shape[-1]).any(0)).flatten().tolist()
    names = [columns[c] if columns is not None else str(c) for c in cols[:limit]]
    more = f" and {len(cols) - limit} more" if len(cols) > limit else ""
    return f"{int(mask.sum())} values in {bad_rows} rows, columns [{', '.join(names)}{more}]"


class Likelihood(nn.Module, metaclass=ABCMeta):
    """Base class: a family of observation distributions indexed by the decoder output."""

    #: Decoder outputs per data feature (2 when the decoder also predicts a scale).
    params_per_feature: int = 1

    @abstractmethod
    def distribution(self, out: torch.Tensor) -> dist.TorchDistribution:
        """The distribution of ``x`` given decoder output ``out``; event shape ``(d,)``."""

    @abstractmethod
    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """E[x | z] for decoder output ``out``."""

    @abstractmethod
    def validate(self, x: torch.Tensor, columns: Sequence[str] | None = None) -> None:
        """Raise ``ValueError`` if ``x`` lies outside the likelihood's support."""

    @abstractmethod
    def to_config(self) -> dict[str, Any]:
        """JSON-serializable constructor arguments, with ``"type"``."""

    def num_outputs(self, data_dim: int) -> int:
        """Decoder output width needed for ``data_dim`` features."""
        return self.params_per_feature * data_dim


class _BernoulliLogits(dist.Bernoulli):
    """Bernoulli(logits) whose log-density is one fused BCE kernel (no broadcast copies)."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits = self.logits
        if value.shape != logits.shape:  # e.g. vectorized particles: (P, B, d) vs (B, d)
            shape = torch.broadcast_shapes(value.shape, logits.shape)
            logits, value = logits.expand(shape), value.expand(shape)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none")


@register
class Bernoulli(Likelihood):
    r"""Bernoulli likelihood for binary data: :math:`x_{nd} \sim \mathrm{Bernoulli}(\sigma(f_d(z_n)))`.

    The decoder outputs logits. Data must be exactly 0 or 1; for intensities in [0, 1] use
    :class:`ContinuousBernoulli`, which is a proper density there.
    """

    def distribution(self, out):
        return _BernoulliLogits(logits=out).to_event(1)

    def mean(self, out):
        return torch.sigmoid(out)

    def validate(self, x, columns=None):
        bad = (x != 0) & (x != 1)
        if bool(bad.any()):
            lo, hi = float(x.min()), float(x.max())
            raise ValueError(
                f"Bernoulli likelihood needs binary data (0/1); found {_where(bad, columns)} outside {{0, 1}} (data range [{lo:g}, {hi:g}]). Binarize the data (e.g. datasets.digits(binarize=True)), use ContinuousBernoulli() for intensities in [0, 1], or Gaussian()."
            )

    def to_config(self):
        return {"type": "Bernoulli"}


@register
class ContinuousBernoulli(Likelihood):
    r"""Continuous Bernoulli likelihood for intensities in [0, 1].

    :math:`p(x \mid \lambda) = C(\lambda)\, \lambda^x (1-\lambda)^{1-x}` with the normalizing
    constant :math:`C(\lambda)` that a plain Bernoulli "likelihood" on non-binary pixels omits.
    The decoder outputs logits of :math:`\lambda`; the mean is not :math:`\lambda`.

    References
    ----------
    .. [1] G. Loaiza-Ganem and J. P. Cunningham, "The continuous Bernoulli: fixing a pervasive
       error in variational autoencoders", NeurIPS 2019, arXiv:1907.06845.
    """

    def distribution(self, out):
        return dist.ContinuousBernoulli(logits=out).to_event(1)

    def mean(self, out):
        return dist.ContinuousBernoulli(logits=out).mean

    def validate(self, x, columns=None):
        bad = (x < 0) | (x > 1)
        if bool(bad.any()):
            raise ValueError(
                f"ContinuousBernoulli likelihood needs data in [0, 1]; found {_where(bad, columns)} outside (data range [{float(x.min()):g}, {float(x.max()):g}]). Rescale the data to [0, 1] or use Gaussian()."
            )

    def to_config(self):
        return {"type": "ContinuousBernoulli"}


@register
class Gaussian(Likelihood):
    r"""Gaussian likelihood :math:`x_{nd} \sim \mathcal N(f_d(z_n), \sigma_d^2)`.

    Exactly one way of setting :math:`\sigma` is chosen:

    * ``scale=s`` -- fixed, known noise standard deviation ``s`` for every feature;
    * ``data_dim=d`` -- one learned :math:`\sigma_d` per feature (a global parameter);
    * ``heteroscedastic=True`` -- the decoder predicts :math:`\sigma_d(z)` as a second block
      of ``d`` outputs (``params_per_feature = 2``).

    Learned scales are ``softplus(raw) + min_scale``; ``min_scale`` keeps the density
    bounded (a Gaussian likelihood is unbounded as :math:`\sigma \to 0` on a data point).
    """

    def __init__(
        self,
        *,
        scale: float | None = None,
        data_dim: int | None = None,
        heteroscedastic: bool = False,
        min_scale: float = 1e-3,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        chosen = (scale is not None) + (data_dim is not None) + bool(heteroscedastic)
        if chosen != 1:
            raise ValueError(
                f"Gaussian likelihood needs exactly one of scale=<float> (fixed), data_dim=<int> (learned per feature) or heteroscedastic=True (predicted by the decoder); got scale={scale!r}, data_dim={data_dim!r}, heteroscedastic={heteroscedastic!r}"
            )
        if scale is not None and not (float(scale) > 0 and float(scale) < float("inf")):
            raise ValueError(f"Gaussian scale must be a positive finite number, got {scale!r}")
        if data_dim is not None and (not isinstance(data_dim, int) or data_dim < 1):
            raise ValueError(f"Gaussian data_dim must be a positive int, got {data_dim!r}")
        if not min_scale > 0 or not init_scale > min_scale:
            raise ValueError(
                f"need 0 < min_scale < init_scale, got min_scale={min_scale}, init_scale={init_scale}"
            )
        self.scale = None if scale is None else float(scale)
        self.data_dim = data_dim
        self.heteroscedastic = bool(heteroscedastic)
        self.min_scale = float(min_scale)
        self.init_scale = float(init_scale)
        self.params_per_feature = 2 if heteroscedastic else 1
        if data_dim is not None:
            raw = torch.log(torch.expm1(torch.tensor(init_scale - min_scale)))
            self.raw_scale = nn.Parameter(raw.expand(data_dim).clone())

    def _loc_scale(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.heteroscedastic:
            loc, raw = out.chunk(2, dim=-1)
            return loc, F.softplus(raw) + self.min_scale
        if self.data_dim is not None:
            return out, (F.softplus(self.raw_scale) + self.min_scale).expand_as(out)
        return out, out.new_full((), self.scale).expand_as(out)

    def feature_scale(self) -> torch.Tensor | None:
        """The per-feature noise scale when it is fixed or learned per feature."""
        if self.data_dim is not None:
            return F.softplus(self.raw_scale.detach()) + self.min_scale
        if self.scale is not None:
            return torch.tensor(self.scale)
        return None

    def num_outputs(self, data_dim):
        if self.data_dim is not None and data_dim != self.data_dim:
            raise ValueError(
                f"Gaussian likelihood was built for data_dim={self.data_dim} features, but the data have {data_dim}"
            )
        return self.params_per_feature * data_dim

    def distribution(self, out):
        loc, scale = self._loc_scale(out)
        return dist.Normal(loc, scale).to_event(1)

    def mean(self, out):
        return self._loc_scale(out)[0]

    def validate(self, x, columns=None):
        # Any finite real value is in the support; finiteness is checked at the data boundary.
        return None

    def to_config(self):
        return {
            "type": "Gaussian",
            "scale": self.scale,
            "data_dim": self.data_dim,
            "heteroscedastic": self.heteroscedastic,
            "min_scale": self.min_scale,
            "init_scale": self.init_scale,
        }


@register
class Poisson(Likelihood):
    r"""Poisson likelihood for counts, :math:`x_{nd} \sim \mathrm{Poisson}(\exp f_d(z_n))`.

    The decoder outputs the log-rate.
    """

    def distribution(self, out):
        return dist.Poisson(out.exp()).to_event(1)

    def mean(self, out):
        return out.exp()

    def validate(self, x, columns=None):
        bad = (x < 0) | (x != torch.round(x))
        if bool(bad.any()):
            raise ValueError(
                f"Poisson likelihood needs non-negative integer counts; found {_where(bad, columns)} that are negative or not integers. Use Gaussian() for real-valued data."
            )

    def to_config(self):
        return {"type": "Poisson"}
