"""Iterating a split: shuffled, augmented training batches and ordered evaluation batches, normalised on their device.

Every image a model sees from an in-memory split passes through here: rows are cut from the split
first (only the batch is copied out of the shared, read-only array), then normalised with the
training statistics on the batch's device, then augmented there.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import replace
from functools import lru_cache

import numpy as np
import torch

from kdsweep import seeds
from kdsweep.data.augment import Views, apply_views, draw_views, view_epoch
from kdsweep.data.folders import stream_batches
from kdsweep.data.splits import Batch, Dataset, FolderSplit, MemorySplit, Split


def normalise(pixels: torch.Tensor, data: Dataset) -> torch.Tensor:
    """Rows as the split holds them (uint8 or float32) -> float32 (x / pixel_max - mean) / std, on their device."""
    mean, std = _statistics(data.mean, data.std, pixels.device)
    images = pixels.float()
    if data.pixel_max != 1.0:
        images = images / data.pixel_max
    return (images - mean) / std


@lru_cache(maxsize=16)
def _statistics(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
    """The statistics as C x 1 x 1 tensors on `device`, made once: not a host-to-device copy per batch."""
    return tuple(torch.tensor(values, dtype=torch.float32, device=device)[:, None, None] for values in (mean, std))


def on_device(data: Dataset, device: torch.device) -> Dataset:
    """On CUDA, `data` with its in-memory splits moved to `device` once (uint8: a quarter of float32), so
    batches are cut, normalised and augmented there without a copy per batch; elsewhere `data` itself."""
    if device.type != "cuda" or not data.in_memory:
        return data

    def moved(split: MemorySplit) -> MemorySplit:
        images = split.images
        if isinstance(images, np.ndarray):
            with warnings.catch_warnings():  # read-only (the object store's): the tensor is only read by the copy
                warnings.simplefilter("ignore", UserWarning)
                images = torch.from_numpy(images)
        return MemorySplit(images.to(device), split.labels.to(device))  # already there: the same tensors

    return replace(data, train=moved(data.train), val=moved(data.val), test=moved(data.test))


def train_batches(
    data: Dataset, batch_size: int, epoch: int, shuffle_seed: int, device: torch.device, view_epochs: int | None = None
) -> Iterator[tuple[Batch, Views | None]]:
    """Shuffled, augmented training batches of `epoch`, with the views used (None when streaming).

    The order and the views are drawn on the CPU (they are the teacher cache's key) and moved to the
    split's device once per epoch: a batch on a GPU-resident split costs no host-to-device copy."""
    generator = torch.Generator().manual_seed(seeds.shuffle_seed(shuffle_seed, epoch))
    split = data.train
    if isinstance(split, FolderSplit):
        yield from (
            (batch, None) for batch in stream_batches(data, split, batch_size, generator, train=True, device=device)
        )
        return
    order = torch.randperm(len(split), generator=generator)
    views = draw_views(len(split), data.augment, data.seed, view_epoch(epoch, view_epochs))
    where = _device_of(split)
    order_there, views_there = order.to(where), views.to(where)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        index_there = order_there[start : start + batch_size]
        images = normalise(_rows(split, index_there).to(device, non_blocking=True), data)
        images = apply_views(images, views_there.take(index_there).to(device), data.augment)
        yield Batch(images, split.labels[index_there].to(device), index), views.take(index)


def eval_batches(data: Dataset, split: Split, batch_size: int, device: torch.device) -> Iterator[Batch]:
    """The split in order, normalised, un-augmented, on `device`."""
    if isinstance(split, FolderSplit):
        yield from stream_batches(data, split, batch_size, None, train=False, device=device)
        return
    where = _device_of(split)
    for start in range(0, len(split), batch_size):
        stop = min(start + batch_size, len(split))
        index, index_there = torch.arange(start, stop), torch.arange(start, stop, device=where)  # no copy to a GPU
        images = normalise(_rows(split, index_there).to(device, non_blocking=True), data)
        yield Batch(images, split.labels[index_there].to(device), index)


def split_images(data: Dataset, split: Split, device: torch.device | None = None) -> torch.Tensor:
    """A whole split's images, normalised, at once (on the CPU unless told): for checks and small exports."""
    return torch.cat([batch.images for batch in eval_batches(data, split, 1024, device or torch.device("cpu"))])


def _device_of(split: MemorySplit) -> torch.device:
    return split.images.device if isinstance(split.images, torch.Tensor) else torch.device("cpu")


def _rows(split: MemorySplit, index: torch.Tensor) -> torch.Tensor:
    """The rows at `index`, indexed where the split lives: from a numpy split only the batch is copied
    (a writable array of its own), never the shared read-only whole."""
    if isinstance(split.images, np.ndarray):
        return torch.from_numpy(split.images[index.numpy()])
    return split.images[index]
