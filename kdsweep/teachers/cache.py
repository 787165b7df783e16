"""The teacher's logits for every view the trials train on, computed once per sweep and shared by all.

The views of each epoch are a pure function of (data seed, epoch, sample index), so the logits of
every image a trial will see can be computed ahead, in large inference batches, and trials read
them instead of running the teacher: KD then costs about what training the student alone does.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from kdsweep.data import Batch, Dataset, Views, eval_batches, on_device, train_batches, view_epoch
from kdsweep.trial import autocast, place

# A GPU wants large inference batches; a CPU is 20-30% faster on small ones, whose activations stay
# in its caches (benchmarks/RESULTS.md).
CACHE_BATCH_CUDA = 1024
CACHE_BATCH_CPU = 64


@dataclass(frozen=True)
class TeacherLogitCache:
    """The teacher's logits for every view the trials train on, computed once and shared by all.

    `train[e, i]` belongs to sample i in the views of epoch e + 1, and `views[e, i]` is the code of
    that view: the cache key, checked on every batch, so a trial is refused rather than fed logits of
    another image. Arrays are numpy because Ray's object store hands numpy arrays to every trial of
    a node zero-copy, where each trial would get its own copy of a torch tensor.
    """

    train: np.ndarray  # float16, view_epochs x N_train x classes
    views: np.ndarray  # int32, view_epochs x N_train
    val: np.ndarray  # float16, N_val x classes, un-augmented
    test: np.ndarray  # float16, N_test x classes, un-augmented
    pad: int  # the augmentation's crop padding, to encode a batch's views

    @property
    def view_epochs(self) -> int:
        """The period of the trials' views: they repeat as the cache's do (a trial reads it from here)."""
        return len(self.train)

    def train_logits(self, batch: Batch, views: Views | None, epoch: int) -> torch.Tensor:
        if views is None:
            raise ValueError("the teacher cache serves in-memory datasets only; this batch streams from disk")
        slot = view_epoch(epoch, self.view_epochs) - 1
        index = batch.indices.numpy()
        if not np.array_equal(self.views[slot, index], _view_codes(views, self.pad)):
            raise ValueError(
                f"epoch {epoch} trains on views the teacher cache does not hold: a trial on it must repeat "
                f"its views every view_epochs={self.view_epochs} epochs, on the sweep's dataset"
            )
        # Non-blocking: from pageable memory CUDA stages the copy at once, without waiting for the GPU.
        return torch.from_numpy(self.train[slot, index]).to(batch.images.device, non_blocking=True).float()

    def eval_logits(self, data: Dataset, split: str, device: torch.device) -> torch.Tensor:
        logits, expected = getattr(self, split), len(getattr(data, split))
        if len(logits) != expected:
            raise ValueError(
                f"the teacher cache holds {len(logits)} {split} logits but the {split} split has {expected}"
            )
        return torch.from_numpy(logits.astype(np.float32)).to(device)


def _view_codes(views: Views, pad: int) -> np.ndarray:
    """One integer per (crop offset, flip): the finite set of views one image has."""
    return ((views.dy * (2 * pad + 1) + views.dx) * 2 + views.flip.long()).numpy().astype(np.int32)


def build_teacher_cache(
    module: nn.Module,
    data: Dataset,
    epochs: int,
    device: torch.device,
    memory_limit_mb: float,
    batch_size: int | None = None,
    log=print,
) -> TeacherLogitCache | None:
    """The logits of every view of `epochs` epochs, or of as many epochs as `memory_limit_mb` holds.

    None, with the reason logged, when the cache cannot be exact or bounded: data streaming from disk
    (its views are not drawn ahead), one epoch over the limit, or logits beyond float16's range.
    The caller then runs the teacher online.
    """
    if not data.in_memory:
        log("teacher cache: the data streams from disk, so its views cannot be cached; running the teacher online")
        return None
    size = cache_size(data, epochs, memory_limit_mb)
    per_epoch, fixed, view_epochs, epochs = size.per_epoch, size.fixed, size.view_epochs, size.epochs
    samples, classes = len(data.train), data.num_classes
    if view_epochs < 1:
        limit = f"teacher.cache_limit_mb={memory_limit_mb}"
        log(f"teacher cache: one epoch needs {_mb(fixed + per_epoch)} > {limit}; running the teacher online")
        return None
    repeat = (
        f" (all {epochs} exceed teacher.cache_limit_mb={memory_limit_mb}: views repeat every {view_epochs} epochs)"
        if view_epochs < epochs
        else ""
    )
    size = _mb(fixed + view_epochs * per_epoch)
    log(f"teacher cache: {view_epochs} view epochs x {samples} samples x {classes} classes, float16 = {size}{repeat}")
    started = time.perf_counter()
    batch_size = batch_size or (CACHE_BATCH_CUDA if device.type == "cuda" else CACHE_BATCH_CPU)
    cache = _compute_cache(module, data, view_epochs, device, batch_size)
    if not all(np.isfinite(logits).all() for logits in (cache.train, cache.val, cache.test)):
        log("teacher cache: logits do not fit float16 (|logit| > 65504, or NaN); running the teacher online")
        return None
    log(f"teacher cache: built in {time.perf_counter() - started:.1f} s")
    return cache


@dataclass(frozen=True)
class CacheSize:
    """What a teacher's cache will take, known before it is built: the object store must hold it."""

    per_epoch: int  # bytes of one view epoch: float16 logits and an int32 view code per training sample
    fixed: int  # bytes of the un-augmented val and test logits
    epochs: int  # the epochs of views the sweep would show (1 without augmentation: they are all alike)
    view_epochs: int  # those it holds within its limit (< 1: not even one fits)

    @property
    def bytes(self) -> int:
        return self.fixed + max(self.view_epochs, 0) * self.per_epoch


def cache_size(data: Dataset, epochs: int, memory_limit_mb: float) -> CacheSize:
    """The cache of `epochs` epochs' views, cut to as many as `memory_limit_mb` holds (one, without augmentation)."""
    if data.augment.num_views == 1:
        epochs = 1  # no augmentation: every epoch shows the same images
    per_epoch = len(data.train) * (2 * data.num_classes + 4)
    fixed = (len(data.val) + len(data.test)) * data.num_classes * 2
    return CacheSize(per_epoch, fixed, epochs, min(epochs, int((memory_limit_mb * 2**20 - fixed) // per_epoch)))


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 2**10:.1f} KB"


def _compute_cache(
    module: nn.Module, data: Dataset, view_epochs: int, device: torch.device, batch_size: int
) -> TeacherLogitCache:
    # A copy: the caller's module stays where it was, in the mode it was.
    teacher_module = place(copy.deepcopy(module), device).eval()
    data = on_device(data, device)
    train = np.empty((view_epochs, len(data.train), data.num_classes), np.float16)
    views = np.empty((view_epochs, len(data.train)), np.int32)

    def half(images: torch.Tensor) -> np.ndarray:
        return teacher_module(images).float().cpu().numpy().astype(np.float16)

    with torch.inference_mode(), autocast(device):
        for epoch in range(1, view_epochs + 1):
            # The trials' own iterator: the images are built exactly as they will be in training.
            for batch, batch_views in train_batches(data, batch_size, epoch, 0, device):
                index = batch.indices.numpy()
                train[epoch - 1, index] = half(batch.images)
                views[epoch - 1, index] = _view_codes(batch_views, data.augment.pad)
        val, test = (
            np.concatenate([half(b.images) for b in eval_batches(data, getattr(data, split), batch_size, device)])
            for split in ("val", "test")
        )
    return TeacherLogitCache(train, views, val, test, data.augment.pad)
