"""He et al. 2016's CIFAR ResNets (depth 6n+2), with RepDistiller's widths for the x4 variants."""

from __future__ import annotations

import torch
from torch import nn

from kdsweep.models.registry import ModelFn, register_model


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al. 2016's CIFAR ResNet (depth 6n+2), with RepDistiller's widths for the x4 variants."""

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int, in_channels: int):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        layers: list[nn.Module] = []
        in_planes = widths[0]
        for stage, planes in enumerate(widths[1:]):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def _cifar_resnet(depth: int, widths: tuple[int, int, int, int]) -> ModelFn:
    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        return CifarResNet(depth, widths, num_classes, in_channels)

    return build


for _name, _depth, _widths, _role in [
    ("resnet8", 8, (16, 16, 32, 64), "student"),
    ("resnet20", 20, (16, 16, 32, 64), "student"),
    ("resnet32", 32, (16, 16, 32, 64), "student"),
    ("resnet56", 56, (16, 16, 32, 64), "teacher"),
    ("resnet110", 110, (16, 16, 32, 64), "teacher"),
    ("resnet8x4", 8, (32, 64, 128, 256), "student"),
    ("resnet32x4", 32, (32, 64, 128, 256), "teacher"),
]:
    register_model(_name, _role)(_cifar_resnet(_depth, _widths))
