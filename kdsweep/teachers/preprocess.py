"""A brought teacher's own preprocessing (`teacher.input`), applied to its inputs and not the students'.

Trials hold images normalised with the dataset's statistics. A teacher trained elsewhere expects
its own: the images are taken back to pixels, converted to its channels and size, and normalised
with its mean and std, inside a module placed in front of it, so that the cache, the online
teacher and the checks all feed it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

from kdsweep.data import Dataset
from kdsweep.errors import ConfigError
from kdsweep.teachers.spec import TeacherInput

# RGB -> gray as ITU-R BT.601 luma: torchvision's Grayscale (and PIL's "L") weights.
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class InputStats:
    """A model's input: per-channel mean and std on the dataset's pixel scale, and its side length."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)


def dataset_input(data: Dataset) -> InputStats:
    return InputStats(data.mean, data.std, data.image_size)


def teacher_input(declared: TeacherInput | None, data: Dataset) -> InputStats:
    """What the teacher was trained on: `teacher.input`, each field left out the dataset's own."""
    own = dataset_input(data)
    if declared is None:
        return own
    channels = declared.channels or len(declared.mean or declared.std or own.mean)
    if channels != own.channels and (declared.mean is None or declared.std is None):
        raise ConfigError(
            "teacher.input",
            f"the teacher takes {channels} channels, {data.name} has {own.channels}: give its mean and std",
        )
    return InputStats(declared.mean or own.mean, declared.std or own.std, declared.image_size or own.image_size)


def to_teacher_input(images: torch.Tensor, source: InputStats, target: InputStats) -> torch.Tensor:
    """Images normalised as `source` -> the same images as `target` expects them.

    pixels = images * source.std + source.mean; then 1 -> 3 channels (gray repeated) or 3 -> 1 (LUMA
    weights); then resized to target.image_size (bilinear); then (pixels - target.mean) / target.std.
    """

    def per_channel(values: tuple[float, ...]) -> torch.Tensor:
        return torch.tensor(values, dtype=images.dtype, device=images.device)[None, :, None, None]

    pixels = images * per_channel(source.std) + per_channel(source.mean)
    if target.channels != source.channels:
        pixels = pixels.repeat(1, 3, 1, 1) if source.channels == 1 else (pixels * per_channel(LUMA)).sum(1, True)
    if target.image_size != source.image_size:
        size = (target.image_size, target.image_size)
        pixels = functional.interpolate(pixels, size=size, mode="bilinear", align_corners=False)
    return (pixels - per_channel(target.mean)) / per_channel(target.std)


class InputAdapter(nn.Module):
    """`to_teacher_input` as the first layer of a teacher: it travels (devices, pickling) with it."""

    def __init__(self, source: InputStats, target: InputStats) -> None:
        super().__init__()
        self.source, self.target = source, target

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return to_teacher_input(images, self.source, self.target)


def with_input(module: nn.Module, target: InputStats, data: Dataset) -> nn.Module:
    """`module` fed the dataset's images as `target` expects them; itself when that is the dataset's input."""
    source = dataset_input(data)
    return module if target == source else nn.Sequential(InputAdapter(source, target), module)
