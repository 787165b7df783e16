"""The smallest useful edge model: three conv blocks, its width searchable."""

from __future__ import annotations

import math

from torch import nn

from kdsweep.models.registry import register_model


@register_model("small_cnn", "student")
def small_cnn(num_classes: int, in_channels: int, image_size: int, width: int = 16) -> nn.Module:
    """Three conv blocks of width w, 2w, 4w: the smallest useful edge model, its width searchable."""

    def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        return layers + ([nn.MaxPool2d(2)] if pool else [])

    pools = min(2, max(0, int(math.log2(image_size)) - 1))
    return nn.Sequential(
        *block(in_channels, width, pools > 0),
        *block(width, 2 * width, pools > 1),
        *block(2 * width, 4 * width, False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )
