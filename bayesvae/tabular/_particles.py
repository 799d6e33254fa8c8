r"""Per-row importance weights over z for a table with missing cells, read from traces.

For row :math:`n` with observed cells :math:`x_{n,\text{obs}}` (mask :math:`m_n`) the guide draws
:math:`z_{nk} \sim q(z \mid x_{n,\text{obs}}, m_n)`, :math:`k = 1..K`, and the model is replayed
on each draw. Each particle's log weight is the sum of the *unscaled* log-densities of the
sites in the data plate,

.. math::

    \log w_{nk} = \log p(x_{n,\text{obs}} \mid z_{nk}) + \log p(z_{nk})
                  - \log q(z_{nk} \mid x_{n,\text{obs}}, m_n),

(the masked observation site contributes the observed cells only). Global sites outside the
plate are drawn once per particle from their guide and not weighted: :math:`q(g)` stands in
for their posterior given the training data, as for held-out scores (ARCHITECTURE.md). The
self-normalized weights :math:`\tilde w_{nk} = w_{nk} / \sum_l w_{nl}` approximate the
posterior :math:`p(z \mid x_{n,\text{obs}})` [1]_.

References
----------
.. [1] P.-A. Mattei and J. Frellsen, "MIWAE: Deep generative modelling and imputation of
   incomplete data sets", ICML 2019, arXiv:1812.02633, eq. (11)-(13).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from pyro import poutine

from bayesvae.convention import DATA_PLATE, Call

__all__ = ["Particles", "draw_particles"]


@dataclass(frozen=True)
class Particles:
    """K weighted posterior draws per row.

    Attributes
    ----------
    log_weights : Tensor of shape (K, N)
        Unnormalized log importance weights :math:`\\log w_{nk}`.
    out : Tensor of shape (K, N, P)
        The decoder output of each draw (the model's return value).
    """

    log_weights: torch.Tensor
    out: torch.Tensor

    @property
    def weights(self) -> torch.Tensor:
        """Self-normalized weights :math:`\\tilde w_{nk}`, shape (K, N), summing to 1 over K."""
        return torch.softmax(self.log_weights, dim=0)

    def effective_sample_size(self) -> torch.Tensor:
        """Kish's effective sample size :math:`1 / \\sum_k \\tilde w_{nk}^2` per row, shape (N,)."""
        return 1.0 / (self.weights**2).sum(0)


def _in_plate(site) -> bool:
    return any(f.name == DATA_PLATE for f in site["cond_indep_stack"])


def _local_log_prob(trace) -> torch.Tensor:
    """Sum over the data-plate sample sites of the unscaled per-row log-density."""
    total = None
    for site in trace.nodes.values():
        if site["type"] != "sample" or not _in_plate(site):
            continue
        lp = site["fn"].log_prob(site["value"])
        total = lp if total is None else total + lp
    if total is None:
        raise ValueError(f"the model has no sample site inside a plate named {DATA_PLATE!r}; tabular imputation needs the package's data plate")
    return total


@torch.no_grad()
def draw_particles(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    mask: torch.Tensor,
    *,
    num_particles: int,
    seed: int | None,
    max_rows: int = 65536,
) -> Particles:
    """Draw ``num_particles`` guide samples per row and weight them by the replayed model.

    The rows are stacked ``c`` times into one call of ``c * N`` rows (``c * N <= max_rows``):
    points in the data plate are conditionally independent, so each copy of a row is an
    independent draw of its :math:`z` (global sites are drawn once per call).

    Parameters
    ----------
    model, guide : callable
        The package's VAE (returning its decoder output) and a guide of the same convention.
    x : Tensor of shape (N, d)
        Encoded, zero-filled rows.
    mask : bool Tensor of shape (N, d)
        ``True`` where a cell is observed.
    num_particles : int
        K.
    seed : int or None
        Seeds the draws without touching the global RNG state (``None``: the current state).
    max_rows : int
        Most rows in one call.
    """
    model_fn, guide_fn = Call(model), Call(guide)
    n = x.shape[0]
    per_call = max(1, min(num_particles, max_rows // max(n, 1)))
    logs, outs = [], []
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        done = 0
        while done < num_particles:
            c = min(per_call, num_particles - done)
            xs, ms = x.repeat(c, 1), mask.repeat(c, 1)
            q = poutine.trace(guide_fn).get_trace(xs, mask=ms)
            p = poutine.trace(poutine.replay(model_fn, trace=q)).get_trace(xs, mask=ms)
            logs.append((_local_log_prob(p) - _local_log_prob(q)).reshape(c, n))
            out = p.nodes["_RETURN"]["value"]
            outs.append(out.reshape(c, n, out.shape[-1]))
            done += c
    return Particles(log_weights=torch.cat(logs), out=torch.cat(outs))
