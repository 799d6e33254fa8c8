"""Non-amortized per-datapoint mean-field guides: the reference an encoder is measured against."""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from bayesvae._checks import positive_int
from bayesvae._registry import register
from bayesvae.guides._parts import MIN_SCALE, GlobalGuide
from bayesvae.models.vae import VAE, data_plate

__all__ = ["MeanFieldGuide"]


@register
class MeanFieldGuide(nn.Module):
    r"""Per-datapoint mean-field Gaussian guide :math:`q(z_n) = \mathcal N(m_n, \mathrm{diag}\, s_n^2)`.

    Every data point has its own free variational parameters (no encoder). This is the
    family an amortized diagonal-Gaussian encoder can at best match: the difference of their
    ELBOs is the *amortization gap* [1]_. Global sites get the mean-field
    :class:`~bayesvae.guides.GlobalGuide`.

    Parameters
    ----------
    model : VAE
        The model whose sites are mirrored; only ``"normal"`` local sites are supported.
    num_data : int
        Number of data points ``N`` (one parameter row per point).
    init_scale : float, default 1.0
        Initial standard deviation of every factor (locations start at 0).

    Notes
    -----
    The guide needs ``index=`` (the rows of the minibatch) whenever the batch is not the
    whole data set; :func:`bayesvae.fit` always passes it. It cannot encode unseen data.

    References
    ----------
    .. [1] C. Cremer, X. Li and D. Duvenaud, "Inference Suboptimality in Variational
       Autoencoders", ICML 2018, arXiv:1801.03558.
    """

    def __init__(self, model: VAE, num_data: int, *, init_scale: float = 1.0) -> None:
        super().__init__()
        num_data = positive_int("num_data", num_data)
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale!r}")
        self.local_sites = model.prior.local_sites()
        for s in self.local_sites:
            if s.family != "normal" or s.conditions_on:
                raise ValueError(
                    f"MeanFieldGuide supports unconditioned 'normal' local sites only; site {s.name!r} has family {s.family!r}"
                )
        self.num_data = num_data
        self.init_scale = float(init_scale)
        raw0 = float(torch.log(torch.expm1(torch.tensor(float(init_scale)))))
        self.loc = nn.ParameterDict(
            {s.name: nn.Parameter(torch.zeros(num_data, s.dim)) for s in self.local_sites}
        )
        self.raw_scale = nn.ParameterDict(
            {s.name: nn.Parameter(torch.full((num_data, s.dim), raw0)) for s in self.local_sites}
        )
        self.globals = GlobalGuide(model.prior.global_sites())

    def _rows(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        if index is None:
            if x.shape[0] != self.num_data:
                raise ValueError(
                    f"MeanFieldGuide has parameters for {self.num_data} points but got a batch of {x.shape[0]} rows without index="
                )
            return torch.arange(self.num_data, device=x.device)
        if index.numel() and int(index.max()) >= self.num_data:
            raise ValueError(
                f"index refers to row {int(index.max())} but MeanFieldGuide has {self.num_data} rows"
            )
        return index

    def distribution(self, name: str, rows: torch.Tensor) -> dist.TorchDistribution:
        """q(site) for the data points ``rows``."""
        scale = F.softplus(self.raw_scale[name][rows]) + MIN_SCALE
        return dist.Normal(self.loc[name][rows], scale).to_event(1)

    def forward(self, x, *, index=None, num_data=None, groups=None):
        values = self.globals()
        rows = self._rows(x, index)
        with data_plate(x.shape[0], index, num_data):
            for s in self.local_sites:
                values[s.name] = pyro.sample(s.name, self.distribution(s.name, rows))
        return values

    @torch.no_grad()
    def initialize_from(self, posterior: dict[str, dist.TorchDistribution], rows: torch.Tensor) -> None:
        """Set the factors of ``rows`` to given diagonal-Gaussian posteriors (e.g. an encoder's)."""
        for s in self.local_sites:
            q = posterior[s.name]
            base = q.base_dist if isinstance(q, dist.Independent) else q
            self.loc[s.name][rows] = base.loc
            scale = (base.scale - MIN_SCALE).clamp_min(1e-6)
            self.raw_scale[s.name][rows] = scale + torch.log(-torch.expm1(-scale))

    def to_config(self) -> dict[str, Any]:
        return {"type": "MeanFieldGuide", "num_data": self.num_data, "init_scale": self.init_scale}
