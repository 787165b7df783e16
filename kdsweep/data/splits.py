"""A loaded dataset: three seeded, disjoint splits, in memory or streamed from disk, and their batches."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from kdsweep.data.augment import AugmentSpec
from kdsweep.data.spec import DataSpec
from kdsweep.errors import ConfigError, one_line


@dataclass(frozen=True)
class MemorySplit:
    """A split held in memory as its source gives it: un-normalised, uint8 pixels or float32 where the source is float.

    numpy on the host, because Ray's object store hands a numpy array to every trial of a node zero-copy
    (read-only): one copy per node, not one per trial. Batches are cut from it, then normalised and
    augmented on their device (kdsweep.data.batches). On a GPU a trial moves it there once (`on_device`):
    `images` is then a tensor on that device.
    """

    images: np.ndarray | torch.Tensor  # N x C x H x W, un-normalised
    labels: torch.Tensor  # int64 N

    def __len__(self) -> int:
        return len(self.labels)

    def fingerprint(self, digest) -> None:
        images = self.images.cpu().numpy() if isinstance(self.images, torch.Tensor) else self.images
        digest.update(np.ascontiguousarray(images).tobytes())
        digest.update(self.labels.cpu().numpy().tobytes())


@dataclass(frozen=True)
class FolderSplit:
    """A split that streams from disk (torchvision ImageFolder + a DataLoader with workers)."""

    folder: object  # torchvision.datasets.ImageFolder
    indices: list[int]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.indices)

    def fingerprint(self, digest) -> None:
        """The files (path below the tree's root, size) of this split, in order: cheap, and enough to
        tell two trees, or two splits of one tree, apart without reading every image."""
        for index in self.indices:
            path = self.folder.samples[index][0]
            digest.update(f"{os.path.relpath(path, self.folder.root)}:{os.path.getsize(path)}\n".encode())
        digest.update(self.labels.numpy().tobytes())


Split = MemorySplit | FolderSplit


@dataclass(frozen=True)
class Batch:
    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor  # positions in the split: the teacher-cache key, with the epoch's views


@dataclass(frozen=True)
class Dataset:
    """Three splits and what a model needs to know about them; `spec` is what produced them."""

    name: str
    spec: DataSpec
    train: Split
    val: Split
    test: Split
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]  # per channel, on the 0-1 pixel scale (torchvision's ToTensor)
    std: tuple[float, ...]
    augment: AugmentSpec
    pixel_max: float = 1.0  # the value of a white pixel in a MemorySplit: 255 (uint8), 16 (digits) or 1 (float)

    @property
    def seed(self) -> int:
        """Fixes the splits and every epoch's views."""
        return self.spec.seed

    @cached_property
    def digest(self) -> str:
        """What identifies this data: a hash of every split's content (or, streamed, of its files).

        Two loads with the same splits give the same digest; another dataset, another seed or
        another val/test fraction give another. Teachers are keyed on it, and MLflow records it.
        """
        digest = hashlib.sha256()
        for split in (self.train, self.val, self.test):
            split.fingerprint(digest)
            digest.update(b"|")
        digest.update(repr((self.mean, self.std, self.augment, self.pixel_max)).encode())
        return digest.hexdigest()[:16]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)

    @property
    def nbytes(self) -> int:
        """What the sweep puts in Ray's object store for it: the in-memory splits' images and every split's labels."""
        splits = (self.train, self.val, self.test)
        return sum(s.images.nbytes for s in splits if isinstance(s, MemorySplit)) + sum(s.labels.nbytes for s in splits)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.train, MemorySplit)


def split_in_memory(
    name: str,
    spec: DataSpec,
    train_x: np.ndarray,
    train_y: torch.Tensor,
    test_x: np.ndarray | None,
    test_y: torch.Tensor | None,
    num_classes: int,
    augment: AugmentSpec,
    pixel_max: float = 1.0,
) -> Dataset:
    """Carve test (if the source has none) and validation from train, stratified and seeded; measure the
    training statistics. The images stay as given (N x C x H x W, uint8 or float32, `pixel_max` = white):
    batches are normalised where they are used, so the splits a sweep shares are a quarter the size."""
    if test_x is None:
        train_x, test_x, train_y, test_y = _stratified(
            train_x, train_y, spec.test_fraction, spec.seed, "data.test_fraction"
        )
    train_x, val_x, train_y, val_y = _stratified(
        train_x, train_y, spec.val_fraction, spec.seed + 1, "data.val_fraction"
    )
    # On the 0-1 scale in float32 (as the batches are), summed in float64, then rounded to float32: a float32
    # reduction's rounding depends on how many threads summed it, and the statistics must not.
    wide = (torch.from_numpy(train_x).float() / pixel_max).double()
    mean = wide.mean(dim=(0, 2, 3)).float()
    std = wide.std(dim=(0, 2, 3)).float().clamp_min(1e-6)
    return Dataset(
        name=name,
        spec=spec,
        train=MemorySplit(train_x, train_y),
        val=MemorySplit(val_x, val_y),
        test=MemorySplit(test_x, test_y),
        num_classes=num_classes,
        in_channels=train_x.shape[1],
        image_size=train_x.shape[-1],
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
        augment=augment,
        pixel_max=pixel_max,
    )


def stratified_indices(labels: np.ndarray, fraction: float, seed: int, field: str) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) positions, stratified and seeded; too few samples to hold every class in both is
    bad input of `field` (the fraction), not a traceback from scikit-learn."""
    try:
        return train_test_split(np.arange(len(labels)), test_size=fraction, random_state=seed, stratify=labels)
    except ValueError as error:
        raise ConfigError(
            field, f"{fraction:g} of {len(labels)} samples cannot hold every class in both parts ({one_line(error)})"
        ) from None


def _stratified(x: np.ndarray, y: torch.Tensor, fraction: float, seed: int, field: str):
    keep, held = stratified_indices(y.numpy(), fraction, seed, field)
    return x[keep], x[held], y[torch.from_numpy(keep)], y[torch.from_numpy(held)]
