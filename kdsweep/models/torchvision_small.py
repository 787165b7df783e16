"""torchvision's ImageNet models, adapted to small images and 1- or 3-channel inputs.

On 8x8 digits or 32x32 CIFAR their stride-2 stem and max-pool throw away most of the image before
the first block: at or below `SMALL_IMAGE` pixels the stem becomes a stride-1 3x3 convolution
without max-pool (the CIFAR recipe used by RepDistiller and mdistiller). `small_input_stem` chooses
either stem whatever the size: a state_dict trained elsewhere holds one of the two.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torchvision.models as tvm
from torch import nn

from kdsweep.models.registry import SMALL_IMAGE, ModelFn, register_model


def uses_small_stem(image_size: int, small_input_stem: bool | None) -> bool:
    """The stem a builder makes: as asked, or (None) the small one at or below SMALL_IMAGE pixels."""
    return image_size <= SMALL_IMAGE if small_input_stem is None else small_input_stem


def _stem_conv(in_channels: int, out_channels: int, small: bool, like: nn.Conv2d) -> nn.Conv2d:
    if small:
        return nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1, bias=False)
    return nn.Conv2d(in_channels, out_channels, like.kernel_size, like.stride, like.padding, bias=False)


def _torchvision_resnet(factory: Callable[..., nn.Module]) -> ModelFn:
    def build(num_classes: int, in_channels: int, image_size: int, small_input_stem: bool | None = None) -> nn.Module:
        model = factory(weights=None, num_classes=num_classes)
        small = uses_small_stem(image_size, small_input_stem)
        model.conv1 = _stem_conv(in_channels, 64, small, model.conv1)
        if small:
            model.maxpool = nn.Identity()
        return model

    return build


def _torchvision_vgg(factory: Callable[..., nn.Module]) -> ModelFn:
    def build(num_classes: int, in_channels: int, image_size: int, small_input_stem: bool | None = None) -> nn.Module:
        model = factory(weights=None, num_classes=num_classes)
        first = model.features[0]
        model.features[0] = nn.Conv2d(in_channels, first.out_channels, 3, padding=1)
        if uses_small_stem(image_size, small_input_stem):
            # Keep only the pools the image can afford, and a CIFAR-style linear head instead of the
            # 25088x4096 ImageNet classifier that would dwarf the convolutions.
            pools = [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)]
            affordable = max(0, int(math.log2(image_size)))
            for index in pools[affordable:]:
                model.features[index] = nn.Identity()
            model.avgpool = nn.AdaptiveAvgPool2d(1)
            model.classifier = nn.Linear(512, num_classes)
        return model

    return build


def _torchvision_mobilenet(factory: Callable[..., nn.Module]) -> ModelFn:
    def build(num_classes: int, in_channels: int, image_size: int, small_input_stem: bool | None = None) -> nn.Module:
        model = factory(weights=None, num_classes=num_classes)
        stem = model.features[0][0]
        small = uses_small_stem(image_size, small_input_stem)
        model.features[0][0] = _stem_conv(in_channels, stem.out_channels, small, stem)
        return model

    return build


def _torchvision_shufflenet(factory: Callable[..., nn.Module]) -> ModelFn:
    def build(num_classes: int, in_channels: int, image_size: int, small_input_stem: bool | None = None) -> nn.Module:
        model = factory(weights=None, num_classes=num_classes)
        stem = model.conv1[0]
        small = uses_small_stem(image_size, small_input_stem)
        model.conv1[0] = _stem_conv(in_channels, stem.out_channels, small, stem)
        if small:
            model.maxpool = nn.Identity()
        return model

    return build


for _name, _factory in [("resnet18", tvm.resnet18), ("resnet34", tvm.resnet34), ("resnet50", tvm.resnet50)]:
    register_model(_name, "teacher", stems=True)(_torchvision_resnet(_factory))
for _name, _factory in [("vgg11_bn", tvm.vgg11_bn), ("vgg16_bn", tvm.vgg16_bn)]:
    register_model(_name, "teacher", stems=True)(_torchvision_vgg(_factory))
for _name, _factory in [("mobilenet_v2", tvm.mobilenet_v2), ("mobilenet_v3_small", tvm.mobilenet_v3_small)]:
    register_model(_name, "student", stems=True)(_torchvision_mobilenet(_factory))
for _name, _factory in [
    ("shufflenet_v2_x0_5", tvm.shufflenet_v2_x0_5),
    ("shufflenet_v2_x1_0", tvm.shufflenet_v2_x1_0),
]:
    register_model(_name, "student", stems=True)(_torchvision_shufflenet(_factory))
