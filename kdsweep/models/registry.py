"""The model registry: one decorator, one dict, `create_model` by name.

Builders live in their own modules (torchvision adapted to small images, CIFAR ResNets, a small
CNN, timm's catalogue under `timm/`); importing `kdsweep.models` registers them all.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from torch import nn

from kdsweep.errors import ConfigError
from kdsweep.registry import Catalogue, Registry

ModelFn = Callable[..., nn.Module]
# Inputs at or below this side length get a small-image stem (each model source says which).
SMALL_IMAGE = 64


@dataclass(frozen=True)
class ModelEntry:
    build: ModelFn
    role: str  # "teacher" or "student": only a hint for help text and default spaces (registered names)
    stems: bool = False  # builds either stem, small-input or its own (`small_input_stem`)


_MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, role: str, stems: bool = False) -> Callable[[ModelFn], ModelFn]:
    """Decorator: make `build(num_classes, in_channels, image_size, **kwargs)` creatable by `name`;
    `stems`: it also takes `small_input_stem` (True, False, or None for its image size's)."""
    return _MODELS.register(name, lambda build: ModelEntry(build, role, stems))


def add_model_catalogue(prefix: str, names: Callable[[], Collection[str]], build: Callable[[str], ModelEntry]) -> None:
    """Make `prefix + NAME` creatable for every NAME of a library's `names()` (timm's), built by `build(NAME)`."""
    _MODELS.add_catalogue(Catalogue(prefix, names, build, f"any model {prefix.rstrip('/')}.list_models() lists"))


def list_models(role: str | None = None) -> list[str]:
    return _MODELS.names(lambda entry: role is None or entry.role == role)


def is_model(name: str) -> bool:
    """Whether `create_model` knows `name`: registered, or in a catalogue (`timm/NAME`)."""
    return name in _MODELS


def require_model(field: str, name: str) -> None:
    """Bad input, named by `field`, unless `name` is a model `create_model` knows."""
    if not is_model(name):
        raise ConfigError(field, _MODELS.unknown(name))


def has_stem_variants(name: str) -> bool:
    """Whether `name` builds a small-input stem or its own as asked (`create_model(..., small_input_stem=)`)."""
    return _MODELS.get(name).stems


def create_model(
    name: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    width: int | None = None,
    small_input_stem: bool | None = None,
) -> nn.Module:
    """Build a registered model for `num_classes` outputs and `in_channels` x `image_size`^2 inputs.

    Args:
        name: a registered name (`list_models()`), e.g. "resnet8" or "mobilenet_v2", or `timm/NAME` for
            any model timm lists, e.g. "timm/mobilenetv3_small_100".
        num_classes: outputs of the classifier head.
        in_channels: 1 (grayscale) or 3 (RGB); the stem is adapted.
        image_size: side length; at or below `SMALL_IMAGE` torchvision models get a CIFAR stem, timm
            models a stem of stride 1 (kdsweep/models/timm_models.py).
        width: only for width-configurable models (`small_cnn`).
        small_input_stem: only for models with stem variants (`has_stem_variants`): True or False
            builds that stem whatever `image_size`; None the one `image_size` calls for.

    Example:
        >>> create_model("resnet8", num_classes=10, in_channels=1, image_size=8)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    given = {"width": width, "small_input_stem": small_input_stem}
    kwargs = {key: value for key, value in given.items() if value is not None}
    return _MODELS.get(name).build(num_classes, in_channels, image_size, **kwargs)
