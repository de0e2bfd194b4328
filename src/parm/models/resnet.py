"""ResNet-18 in its CIFAR form (3x3 stem, no max-pool), as used for the ParM CIFAR experiments."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from parm.models.shapes import check_input_shape, check_positive_int


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut.

    Shape:
        input ``(B, in_planes, H, W)``, output ``(B, planes, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block forward; see the class docstring for shapes."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR ResNet-18: 3x3 stem, four stages of two BasicBlocks, global average pool, linear head.

    Args:
        input_shape: ``(C, H, W)`` with H, W >= 8; ``C`` sets the stem's input channels.
        num_classes: number of outputs.
        width: channels of the first stage; stages use ``width * (1, 2, 4, 8)`` (64 gives the standard
            64-512 network, small values give fast test models).

    Shape:
        input ``(B, C, H, W)``, output ``(B, num_classes)``.
    """

    stage_blocks = (2, 2, 2, 2)

    def __init__(self, *, input_shape: Iterable[int], num_classes: int, width: int = 64) -> None:
        super().__init__()
        # Three stride-2 stages: 8x8 is the smallest input that reaches the last stage at 1x1.
        self.input_shape = check_input_shape("ResNet18", input_shape, ndim=3, min_hw=8)
        self.num_classes = check_positive_int("ResNet18", "num_classes", num_classes)
        self.width = check_positive_int("ResNet18", "width", width)
        self.stem = nn.Sequential(
            nn.Conv2d(self.input_shape[0], width, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        in_planes = width
        for i, blocks in enumerate(self.stage_blocks):
            planes = width * 2**i
            strides = [1 if i == 0 else 2] + [1] * (blocks - 1)
            layer = []
            for stride in strides:
                layer.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_planes, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C, H, W)`` to logits ``(B, num_classes)``."""
        out = self.stem(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(torch.flatten(self.pool(out), 1))
