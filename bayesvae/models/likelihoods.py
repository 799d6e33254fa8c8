r"""Observation likelihoods p(x | z) with decoder outputs as natural parameters.

Each likelihood turns the decoder's output ``(batch, params_per_feature * d)`` into a
distribution with event shape ``(d,)`` and checks, once at the data boundary, that the data
lie in its support (:meth:`Likelihood.validate`). :meth:`Likelihood.observed` restricts that
distribution to the observed cells of a partly missing row (:class:`MaskedCells`). The
per-column mix for tables, :class:`~bayesvae.models.columns.Columns`, is in
:mod:`bayesvae.models.columns`.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from bayesvae._checks import positive_int
from bayesvae._registry import register

__all__ = [
    "Likelihood",
    "Bernoulli",
    "ContinuousBernoulli",
    "Gaussian",
    "Poisson",
    "NegativeBinomial",
    "StudentT",
    "Categorical",
    "MaskedCells",
    "cell_log_prob",
]

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

    def observed(self, out: torch.Tensor, mask: torch.Tensor | None = None) -> dist.TorchDistribution:
        r"""The distribution of the observed cells: :meth:`distribution` with missing cells masked out.

        Parameters
        ----------
        out : Tensor of shape (..., B, num_outputs)
            Decoder output.
        mask : bool Tensor of shape (B, d), optional
            ``True`` where a cell is observed. ``None``: every cell is observed and the
            distribution is :meth:`distribution` itself (same object, same numbers).

        Returns
        -------
        TorchDistribution
            Event shape ``(d,)``; with a mask, :class:`MaskedCells`, whose log-density is
            :math:`\sum_{j:\, m_{nj} = 1} \log p(x_{nj} \mid z_n)`.
        """
        d = self.distribution(out)
        return d if mask is None else MaskedCells(d, mask)


def _bernoulli_nll(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``-log Bernoulli(value | logits)`` per cell, broadcast: one fused BCE kernel (no broadcast copies)."""
    if value.shape != logits.shape:  # e.g. vectorized particles: (P, B, d) vs (B, d)
        shape = torch.broadcast_shapes(value.shape, logits.shape)
        logits, value = logits.expand(shape), value.expand(shape)
    if torch.is_grad_enabled() and logits.requires_grad:
        return F.binary_cross_entropy_with_logits(logits, value, reduction="none")
    # scoring: softplus(l) - x l in one buffer (the BCE kernel allocates three of this size)
    return F.softplus(logits).addcmul_(logits, value, value=-1)


