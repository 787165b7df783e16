"""The model registry: one decorator, one dict, `create_model` by name.

Builders live in their own modules (torchvision adapted to small images, CIFAR ResNets, a small
CNN); importing `kdsweep.models` registers them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from kdsweep.errors import ConfigError, unknown_name

ModelFn = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    build: ModelFn
    role: str  # "teacher" or "student": only a hint for help text and default spaces


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, role: str) -> Callable[[ModelFn], ModelFn]:
    """Decorator: make `build(num_classes, in_channels, image_size, **kwargs)` creatable by `name`."""

    def decorator(build: ModelFn) -> ModelFn:
        _MODELS[name] = ModelEntry(build, role)
        return build

    return decorator


def list_models(role: str | None = None) -> list[str]:
    return sorted(n for n, e in _MODELS.items() if role is None or e.role == role)


def require_model(field: str, name: str) -> None:
    """Bad input, named by `field`, unless `name` is a registered model."""
    if name not in _MODELS:
        raise ConfigError(field, unknown_name("model", str(name), list_models()))


def create_model(name: str, num_classes: int, in_channels: int, image_size: int, width: int | None = None) -> nn.Module:
    """Build a registered model for `num_classes` outputs and `in_channels` x `image_size`^2 inputs.

    Args:
        name: a registered name (`list_models()`), e.g. "resnet8" or "mobilenet_v2".
        num_classes: outputs of the classifier head.
        in_channels: 1 (grayscale) or 3 (RGB); the stem is adapted.
        image_size: side length; at or below `SMALL_IMAGE` torchvision models get a CIFAR stem.
        width: only for width-configurable models (`small_cnn`).

    Example:
        >>> create_model("resnet8", num_classes=10, in_channels=1, image_size=8)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    if name not in _MODELS:
        raise ValueError(unknown_name("model", name, list_models()))
    kwargs = {"width": width} if width is not None else {}
    return _MODELS[name].build(num_classes, in_channels, image_size, **kwargs)
