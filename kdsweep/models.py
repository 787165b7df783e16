"""Model registry: teachers and students by name, adapted to small images, with size/FLOPs/latency.

torchvision's ImageNet models assume 224x224 RGB inputs; on 8x8 digits or 32x32 CIFAR their
stride-2 stem and max-pool throw away most of the image before the first block. `create_model`
swaps the stem for a stride-1 3x3 convolution on small inputs (the CIFAR recipe used by
RepDistiller and mdistiller) and accepts 1- or 3-channel images.
"""

from __future__ import annotations

import copy
import difflib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torchvision.models as tvm
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Inputs at or below this side length get the small-image stem.
SMALL_IMAGE = 64

ModelFn = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    build: ModelFn
    role: str  # "teacher" or "student": only a hint for help text and default spaces


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, role: str) -> Callable[[ModelFn], ModelFn]:
    def decorator(build: ModelFn) -> ModelFn:
        _MODELS[name] = ModelEntry(build, role)
        return build

    return decorator


def list_models(role: str | None = None) -> list[str]:
    return sorted(n for n, e in _MODELS.items() if role is None or e.role == role)


def unknown_name_message(kind: str, name: str, choices: list[str]) -> str:
    """One line for users: what was wrong, what exists, and the closest match."""
    message = f"unknown {kind} '{name}'"
    close = difflib.get_close_matches(name, choices, n=1)
    if close:
        message += f"; did you mean '{close[0]}'?"
    return message + f" (choose from: {', '.join(choices)})"


def require_model(field: str, name: str) -> None:
    """Bad input, named by `field`, unless `name` is a registered model."""
    from kdsweep.errors import ConfigError

    if name not in _MODELS:
        raise ConfigError(field, unknown_name_message("model", str(name), list_models()))


def create_model(
    name: str, num_classes: int, in_channels: int, image_size: int, width: int | None = None
) -> nn.Module:
    """Build a registered model for `num_classes` outputs and `in_channels` x `image_size`^2 inputs.

    `width` applies only to width-configurable models (`small_cnn`).
    """
    if name not in _MODELS:
        raise ValueError(unknown_name_message("model", name, list_models()))
    kwargs = {"width": width} if width is not None else {}
    return _MODELS[name].build(num_classes, in_channels, image_size, **kwargs)


# ---------------------------------------------------------------- torchvision, adapted


def _stem_conv(in_channels: int, out_channels: int, small: bool, like: nn.Conv2d) -> nn.Conv2d:
    if small:
        return nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1, bias=False)
    return nn.Conv2d(
        in_channels, out_channels, like.kernel_size, like.stride, like.padding, bias=False
    )


def _torchvision_resnet(factory: Callable[..., nn.Module]) -> ModelFn:
    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        model = factory(weights=None, num_classes=num_classes)
        small = image_size <= SMALL_IMAGE
        model.conv1 = _stem_conv(in_channels, 64, small, model.conv1)
        if small:
            model.maxpool = nn.Identity()
        return model

    return build


def _torchvision_vgg(factory: Callable[..., nn.Module]) -> ModelFn:
    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        model = factory(weights=None, num_classes=num_classes)
        first = model.features[0]
        model.features[0] = nn.Conv2d(in_channels, first.out_channels, 3, padding=1)
        if image_size <= SMALL_IMAGE:
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
    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        model = factory(weights=None, num_classes=num_classes)
        stem = model.features[0][0]
        small = image_size <= SMALL_IMAGE
        model.features[0][0] = _stem_conv(in_channels, stem.out_channels, small, stem)
        return model

    return build


def _torchvision_shufflenet(factory: Callable[..., nn.Module]) -> ModelFn:
    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        model = factory(weights=None, num_classes=num_classes)
        stem = model.conv1[0]
        small = image_size <= SMALL_IMAGE
        model.conv1[0] = _stem_conv(in_channels, stem.out_channels, small, stem)
        if small:
            model.maxpool = nn.Identity()
        return model

    return build


