"""Amortized inference networks q(z | x) that mirror a model's sites."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from bayesvae._registry import register
from bayesvae.guides._parts import GlobalGuide, make_head
from bayesvae.guides.flows import ConditionalIAF
from bayesvae.models.vae import VAE, data_plate
from bayesvae.nn import ACTIVATIONS, MLP

__all__ = ["AmortizedGuide"]


@register
class AmortizedGuide(nn.Module):
    r"""Amortized guide: an encoder network for the local sites, mean-field for the global ones.

    .. math::

        q_\phi(\text{globals}, z_{1:N} \mid x_{1:N})
          = q_\lambda(\text{globals}) \prod_n q_\phi(z_n \mid x_n)

    The encoder trunk ``x -> h`` is an MLP with ``hidden`` widths (``()``: a linear encoder,
    the amortized guide of probabilistic PCA); each of the prior's local sites gets a head
    built for its ``family`` (``"normal"``: a diagonal Gaussian). A head for a site that
    ``conditions_on`` earlier sites also receives their sampled values. Global sites get the
    non-amortized :class:`~bayesvae.guides.GlobalGuide`.

    Parameters
    ----------
    model : VAE
        The model whose sites this guide mirrors (its prior and data width are read).
    hidden : sequence of int, default (400,)
        Widths of the encoder trunk's hidden layers.
    activation : str, default "relu"
        Trunk nonlinearity.
    flows : int, default 0
        Number of conditional inverse autoregressive flow maps on top of each Gaussian
        local site (:mod:`bayesvae.guides.flows`): a non-Gaussian q(z | x) for posteriors
        the diagonal Gaussian fits badly (large Pareto-k̂). 0 keeps the diagonal Gaussian.
    flow_hidden : sequence of int, optional
        Hidden widths of each flow map's autoregressive network (default ``(max(4 dim, 32),)``).
    missing : bool, optional
        Encode rows with missing cells: the trunk reads :math:`[x \odot m, m]` (zero-filled
        values and the observed mask, width ``2 d``), as in the HI-VAE and MIWAE encoders
        [2]_ [3]_. ``None`` (default): on when the model's likelihood has a
        :class:`~bayesvae.models.Schema` whose training frame had missing cells. A guide built
        without it ignores ``mask=`` (it reads the zero-filled values alone).

    Notes
    -----
    Called as ``guide(x, *, index=None, num_data=None, groups=None, mask=None)``, the same
    signature as the model, inside the same data plate; ``mask`` is a bool ``(batch, d)``
    tensor, ``True`` where a cell is observed (all observed when omitted).

    References
    ----------
    .. [1] D. P. Kingma and M. Welling, "Auto-Encoding Variational Bayes", ICLR 2014,
       arXiv:1312.6114.
    .. [2] A. Nazabal, P. M. Olmos, Z. Ghahramani and I. Valera, "Handling incomplete
       heterogeneous data using VAEs", Pattern Recognition 107, 2020,
       doi:10.1016/j.patcog.2020.107501.
    .. [3] P.-A. Mattei and J. Frellsen, "MIWAE: Deep generative modelling and imputation
       of incomplete data sets", ICML 2019, arXiv:1812.02633.
    """

    def __init__(
        self,
        model: VAE,
        *,
        hidden: Sequence[int] = (400,),
        activation: str = "relu",
        flows: int = 0,
        flow_hidden: Sequence[int] | None = None,
        missing: bool | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, VAE):
            raise TypeError(
                f"AmortizedGuide mirrors a bayesvae VAE; got {type(model).__name__}. Write your own Pyro guide for other models."
            )
        hidden = tuple(int(h) for h in hidden)
        self.hidden = hidden
        self.activation = activation
        self.data_dim = model.data_dim
        schema = getattr(model.likelihood, "schema", None)
        self._missing_default = bool(schema is not None and schema.has_missing)
        if missing is None:
            missing = self._missing_default
        if not isinstance(missing, bool):
            raise TypeError(f"missing must be True, False or None, got {type(missing).__name__}")
        self.missing = missing
        # a table's count columns reach the encoder as log1p (held by reference: the
        # likelihood's module belongs to the model)
        features = getattr(model.likelihood, "encoder_features", None)
        self.__dict__["_features"] = features if callable(features) else None
        inputs = 2 * model.data_dim if missing else model.data_dim
        if hidden:
            self.trunk: nn.Module = nn.Sequential(
                MLP(inputs, hidden[-1], hidden=hidden[:-1], activation=activation),
                ACTIVATIONS[activation](),
            )
            width = hidden[-1]
        else:
            self.trunk = nn.Identity()
            width = inputs
        self.local_sites = model.prior.local_sites()
        dims = {s.name: s.dim for s in self.local_sites}
        self.heads = nn.ModuleDict(
            {
                s.name: make_head(s, width + sum(dims[c] for c in s.conditions_on))
                for s in self.local_sites
            }
        )
        self.globals = GlobalGuide(model.prior.global_sites())
        if not isinstance(flows, int) or flows < 0:
            raise ValueError(f"flows must be a non-negative int, got {flows!r}")
        self.flows = flows
        self.flow_hidden = None if flow_hidden is None else tuple(int(h) for h in flow_hidden)
        self.flow = nn.ModuleDict()
        if flows:
            for s in self.local_sites:
                if s.family != "normal" or s.conditions_on:
                    raise ValueError(
                        f"flows apply to unconditioned Gaussian local sites; site {s.name!r} has family {s.family!r}"
                        + (f" and conditions on {list(s.conditions_on)}" if s.conditions_on else "")
                    )
                fh = self.flow_hidden or (max(4 * s.dim, 32),)
                self.flow[s.name] = ConditionalIAF(s.dim, width, flows, fh)
        bind = getattr(model.prior, "bind_encoder", None)
        if bind is not None:  # a prior built on this very encoder (the VampPrior)
            bind(self.posterior)

    def forward(
        self,
        x: torch.Tensor,
        *,
        index: torch.Tensor | None = None,
        num_data: int | None = None,
        groups: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        values = self.globals()
        with data_plate(x.shape[0], index, num_data):
            h = self.trunk(self._input(x, mask))
            for site in self.local_sites:
                values[site.name] = pyro.sample(site.name, self._head(site, h, values))
        return values

    def _input(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The trunk's input: ``x``, or ``[x * m, m]`` for a guide of incomplete rows (count
        columns of a table as ``log1p``, see :meth:`~bayesvae.models.Columns.encoder_features`)."""
        features = self.__dict__.get("_features")
        if features is not None:
            x = features(x)
        if not self.missing:
            return x
        m = x.new_ones(x.shape) if mask is None else mask.to(x.dtype)
        return torch.cat([x * m, m], dim=-1)

    def _head(self, site, h: torch.Tensor, values: dict[str, torch.Tensor]):
        if site.name in self.flow:
            return self.flow[site.name](self.heads[site.name](h), h)
        if site.conditions_on:
            # conditioning values may carry leading particle dims (vectorized particles)
            parts = [h, *(values[c] for c in site.conditions_on)]
            batch = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
            h = torch.cat([p.expand(*batch, p.shape[-1]) for p in parts], dim=-1)
        return self.heads[site.name](h)

    def posterior(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, dist.TorchDistribution]:
        """The local factors q(site | x) for a batch ``x`` (observed cells ``mask``).

        A site that conditions on earlier sites is given their posterior means (a plug-in
        summary, not a sample). ``x`` may be a tensor, a numpy array or a DataFrame (put on
        the guide's device and dtype).
        """
        if not isinstance(x, torch.Tensor):
            from bayesvae.data import as_tensor

            ref = next(self.parameters(), None)
            x, _ = as_tensor(x, device=ref.device if ref is not None else "cpu", dtype=ref.dtype if ref is not None else torch.float32)
        h = self.trunk(self._input(x, mask))
        out: dict[str, dist.TorchDistribution] = {}
        means: dict[str, torch.Tensor] = {}
        for site in self.local_sites:
            q = self._head(site, h, means)
            out[site.name] = q
            means[site.name] = q.mean
        return out

    def to_config(self) -> dict[str, Any]:
        config = {"type": "AmortizedGuide", "hidden": list(self.hidden), "activation": self.activation}
        if self.flows:
            config.update(flows=self.flows, flow_hidden=None if self.flow_hidden is None else list(self.flow_hidden))
        if self.missing or self._missing_default:
            config["missing"] = self.missing
        return config
