"""Neural-network building blocks for decoders and encoders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bayesvae._checks import positive_int
from bayesvae._registry import register

__all__ = ["MLP", "ACTIVATIONS"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}


def _activation(name: str) -> type[nn.Module]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


@register
class MLP(nn.Module):
    """A fully connected network ``in_features -> hidden... -> out_features``.

    Parameters
    ----------
    in_features, out_features : int
        Input and output widths.
    hidden : sequence of int, default ()
        Hidden-layer widths; ``()`` gives an affine map ``W z + b`` (the linear decoder
        of factor analysis / probabilistic PCA).
    activation : str, default "relu"
        Nonlinearity after each hidden layer, one of :data:`ACTIVATIONS`.
    bias : bool, default True
        Whether the output layer has a bias (the mean ``mu`` of a linear model).

    Examples
    --------
    >>> net = MLP(8, 64, hidden=(128,))
    >>> net(torch.zeros(5, 8)).shape
    torch.Size([5, 64])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        hidden: Sequence[int] = (),
        activation: str = "relu",
        bias: bool = True,
    ) -> None:
        super().__init__()
        in_features = positive_int("MLP in_features", in_features)
        out_features = positive_int("MLP out_features", out_features)
        hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in hidden):
            raise ValueError(f"MLP hidden sizes must be positive, got {hidden}")
        act = _activation(activation)
        self.in_features = in_features
        self.out_features = out_features
        self.hidden = hidden
        self.activation = activation
        self.bias = bias
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), act()]
            width = h
        layers.append(nn.Linear(width, out_features, bias=bias))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def to_config(self) -> dict[str, Any]:
        return {
            "type": "MLP",
            "in_features": self.in_features,
            "out_features": self.out_features,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "bias": self.bias,
        }
