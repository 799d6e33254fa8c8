"""Linear-Gaussian algebra shared by the exact kernels and the estimators."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["LOG_2PI", "as_linear_tensors", "capacitance", "inv_softplus"]

LOG_2PI = math.log(2.0 * math.pi)


def inv_softplus(y: float) -> float:
    """The raw value ``r`` with ``softplus(r) = y``, computed in float64 on the CPU."""
    # An explicit CPU device, so that a config built under ``torch.device("meta")`` (shape
    # checks on load) still gets a number.
    y64 = torch.tensor(float(y), dtype=torch.float64, device="cpu")
    return float(torch.log(torch.expm1(y64)))


def as_linear_tensors(
    W: Any, mu: Any, psi: Any, x: Any | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Inputs as tensors of one common floating dtype and device; shapes checked."""
    ts = [torch.as_tensor(v) for v in (W, mu, psi) + (() if x is None else (x,))]
    dtype = torch.float32
    for t in ts:
        if t.is_floating_point():
            dtype = torch.promote_types(dtype, t.dtype)
    device = ts[0].device
    ts = [t.to(device=device, dtype=dtype) for t in ts]
    W, mu, psi = ts[:3]
    if W.dim() != 2:
        raise ValueError(f"W must have shape (D, L), got shape {tuple(W.shape)}")
    D, L = W.shape
    if mu.shape != (D,):
        raise ValueError(
            f"mu must have shape ({D},) to match W of shape {tuple(W.shape)}, got {tuple(mu.shape)}"
        )
    if psi.dim() == 0:
        psi = psi.expand(D)
    if psi.shape != (D,):
        raise ValueError(f"psi must be a scalar or have shape ({D},), got {tuple(psi.shape)}")
    if not bool((psi > 0).all()):
        raise ValueError(
            f"psi (the noise variances) must be positive; got minimum {float(psi.min()):g}. A zero noise variance makes the Gaussian degenerate."
        )
    xt = None
    if x is not None:
        xt = ts[3]
        if xt.dim() != 2 or xt.shape[1] != D:
            raise ValueError(f"x must have shape (n, {D}) to match W, got {tuple(xt.shape)}")
    return W, mu, psi, xt


def capacitance(W: torch.Tensor, psi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``A = Psi^-1 W`` and the lower Cholesky factor of ``M = I + W^T Psi^-1 W``."""
    A = W / psi.unsqueeze(-1)
    M = W.T @ A
    M = M + torch.eye(W.shape[1], dtype=W.dtype, device=W.device)
    return A, torch.linalg.cholesky(M)
