"""Augmentation on whole batches of tensors, as a pure function of (data seed, epoch, sample index).

Every trial of a sweep therefore sees the same views in the same epoch: that is what lets the
teacher's logits for those views be computed once and shared (see kdsweep.teachers.cache).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdsweep.seeds import epoch_seed


@dataclass(frozen=True)
class AugmentSpec:
    pad: int = 0  # random crop of the original size from the image padded by `pad`
    flip: bool = False  # random horizontal flip (not for digits: a flipped 3 is no digit)

    @property
    def num_views(self) -> int:
        """How many distinct views one image has: the finite set the teacher cache is keyed on."""
        return (2 * self.pad + 1) ** 2 * (2 if self.flip else 1)


@dataclass(frozen=True)
class Views:
    """Augmentation parameters per sample: crop offsets in [0, 2*pad] and a flip flag."""

    dx: torch.Tensor
    dy: torch.Tensor
    flip: torch.Tensor

    def take(self, index: torch.Tensor) -> Views:
        return Views(self.dx[index], self.dy[index], self.flip[index])

    def to(self, device: torch.device) -> Views:
        return Views(*(t.to(device, non_blocking=True) for t in (self.dx, self.dy, self.flip)))


def draw_views(num_samples: int, augment: AugmentSpec, seed: int, epoch: int) -> Views:
    """The views of `epoch`: a pure function of (seed, epoch), shared by every trial of a sweep."""
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    size = 2 * augment.pad + 1
    dx = torch.randint(0, size, (num_samples,), generator=generator)
    dy = torch.randint(0, size, (num_samples,), generator=generator)
    flip = (
        torch.rand(num_samples, generator=generator) < 0.5
        if augment.flip
        else torch.zeros(num_samples, dtype=torch.bool)
    )
    return Views(dx, dy, flip)


def apply_views(images: torch.Tensor, views: Views, augment: AugmentSpec) -> torch.Tensor:
    """Crop each image at its own offset from the zero-padded batch, then flip where asked.

    Whether to flip is the spec's, not the views' (`views.flip.any()` would wait for a GPU every batch).
    """
    pad = augment.pad
    if pad:
        n, c, h, w = images.shape
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        dev = images.device
        rows = (views.dy.to(dev)[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (views.dx.to(dev)[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        batch = torch.arange(n, device=dev)[:, None, None, None]
        channel = torch.arange(c, device=dev)[None, :, None, None]
        images = padded[batch, channel, rows, cols]
    if augment.flip:
        images = torch.where(views.flip.to(images.device)[:, None, None, None], images.flip(-1), images)
    return images


def view_epoch(epoch: int, view_epochs: int | None) -> int:
    """The epoch whose views `epoch` trains on: they repeat every `view_epochs` (a teacher cache's size)."""
    return epoch if view_epochs is None else (epoch - 1) % view_epochs + 1
