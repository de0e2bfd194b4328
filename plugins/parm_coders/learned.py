"""Learned coders: a small network maps the k queries to r parities, and an MLP over the k + r
output vectors rebuilds the missing ones. Trained jointly with the parity model."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from parm.coding import CodeSpec, Decoder, Encoder


class LearnedEncoder(Encoder):
    """Trainable encoder: dilated convolutions for images, an MLP otherwise.

    Args:
        spec: the code.
        input_shape: shape of one query.
        arch: ``"auto"`` (conv for ``(C, H, W)`` inputs), ``"conv"`` or ``"mlp"``.
        hidden: MLP hidden width (multiple of the input size) or conv channels per input channel.
    """

    traits: ClassVar[frozenset[str]] = frozenset({"learned"})

    def __init__(self, spec: CodeSpec, input_shape: tuple[int, ...], arch: str = "auto", hidden: int = 2) -> None:
        super().__init__(spec, input_shape)
        if arch not in ("auto", "conv", "mlp"):
            raise ValueError(f"learned encoder arch must be 'auto', 'conv' or 'mlp', got {arch!r}.")
        if arch == "auto":
            arch = "conv" if len(self.input_shape) == 3 else "mlp"
        if arch == "conv" and len(self.input_shape) != 3:
            raise ValueError(f"learned encoder arch='conv' needs (C, H, W) inputs, got {self.input_shape}.")
        if hidden < 1:
            raise ValueError(f"learned encoder hidden must be >= 1, got {hidden}.")
        self.arch = arch
        k, r = spec.k, spec.r
        if arch == "conv":
            channels = self.input_shape[0]
            width = hidden * channels * k
            layers: list[nn.Module] = []
            in_ch = k * channels
            for dilation in (1, 2, 4, 8, 1):
                layers += [nn.Conv2d(in_ch, width, 3, padding=dilation, dilation=dilation), nn.ReLU()]
                in_ch = width
            layers.append(nn.Conv2d(in_ch, r * channels, 1))
            self.net: nn.Module = nn.Sequential(*layers)
        else:
            size = math.prod(self.input_shape)
            self.net = nn.Sequential(
                nn.Linear(k * size, hidden * size), nn.ReLU(), nn.Linear(hidden * size, hidden * size), nn.ReLU(),
                nn.Linear(hidden * size, r * size),
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, k, *S)`` -> ``(B, r, *S)``."""
        batch = x.shape[0]
        if self.arch == "conv":
            _, height, width = self.input_shape
            out = self.net(x.reshape(batch, -1, height, width))
        else:
            out = self.net(x.reshape(batch, -1))
        return out.reshape(batch, self.spec.r, *self.input_shape)


class LearnedDecoder(Decoder):
    """MLP over the k + r output vectors (missing ones zeroed, plus the availability mask).

    Pairs with any encoder.

    Args:
        spec: the code.
        output_shape: shape of one output of F.
        encoder: the paired encoder.
        hidden: hidden width as a multiple of ``(k + r) * D``.
    """

    def __init__(self, spec: CodeSpec, output_shape: tuple[int, ...], encoder: Encoder, hidden: int = 2) -> None:
        super().__init__(spec, output_shape, encoder)
        if hidden < 1:
            raise ValueError(f"learned decoder hidden must be >= 1, got {hidden}.")
        size = spec.n * self.output_dim
        self.net = nn.Sequential(
            nn.Linear(size + spec.n, hidden * size), nn.ReLU(), nn.Linear(hidden * size, hidden * size), nn.ReLU(),
            nn.Linear(hidden * size, spec.k * self.output_dim),
        )

    def decode(self, outputs: torch.Tensor, parities: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        batch = outputs.shape[0]
        features = torch.cat(
            [outputs.reshape(batch, -1), parities.reshape(batch, -1), available.to(outputs.dtype)], dim=1
        )
        return self.net(features).reshape(batch, self.spec.k, self.output_dim)
