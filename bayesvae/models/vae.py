r"""The generative model: prior p(z) x decoder x likelihood p(x | z), as a Pyro model."""

from __future__ import annotations

from typing import Any

import pyro
import torch
from torch import nn

from bayesvae._registry import build, register
from bayesvae.models.likelihoods import Likelihood, X
from bayesvae.models.priors import Prior

__all__ = ["VAE", "data_plate"]

#: Name of the data plate shared by models and guides.
DATA_PLATE = "data"


def data_plate(
    batch_size: int, index: torch.Tensor | None, num_data: int | None
) -> pyro.plate:
    """The data plate over a minibatch.

    With ``num_data`` given, the plate has size ``num_data`` and the minibatch's rows as its
    subsample, so every site inside is scaled by ``num_data / batch_size`` (an unbiased
    estimate of the full-data sum); global sites outside are not scaled.
    """
    if num_data is None or num_data == batch_size:
        return pyro.plate(DATA_PLATE, batch_size, dim=-1)
    if index is None:
        raise ValueError("a subsampled model call needs index= (the rows of the minibatch)")
    return pyro.plate(DATA_PLATE, num_data, subsample=index, dim=-1)


@register
class VAE(nn.Module):
    r"""A deep latent-variable model :math:`p_\theta(x, z) = p(z)\, p_\theta(x \mid z)`.

    Calling the module runs the Pyro model function

    .. code-block:: text

        globals ~ prior (outside the plate)
        for n in plate("data", N, subsample=index):
            z_n ~ prior(. | globals)
            x_n ~ likelihood(decoder(prior.decoder_input(z_n, globals)))

    Parameters
    ----------
    prior : Prior
        p(z) with its global and local sites (e.g. :class:`~bayesvae.models.GaussianPrior`).
    likelihood : Likelihood
        p(x | z) given the decoder output (e.g. :class:`~bayesvae.models.Bernoulli`).
    decoder : nn.Module
        Maps ``(batch, prior.latent_dim)`` to ``(batch, likelihood.num_outputs(data_dim))``.
    data_dim : int, optional
        Number of observed features; read from ``decoder.out_features`` when omitted.

    Notes
    -----
    The model is an ordinary Pyro model ``model(x, *, index=None, num_data=None,
    groups=None, mask=None)``: ``x`` is a ``(batch, data_dim)`` tensor (``None`` to sample),
    ``index`` the minibatch's row numbers in the full data, ``num_data`` the full data size
    ``N`` (sites in the plate are scaled by ``N / batch``), ``groups`` per-row group labels for
    priors that need them, ``mask`` a bool ``(batch, data_dim)`` tensor that is ``True`` where
    a cell is observed: the log-likelihood of a missing cell is left out
    (:meth:`~bayesvae.models.Likelihood.observed`), so the ELBO bounds
    :math:`\log p(x_{\text{obs}})`. Modules are held by the object, not registered in Pyro's global
    parameter store: :func:`bayesvae.fit` optimizes ``model.parameters()`` directly.

    References
    ----------
    .. [1] D. P. Kingma and M. Welling, "Auto-Encoding Variational Bayes", ICLR 2014,
       arXiv:1312.6114.
    .. [2] D. J. Rezende, S. Mohamed and D. Wierstra, "Stochastic Backpropagation and
       Approximate Inference in Deep Generative Models", ICML 2014, arXiv:1401.4082.

    Examples
    --------
    >>> from bayesvae.models import VAE, GaussianPrior, Bernoulli
    >>> from bayesvae.nn import MLP
    >>> model = VAE(prior=GaussianPrior(2), likelihood=Bernoulli(), decoder=MLP(2, 64))
    >>> model.data_dim
    64
    """

    def __init__(
        self,
        *,
        prior: Prior,
        likelihood: Likelihood,
        decoder: nn.Module,
        data_dim: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(prior, Prior):
            raise TypeError(f"prior must be a bayesvae Prior, got {type(prior).__name__}")
        if not isinstance(likelihood, Likelihood):
            raise TypeError(
                f"likelihood must be a bayesvae Likelihood, got {type(likelihood).__name__}"
            )
        if not isinstance(decoder, nn.Module):
            raise TypeError(f"decoder must be a torch nn.Module, got {type(decoder).__name__}")
        out = getattr(decoder, "out_features", None)
        if data_dim is None:  # a likelihood with per-feature parameters knows its width
            data_dim = getattr(likelihood, "data_dim", None)
        if data_dim is None:
            if out is None:
                raise ValueError("pass data_dim= when the decoder has no out_features attribute")
            if out % likelihood.params_per_feature:
                raise ValueError(
                    f"decoder.out_features={out} is not a multiple of the likelihood's {likelihood.params_per_feature} outputs per feature"
                )
            data_dim = out // likelihood.params_per_feature
        need = likelihood.num_outputs(data_dim)
        if out is not None and out != need:
            raise ValueError(
                f"decoder outputs {out} values but {type(likelihood).__name__} needs {need} for data_dim={data_dim}"
            )
        inp = getattr(decoder, "in_features", None)
        if inp is not None and inp != prior.latent_dim:
            raise ValueError(
                f"decoder takes {inp} inputs but the prior's latent_dim is {prior.latent_dim}"
            )
        self.prior = prior
        self.likelihood = likelihood
        self.decoder = decoder
        self.data_dim = int(data_dim)

    # The model function -------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor | None = None,
        *,
        index: torch.Tensor | None = None,
        num_data: int | None = None,
        groups: torch.Tensor | None = None,
        batch_size: int | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the model; returns the decoder output for the batch."""
        like, n = self._like(x, batch_size)
        globals_ = self.prior.sample_globals(like=like)
        with data_plate(n, index, num_data):
            locals_ = self.prior.sample_locals(n, globals_, like=like, groups=groups)
            out = self.decoder(self.prior.decoder_input(locals_, globals_))
            pyro.sample(X, self.likelihood.observed(out, mask), obs=x)
        return out

    def _like(self, x: torch.Tensor | None, batch_size: int | None) -> tuple[torch.Tensor, int]:
        if x is not None:
            return x, x.shape[0]
        if batch_size is None:
            raise ValueError("to sample from the model pass batch_size= when x is None")
        ref = next(self.parameters(), None)
        like = torch.zeros((), device=ref.device, dtype=ref.dtype) if ref is not None else torch.zeros(())
        return like, int(batch_size)

    @torch.no_grad()
    def sample(self, num_samples: int, *, groups: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Draw ``num_samples`` points from the prior predictive.

        Returns
        -------
        dict
            ``"z"``: decoder inputs ``(num_samples, latent_dim)``; ``"mean"``: E[x | z];
            ``"x"``: a draw of x; and every latent site's value by its name.
        """
        trace = pyro.poutine.trace(self).get_trace(batch_size=num_samples, groups=groups)
        sites = {
            name: site["value"] for name, site in trace.nodes.items() if site["type"] == "sample"
        }
        out = trace.nodes["_RETURN"]["value"]
        locals_ = {s.name: sites[s.name] for s in self.prior.local_sites()}
        globals_ = {s.name: sites[s.name] for s in self.prior.global_sites()}
        return {
            **sites,
            "z": self.prior.decoder_input(locals_, globals_),
            "mean": self.likelihood.mean(out),
            "x": sites[X],
        }

    @torch.no_grad()
    def reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z] for decoder inputs ``z`` of shape ``(batch, latent_dim)``."""
        return self.likelihood.mean(self.decoder(z))

    # Persistence ----------------------------------------------------------------------------
    def to_config(self) -> dict[str, Any]:
        for part in ("prior", "likelihood", "decoder"):
            if not hasattr(getattr(self, part), "to_config"):
                raise TypeError(f"the model's {part} has no to_config(); it cannot be saved by config")
        return {
            "type": "VAE",
            "prior": self.prior.to_config(),
            "likelihood": self.likelihood.to_config(),
            "decoder": self.decoder.to_config(),
            "data_dim": self.data_dim,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> VAE:
        """Rebuild a model from :meth:`to_config` output (weights are loaded separately)."""
        return build(config)
