"""VGG-11 with BatchNorm for spectrogram inputs (Speech Commands, 1x40x101 log-mel by default)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from parm.models.shapes import check_input_shape, check_positive_int

# Output channels of each 3x3 conv; "M" is a 2x2 max-pool.
_VGG11: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(nn.Module):
    """VGG-11 (configuration "A") with BatchNorm and a global-average-pooled linear head.

    Max-pools use ``ceil_mode`` so the five halvings never shrink a side to zero, and the adaptive
    pool before the head makes the parameter count independent of H and W.

    Args:
        input_shape: ``(C, H, W)`` with H, W >= 8, e.g. ``(1, 40, 101)`` for 40 mel bands x 101 frames.
        num_classes: number of outputs.
        width_mult: scales every conv width (at least 1 channel each); 1.0 is the standard 64-512 VGG.

    Shape:
        input ``(B, C, H, W)``, output ``(B, num_classes)``.
    """

    def __init__(
        self,
        *,
        input_shape: Iterable[int] = (1, 40, 101),
        num_classes: int,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        self.input_shape = check_input_shape("VGG11", input_shape, ndim=3, min_hw=8)
        self.num_classes = check_positive_int("VGG11", "num_classes", num_classes)
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or width_mult <= 0:
            raise ValueError(f"VGG11.width_mult must be a number > 0, got {width_mult!r}.")
        self.width_mult = float(width_mult)
        layers: list[nn.Module] = []
        in_channels = self.input_shape[0]
        for item in _VGG11:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                continue
            out_channels = max(1, round(int(item) * self.width_mult))
            layers += [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(in_channels, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C, H, W)`` to logits ``(B, num_classes)``."""
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
