"""Iterating a split: shuffled, augmented training batches and ordered evaluation batches."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from kdsweep import seeds
from kdsweep.data.augment import Views, apply_views, draw_views, view_epoch
from kdsweep.data.folders import stream_batches
from kdsweep.data.splits import Batch, Dataset, FolderSplit, Split


def train_batches(
    data: Dataset, batch_size: int, epoch: int, shuffle_seed: int, device: torch.device, view_epochs: int | None = None
) -> Iterator[tuple[Batch, Views | None]]:
    """Shuffled, augmented training batches of `epoch`, with the views used (None when streaming)."""
    generator = torch.Generator().manual_seed(seeds.shuffle_seed(shuffle_seed, epoch))
    split = data.train
    if isinstance(split, FolderSplit):
        yield from (
            (batch, None) for batch in stream_batches(data, split, batch_size, generator, train=True, device=device)
        )
        return
    order = torch.randperm(len(split), generator=generator)
    views = draw_views(len(split), data.augment, data.seed, view_epoch(epoch, view_epochs))
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch_views = views.take(index)
        images = apply_views(split.images[index].to(device, non_blocking=True), batch_views, data.augment.pad)
        yield Batch(images, split.labels[index].to(device), index), batch_views


def eval_batches(data: Dataset, split: Split, batch_size: int, device: torch.device) -> Iterator[Batch]:
    if isinstance(split, FolderSplit):
        yield from stream_batches(data, split, batch_size, None, train=False, device=device)
        return
    for start in range(0, len(split), batch_size):
        index = torch.arange(start, min(start + batch_size, len(split)))
        yield Batch(split.images[index].to(device), split.labels[index].to(device), index)
