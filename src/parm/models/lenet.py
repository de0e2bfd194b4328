"""LeNet-5, made size-agnostic so it serves both 28x28 (MNIST) and 32x32 (CIFAR) inputs."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from parm.models.shapes import check_input_shape, check_positive_int


class LeNet5(nn.Module):
    """conv5-6, maxpool, conv5-16, maxpool, 120, 84, classes.

    The first convolution pads by 2 so 28x28 behaves like the classic 32x32 input; an adaptive pool
    to 5x5 before the classifier makes any H, W >= 12 work with the same parameter count.

    Args:
        input_shape: ``(C, H, W)`` with any channel count and H, W >= 12.
        num_classes: number of outputs.

    Shape:
        input ``(B, C, H, W)``, output ``(B, num_classes)``.
    """

    def __init__(self, *, input_shape: Iterable[int], num_classes: int) -> None:
        super().__init__()
        # conv1 keeps H, W; conv2 (5x5, no padding) then needs 6x6 after the first pool so the second pool sees 2x2.
        self.input_shape = check_input_shape("LeNet5", input_shape, ndim=3, min_hw=12)
        self.num_classes = check_positive_int("LeNet5", "num_classes", num_classes)
        self.features = nn.Sequential(
            nn.Conv2d(self.input_shape[0], 6, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d((5, 5)),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, self.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C, H, W)`` to logits ``(B, num_classes)``."""
        return self.classifier(self.features(x))