class _BernoulliLogits(dist.Bernoulli):
    """Bernoulli(logits) whose per-cell log-density is one fused BCE kernel."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return _bernoulli_nll(self.logits, value).neg_()


class _BernoulliRows(dist.Independent):
    r"""Bernoulli(logits) over the last dimension as one event, its log-density one row sum.

    :math:`\log p(x_n) = -\sum_d \mathrm{BCE}(l_{nd}, x_{nd})`: the per-cell kernel, a sum
    over the row and the sign on the row total. ``_BernoulliLogits(logits).to_event(1)``
    gives the same numbers bit for bit (negation is exact, so the sum of negated cells is
    the negated sum) with two more full-size passes, a negation forward and its gradient
    backward, which on the Burda MNIST network are about 1 % of a training step. Per-cell
    densities (missing cells) come from ``base_dist``.
    """

    def __init__(self, logits: torch.Tensor, validate_args: bool | None = None) -> None:
        super().__init__(_BernoulliLogits(logits=logits), 1, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(_BernoulliRows, _instance)
        return super().expand(batch_shape, _instance=new)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return _bernoulli_nll(self.base_dist.logits, value).sum(-1).neg_()


@register
class Bernoulli(Likelihood):
    r"""Bernoulli likelihood for binary data: :math:`x_{nd} \sim \mathrm{Bernoulli}(\sigma(f_d(z_n)))`.

    The decoder outputs logits. Data must be exactly 0 or 1; for intensities in [0, 1] use
    :class:`ContinuousBernoulli`, which is a proper density there.
    """

    def distribution(self, out):
        return _BernoulliRows(out)

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
        if data_dim is not None:
            data_dim = positive_int("Gaussian data_dim", data_dim)
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
            self.raw_scale = nn.Parameter(raw.repeat(data_dim))

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
class StudentT(Likelihood):
    r"""Student-t likelihood for heavy-tailed measurements.

    :math:`x_{nd} \sim t_\nu(f_d(z_n), \sigma_d)` with a learned per-feature scale
    :math:`\sigma_d = \mathrm{softplus}(\cdot) + \sigma_{\min}` and fixed degrees of freedom
    :math:`\nu`; robust to outlying cells that would drag a Gaussian's mean [1]_.

    Parameters
    ----------
    data_dim : int
        Number of features (one scale each).
    df : float, default 4.0
        Degrees of freedom :math:`\nu > 0` (the variance is finite for :math:`\nu > 2`).
    min_scale, init_scale : float
        Floor and initial value of :math:`\sigma_d`.

    References
    ----------
    .. [1] K. L. Lange, R. J. A. Little and J. M. G. Taylor, "Robust statistical modeling
       using the t distribution", JASA 84, 1989, doi:10.1080/01621459.1989.10478852.
    """

    def __init__(self, *, data_dim: int, df: float = 4.0, min_scale: float = 1e-3, init_scale: float = 1.0) -> None:
        super().__init__()
        data_dim = positive_int("StudentT data_dim", data_dim)
        if not (isinstance(df, (int, float)) and df > 0):
            raise ValueError(f"StudentT df must be a positive number, got {df!r}")
        if not min_scale > 0 or not init_scale > min_scale:
            raise ValueError(f"need 0 < min_scale < init_scale, got min_scale={min_scale}, init_scale={init_scale}")
        self.data_dim, self.df = data_dim, float(df)
        self.min_scale, self.init_scale = float(min_scale), float(init_scale)
        raw = torch.log(torch.expm1(torch.tensor(init_scale - min_scale)))
        self.raw_scale = nn.Parameter(raw.repeat(data_dim))

    def num_outputs(self, data_dim):
        if data_dim != self.data_dim:
            raise ValueError(f"StudentT was built for data_dim={self.data_dim} features, but the data have {data_dim}")
        return data_dim

    def distribution(self, out):
        scale = (F.softplus(self.raw_scale) + self.min_scale).expand_as(out)
        return dist.StudentT(out.new_full((), self.df), out, scale).to_event(1)

    def mean(self, out):
        return out

    def validate(self, x, columns=None):
        return None

    def to_config(self):
        return {"type": "StudentT", "data_dim": self.data_dim, "df": self.df, "min_scale": self.min_scale, "init_scale": self.init_scale}


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


@register
class NegativeBinomial(Likelihood):
    r"""Negative binomial likelihood for over-dispersed counts.

    :math:`x_{nd} \sim \mathrm{NB}(\mu_{nd}, r_d)` with mean :math:`\mu_{nd} = \exp f_d(z_n)`
    (the decoder outputs the log-mean) and a learned per-feature dispersion :math:`r_d`, so
    that :math:`\mathrm{Var}[x_{nd}] = \mu_{nd} + \mu_{nd}^2 / r_d` (the parametrization of
    scVI [1]_); as :math:`r_d \to \infty` it tends to the Poisson.

    Parameters
    ----------
    data_dim : int
        Number of count features (one dispersion each).
    init_dispersion : float, default 10.0
        Initial :math:`r_d`.

    References
    ----------
    .. [1] R. Lopez, J. Regier, M. B. Cole, M. I. Jordan and N. Yosef, "Deep generative
       modeling for single-cell transcriptomics", Nature Methods 15, 2018,
       doi:10.1038/s41592-018-0229-2.
    """

    def __init__(self, *, data_dim: int, init_dispersion: float = 10.0) -> None:
        super().__init__()
        data_dim = positive_int("NegativeBinomial data_dim", data_dim)
        if not init_dispersion > 0:
            raise ValueError(f"init_dispersion must be positive, got {init_dispersion!r}")
        self.data_dim = data_dim
        self.init_dispersion = float(init_dispersion)
        self.log_dispersion = nn.Parameter(torch.full((data_dim,), float(torch.log(torch.tensor(init_dispersion, device="cpu")))))

    def num_outputs(self, data_dim):
        if data_dim != self.data_dim:
            raise ValueError(f"NegativeBinomial was built for data_dim={self.data_dim} features, but the data have {data_dim}")
        return data_dim

    def distribution(self, out):
        log_r = self.log_dispersion.expand_as(out)
        # NB(total_count=r, logits=log mu - log r) has mean mu
        return dist.NegativeBinomial(total_count=log_r.exp(), logits=out - log_r).to_event(1)

    def mean(self, out):
        return out.exp()

    def dispersion(self) -> torch.Tensor:
        """The learned dispersions :math:`r_d`."""
        return self.log_dispersion.detach().exp()

    def validate(self, x, columns=None):
        Poisson.validate(self, x, columns)  # same support: non-negative integers

    def to_config(self):
        return {"type": "NegativeBinomial", "data_dim": self.data_dim, "init_dispersion": self.init_dispersion}


@register
class Categorical(Likelihood):
    r"""Categorical likelihood for columns coded ``0 .. K-1``.

    Each of the ``d`` columns is a categorical variable with ``num_categories`` levels;
    the decoder outputs ``d * K`` logits (``params_per_feature = K``).
    """

    def __init__(self, num_categories: int) -> None:
        super().__init__()
        if not isinstance(num_categories, int) or num_categories < 2:
            raise ValueError(f"num_categories must be an int >= 2, got {num_categories!r}")
        self.num_categories = num_categories
        self.params_per_feature = num_categories

    def _logits(self, out: torch.Tensor) -> torch.Tensor:
        return out.reshape(*out.shape[:-1], -1, self.num_categories)

    def distribution(self, out):
        return _CategoricalColumns(self._logits(out))

    def mean(self, out):
        """Expected category code :math:`\\sum_k k\\, p_k` per column."""
        probs = torch.softmax(self._logits(out), dim=-1)
        return probs @ torch.arange(self.num_categories, dtype=out.dtype, device=out.device)

    def validate(self, x, columns=None):
        bad = (x < 0) | (x >= self.num_categories) | (x != torch.round(x))
        if bool(bad.any()):
            raise ValueError(
                f"Categorical likelihood with {self.num_categories} categories needs integer codes 0..{self.num_categories - 1}; found {_where(bad, columns)} outside"
            )

    def to_config(self):
        return {"type": "Categorical", "num_categories": self.num_categories}


class _CategoricalColumns(dist.TorchDistribution):
    """Independent categorical columns as one event of shape ``(d,)`` (values are codes)."""

    arg_constraints: dict = {}
    support = dist.constraints.nonnegative_integer

    def __init__(self, logits: torch.Tensor, validate_args=None) -> None:
        self.base = dist.Categorical(logits=logits)
        super().__init__(logits.shape[:-2], logits.shape[-2:-1], validate_args=False)

    def expand(self, batch_shape, _instance=None):
        logits = self.base.logits.expand(*batch_shape, *self.base.logits.shape[-2:])
        return _CategoricalColumns(logits)

    def sample(self, sample_shape=torch.Size()):
        return self.base.sample(sample_shape).to(self.base.logits.dtype)

    def log_prob(self, value):
        return self.cell_log_prob(value).sum(-1)

    def cell_log_prob(self, value):
        return self.base.log_prob(value.long())

    @property
    def mean(self):
        k = self.base.logits.shape[-1]
        return self.base.probs @ torch.arange(k, dtype=self.base.logits.dtype, device=self.base.logits.device)


def cell_log_prob(d: dist.TorchDistribution, value: torch.Tensor) -> torch.Tensor:
    """Per-cell log-densities ``(..., d)`` of a likelihood's distribution (event shape ``(d,)``)."""
    if hasattr(d, "cell_log_prob"):
        return d.cell_log_prob(value)
    if isinstance(d, dist.Independent) and d.reinterpreted_batch_ndims == 1:
        return d.base_dist.log_prob(value)
    raise TypeError(
        f"cannot split the log-density of a {type(d).__name__} into cells; a likelihood used with missing cells must return cell-wise independent features (base.to_event(1)) or define cell_log_prob"
    )


