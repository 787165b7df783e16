"""Zagoruyko & Komodakis 2016's Wide ResNets for CIFAR (WRN-depth-k), the pairs of the CRD/DKD/DIST
benchmarks: wrn_40_2 teaches wrn_16_2 and wrn_40_1."""

from __future__ import annotations

import torch
from torch import nn

from kdsweep.models.registry import ModelFn, register_model


class WideBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv twice, a 1x1 projection where the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(activated))))
        return out + (self.shortcut(activated) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    def __init__(self, depth: int, k: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"Wide ResNet depth must be 6n+4, got {depth}")
        blocks = (depth - 4) // 6
        widths = (16, 16 * k, 32 * k, 64 * k)
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        layers: list[nn.Module] = []
        in_planes = widths[0]
        for stage, planes in enumerate(widths[1:]):
            for block in range(blocks):
                layers.append(WideBlock(in_planes, planes, 2 if stage > 0 and block == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(self.layers(self.stem(x))))


def _wrn(depth: int, k: int) -> ModelFn:
    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        return WideResNet(depth, k, num_classes, in_channels)

    return build


for _name, _depth, _k, _role in [
    ("wrn_40_2", 40, 2, "teacher"),
    ("wrn_16_2", 16, 2, "student"),
    ("wrn_40_1", 40, 1, "student"),
]:
    register_model(_name, _role)(_wrn(_depth, _k))
