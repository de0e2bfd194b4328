"""The reference fully-connected network of the ParM paper (784-200-100-10 on MNIST)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import pairwise

import torch
from torch import nn

from parm.models.shapes import check_input_shape, check_positive_int


class MLP(nn.Module):
    """Flatten, then fully-connected layers with ReLU between them.

    Args:
        input_shape: shape of one sample, any rank, e.g. ``(1, 28, 28)``.
        num_classes: number of outputs.
        hidden: widths of the hidden layers.

    Shape:
        input ``(B, *input_shape)``, output ``(B, num_classes)``.
    """

    def __init__(
        self,
        *,
        input_shape: Iterable[int],
        num_classes: int,
        hidden: Iterable[int] = (200, 100),
    ) -> None:
        super().__init__()
        self.input_shape = check_input_shape("MLP", input_shape)
        self.num_classes = check_positive_int("MLP", "num_classes", num_classes)
        self.hidden = tuple(check_positive_int("MLP", "hidden", h) for h in hidden)
        widths = (math.prod(self.input_shape), *self.hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        for w_in, w_out in pairwise(widths):
            layers += [nn.Linear(w_in, w_out), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(widths[-1], self.num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, *input_shape)`` to logits ``(B, num_classes)``."""
        return self.net(x)


class ReferenceMLP(nn.Module):
    """The MLP of the reference ParM code, with its state-dict layout (``nn.0``, ``nn.2``, ``nn.4``).

    Loads the reference code's shipped base models as plain state dicts; its constructor takes its own
    arguments, not parm's ``input_shape``, as a user's own network would.

    Args:
        in_features: flattened input size (784 for 28x28 images).
        hidden: widths of the hidden layers.
        num_classes: number of outputs.

    Shape:
        input ``(B, *)`` with ``in_features`` elements per sample, output ``(B, num_classes)``.
    """

    def __init__(self, in_features: int = 784, hidden: Iterable[int] = (200, 100), num_classes: int = 10) -> None:
        super().__init__()
        widths = (check_positive_int("ReferenceMLP", "in_features", in_features),
                  *(check_positive_int("ReferenceMLP", "hidden", h) for h in hidden))
        layers: list[nn.Module] = []
        for w_in, w_out in pairwise(widths):
            layers += [nn.Linear(w_in, w_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], check_positive_int("ReferenceMLP", "num_classes", num_classes)))
        self.nn = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, ...)`` to logits ``(B, num_classes)``."""
        return self.nn(x.flatten(1))
