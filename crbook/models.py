"""The two networks of the book's networks part: a small MLP and the MNIST CNN.

Both follow the source paper. The MLP (2-64-64-2, tanh) classifies Two Moons; its
weights start Xavier-uniform and its biases at zero. The CNN is the paper's MNIST
network, with PyTorch's default initialisation. Each takes its activation by name,
so a smooth network (tanh, GELU, ...) can be set beside a piecewise-linear one
(ReLU) whose derivatives of order two and more vanish almost everywhere except
through the loss.

See chapter 4, λ of a network.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "MLP", "MnistCNN", "activation_module"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "relu": nn.ReLU,
}
"""Activations known by name; all but ``"relu"`` are smooth."""

Activation = str | nn.Module | type[nn.Module]


def activation_module(activation: Activation) -> nn.Module:
    """A fresh activation layer from a name, an ``nn.Module`` class or an instance.

    An instance is copied, so layers never share state (or parameters).
    """
    if isinstance(activation, str):
        key = activation.lower()
        if key not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)} or an nn.Module, "
                f"got {activation!r}"
            )
        return ACTIVATIONS[key]()
    if isinstance(activation, nn.Module):
        return copy.deepcopy(activation)
    if isinstance(activation, type) and issubclass(activation, nn.Module):
        return activation()
    raise TypeError(
        "activation must be a name, an nn.Module class or an nn.Module instance, "
        f"got {activation!r}"
    )


class MLP(nn.Sequential):
    """A fully connected classifier: linear layers with an activation between them.

    Weights are initialised Xavier-uniform (bound ``sqrt(6 / (fan_in +
    fan_out))``) and biases at zero, as in the paper. The output is the logits,
    shape ``(B, sizes[-1])``.

    Parameters
    ----------
    sizes:
        Widths from input to output, e.g. ``(2, 64, 64, 2)``: the paper's Two
        Moons network, with two hidden layers of 64 units.
    activation:
        ``"tanh"`` (default), ``"sigmoid"``, ``"softplus"``, ``"gelu"``,
        ``"silu"``, ``"relu"``, or an ``nn.Module`` class or instance.

    See chapter 4, λ of a network.
    """

    def __init__(
        self, sizes: Sequence[int] = (2, 64, 64, 2), activation: Activation = "tanh"
    ) -> None:
        sizes = tuple(sizes)
        bad = [s for s in sizes if isinstance(s, bool) or not isinstance(s, int)]
        if len(sizes) < 2 or bad or min(sizes) < 1:
            raise ValueError(
                f"sizes must hold at least 2 positive ints (input, ..., output), "
                f"got {list(sizes)}"
            )
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            if i > 0:
                layers.append(activation_module(activation))
            linear = nn.Linear(fan_in, fan_out)
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)
            layers.append(linear)
        super().__init__(*layers)
        self.sizes = sizes


class MnistCNN(nn.Module):
    """The paper's MNIST network: two convolutions, max-pooling, two linear layers.

    ``conv 1→32 (3×3) → act → conv 32→64 (3×3) → act → max-pool 2 → dropout →
    flatten (9216) → linear 9216→128 → act → dropout → linear 128→10``. Inputs are
    ``(B, 1, 28, 28)``; the output is the logits, ``(B, 10)``.

    Parameters
    ----------
    dropout:
        Dropout probability of both dropout layers, in [0, 1) (paper: 0.5).
    activation:
        ``"relu"`` (the paper's), or any name or module :class:`MLP` accepts.

    See chapter 6, MNIST.
    """

    def __init__(self, dropout: float = 0.5, activation: Activation = "relu") -> None:
        super().__init__()
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise TypeError(f"dropout must be a number, got {dropout!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.act1 = activation_module(activation)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.act2 = activation_module(activation)
        self.pool = nn.MaxPool2d(2)
        self.dropout1 = nn.Dropout(dropout)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(9216, 128)
        self.act3 = activation_module(activation)
        self.dropout2 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.conv1(x))  # (B, 32, 26, 26)
        x = self.act2(self.conv2(x))  # (B, 64, 24, 24)
        x = self.dropout1(self.pool(x))  # (B, 64, 12, 12)
        x = self.flatten(x)  # (B, 9216)
        x = self.dropout2(self.act3(self.fc1(x)))  # (B, 128)
        return self.fc2(x)  # (B, 10)