for _name, _factory in [("resnet18", tvm.resnet18), ("resnet34", tvm.resnet34), ("resnet50", tvm.resnet50)]:
    register_model(_name, "teacher")(_torchvision_resnet(_factory))
for _name, _factory in [("vgg11_bn", tvm.vgg11_bn), ("vgg16_bn", tvm.vgg16_bn)]:
    register_model(_name, "teacher")(_torchvision_vgg(_factory))
for _name, _factory in [("mobilenet_v2", tvm.mobilenet_v2), ("mobilenet_v3_small", tvm.mobilenet_v3_small)]:
    register_model(_name, "student")(_torchvision_mobilenet(_factory))
for _name, _factory in [
    ("shufflenet_v2_x0_5", tvm.shufflenet_v2_x0_5),
    ("shufflenet_v2_x1_0", tvm.shufflenet_v2_x1_0),
]:
    register_model(_name, "student")(_torchvision_shufflenet(_factory))


class PretrainedUnavailable(ValueError):
    """The asked-for pretrained weights do not exist for this model, or cannot be fetched."""


def load_pretrained(model: nn.Module, name: str, weights: str) -> list[str]:
    """Start `model` from torchvision's pretrained `weights` (e.g. IMAGENET1K_V1) wherever shapes agree.

    The adapted stem (small images, 1 channel) and the classifier head keep their fresh
    initialisation; the returned keys are those not taken from the checkpoint. The file is fetched
    once into torch's hub cache ($TORCH_HOME), checked against its hash, and read weights-only.
    """
    try:
        enum = tvm.get_model_weights(name)
    except (KeyError, ValueError):
        raise PretrainedUnavailable(f"'{name}' has no torchvision pretrained weights (only torchvision models do)") from None
    if weights not in enum.__members__:
        raise PretrainedUnavailable(f"unknown weights '{weights}' for {name} (choose from: {', '.join(enum.__members__)})")
    try:
        state = enum[weights].get_state_dict(progress=False, check_hash=True)
    except OSError as error:  # URLError included: no network
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise PretrainedUnavailable(
            f"cannot download {name} {weights} ({error.__class__.__name__}: {getattr(error, 'reason', error)}); "
            f"without network, put {enum[weights].url.rsplit('/', 1)[-1]} from {enum[weights].url} into {cache}"
        ) from None
    own = model.state_dict()
    usable = {key: value for key, value in state.items() if key in own and own[key].shape == value.shape}
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))


# ---------------------------------------------------------------- CIFAR-style ResNets


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

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


# ---------------------------------------------------------------- a small CNN, width searched


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


# ---------------------------------------------------------------- size, FLOPs, latency


@dataclass(frozen=True)
class ModelCost:
    params: int
    flops: int  # for one input; torch's counter counts a multiply-add as 2 FLOPs
    latency_ms: float  # median batch-1 CPU latency, one thread (an edge core, comparable across trials)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    example = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example)
    model.train(was_training)
    return int(counter.get_total_flops())


def cpu_latency_ms(model: nn.Module, input_shape: tuple[int, int, int], min_run_time: float = 0.2) -> float:
    """Median batch-1 latency on one CPU thread, after warm-up (Timer's blocked_autorange)."""
    # torch.utils.benchmark imports cpp_extension, which warns about CUDA on CPU-only machines.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils.benchmark import Timer

    cpu_model = copy.deepcopy(model).cpu().eval()
    example = torch.zeros(1, *input_shape)
    with torch.no_grad():
        for _ in range(3):
            cpu_model(example)
        timer = Timer(
            stmt="model(x)", globals={"model": cpu_model, "x": example}, num_threads=1
        )
        measurement = timer.blocked_autorange(min_run_time=min_run_time)
    return measurement.median * 1e3


def measure_cost(model: nn.Module, input_shape: tuple[int, int, int]) -> ModelCost:
    return ModelCost(count_params(model), count_flops(model, input_shape), cpu_latency_ms(model, input_shape))
