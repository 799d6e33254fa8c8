r"""A two-level hierarchy of local latents: z2 ~ N(0, I), z1 | z2 ~ N(f(z2), diag g(z2))."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from bayesvae._checks import positive_int
from bayesvae._registry import register
from bayesvae.models.priors import LocalSite, Prior
from bayesvae.nn import MLP

__all__ = ["HierarchicalLatentPrior", "Z1", "Z2"]

#: Site of the bottom latent :math:`z_1` (the decoder's input).
Z1 = "z1"
#: Site of the top latent :math:`z_2`.
Z2 = "z2"

#: Floor of the conditional scale :math:`g(z_2)`.
MIN_SCALE = 1e-3


@register
class HierarchicalLatentPrior(Prior):
    r"""Two stochastic layers of local latents with a learned conditional prior.

    .. math::

        z_{2,n} \sim \mathcal N(0, I_{L_2}), \qquad
        z_{1,n} \mid z_{2,n} \sim \mathcal N\big(f(z_{2,n}), \mathrm{diag}\, g(z_{2,n})^2\big),
        \qquad x_n \sim p(x \mid \mathrm{decoder}(z_{1,n})),

    with :math:`[f, \log(e^{g - g_0} - 1)] = \mathrm{MLP}(z_2)` (softplus scale with floor
    :math:`g_0 = 10^{-3}`), a network of the model (point-estimated, like the decoder).
    Both sites are **local** (``"z2"`` then ``"z1"``); there are no global sites.

    Parameters
    ----------
    dims : (int, int)
        ``(top, bottom)`` = :math:`(L_2, L_1)`; ``latent_dim`` is :math:`L_1`.
    hidden : sequence of int, default (64,)
        Hidden widths of the conditional network :math:`z_2 \mapsto (f, g)`.
    activation : str, default "tanh"
        Its nonlinearity.

    Notes
    -----
    **Guide.** The site declarations make an amortized guide factorise as
    :math:`q(z_2 \mid x)\, q(z_1 \mid x, z_2)` (``"z1"`` has ``conditions_on=("z2",)``): the
    top latent is inferred first, then the bottom one given :math:`x` and the sampled
    :math:`z_2` -- the *generative* (top-down) order. We chose it because (i) the exact
    posterior factorises the same way, :math:`p(z_2 \mid x)\, p(z_1 \mid x, z_2)`, and a
    Gaussian :math:`q(z_1 \mid x, z_2)` makes the marginal :math:`q(z_1 \mid x)` a
    continuous mixture, more flexible than the single Gaussian a bottom-up
    :math:`q(z_1 \mid x)\, q(z_2 \mid z_1)` would give the layer the decoder reads; and
    (ii) the model's and guide's site orders coincide, so ``TraceMeanField_ELBO`` is valid:
    given the one sampled :math:`z_2`, :math:`\mathrm{KL}(q(z_1 \mid x, z_2) \,\|\,
    p(z_1 \mid z_2))` is between two diagonal Gaussians and computed analytically, an
    unbiased single-sample estimate of :math:`\mathbb E_{q(z_2)}\mathrm{KL}` (the
    Ladder VAE's [2]_ top-down KL, with a bottom-up encoder).

    **KL per site.** ``"z2"``: analytic; ``"z1"``: analytic given the sampled ``z2`` (so
    Monte Carlo over ``z2`` only). Under ``Trace_ELBO`` both are Monte Carlo. Both sites are
    inside the data plate and rescaled by :math:`N / B` under minibatching.

    References
    ----------
    .. [1] D. J. Rezende, S. Mohamed and D. Wierstra, "Stochastic Backpropagation and
       Approximate Inference in Deep Generative Models", ICML 2014, arXiv:1401.4082.
    .. [2] C. K. Sønderby, T. Raiko, L. Maaløe, S. K. Sønderby and O. Winther, "Ladder
       Variational Autoencoders", NIPS 2016, arXiv:1602.02282.

    Examples
    --------
    >>> from bayesvae.models import VAE, Bernoulli
    >>> from bayesvae.nn import MLP
    >>> prior = HierarchicalLatentPrior(dims=(2, 8))
    >>> model = VAE(prior=prior, likelihood=Bernoulli(), decoder=MLP(8, 64))
    >>> model.sample(5)["z"].shape
    torch.Size([5, 8])
    """

    def __init__(
        self,
        dims: Sequence[int],
        *,
        hidden: Sequence[int] = (64,),
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence) or len(dims) != 2:
            raise ValueError(f"dims must be a pair (top, bottom) of positive ints, got {dims!r}")
        self.top = positive_int("dims[0] (top)", dims[0])
        self.bottom = positive_int("dims[1] (bottom)", dims[1])
        self.latent_dim = self.bottom
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.conditional = MLP(self.top, 2 * self.bottom, hidden=self.hidden, activation=activation)

    @property
    def dims(self) -> tuple[int, int]:
        """``(top, bottom)``."""
        return (self.top, self.bottom)

    def local_sites(self) -> tuple[LocalSite, ...]:
        return (
            LocalSite(Z2, self.top, "normal"),
            LocalSite(Z1, self.bottom, "normal", conditions_on=(Z2,)),
        )

    def conditional_prior(self, z2: torch.Tensor) -> dist.TorchDistribution:
        r""":math:`p(z_1 \mid z_2)` for ``z2`` of shape ``(..., top)``; event shape ``(bottom,)``."""
        loc, raw = self.conditional(z2).chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw) + MIN_SCALE).to_event(1)

    def sample_locals(
        self,
        batch_size: int,
        globals_: dict[str, torch.Tensor],
        *,
        like: torch.Tensor,
        groups: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        zero = like.new_zeros(()).expand(batch_size, self.top)
        one = like.new_ones(()).expand(batch_size, self.top)
        z2 = pyro.sample(Z2, dist.Normal(zero, one).to_event(1))
        z1 = pyro.sample(Z1, self.conditional_prior(z2))
        return {Z2: z2, Z1: z1}

    def decoder_input(
        self, locals_: dict[str, torch.Tensor], globals_: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        return locals_[Z1]

    def to_config(self) -> dict[str, Any]:
        return {
            "type": "HierarchicalLatentPrior",
            "dims": [self.top, self.bottom],
            "hidden": list(self.hidden),
            "activation": self.activation,
        }