class MaskedCells(dist.TorchDistribution):
    r"""A row distribution restricted to its observed cells.

    .. math::

        \log p(x_{n,\text{obs}} \mid z_n) = \sum_{j=1}^d m_{nj} \log p(x_{nj} \mid z_n),

    which is the exact marginal likelihood of the observed cells because the cells are
    conditionally independent given :math:`z_n` (the HI-VAE factorization [1]_): integrating
    a missing cell out of :math:`\prod_j p(x_{nj} \mid z_n)` leaves the product over the
    observed ones. Missing cells may hold any value in the support (zero-filled at the data
    boundary); they do not enter the density or its gradient. Sampling draws every cell.

    Parameters
    ----------
    base : TorchDistribution with event shape (d,)
        A likelihood's distribution.
    mask : bool Tensor of shape (B, d)
        ``True`` where the cell is observed.

    References
    ----------
    .. [1] A. Nazabal, P. M. Olmos, Z. Ghahramani and I. Valera, "Handling incomplete
       heterogeneous data using VAEs", Pattern Recognition 107, 2020,
       doi:10.1016/j.patcog.2020.107501.
    """

    arg_constraints: dict = {}
    support = dist.constraints.real

    def __init__(self, base: dist.TorchDistribution, mask: torch.Tensor, validate_args=None) -> None:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = observed), got dtype {mask.dtype}")
        if mask.shape[-1:] != base.event_shape:
            raise ValueError(f"mask has {mask.shape[-1]} columns but the likelihood's event shape is {tuple(base.event_shape)}")
        self.base, self.mask = base, mask
        batch = torch.broadcast_shapes(base.batch_shape, mask.shape[:-1])
        super().__init__(batch, base.event_shape, validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return MaskedCells(self.base.expand(batch_shape), self.mask)

    def sample(self, sample_shape=torch.Size()):
        return self.base.sample(sample_shape)

    @property
    def mean(self):
        return self.base.mean

    def cell_log_prob(self, value):
        lp = cell_log_prob(self.base, value)
        return torch.where(self.mask, lp, lp.new_zeros(()))

    def log_prob(self, value):
        return self.cell_log_prob(value).sum(-1)
