"""Datasets by name or path -> seeded train/val/test splits, and augmentation on whole batches.

Small datasets live in memory as their source gives them (uint8 pixels, or float32 where the
source is float), shared zero-copy through Ray's object store; each batch is normalised and
augmented on its device (no per-sample Python), and on a GPU a trial moves its splits there once.
Each epoch's augmentation is a function of (seed, epoch, sample index) only, so every trial of a
sweep sees the same views in the same epoch. ImageFolder trees too large for memory stream
through a DataLoader with worker processes.
"""

from kdsweep.data import builtin, glyphs, torchvision_data  # noqa: F401  (they register)
from kdsweep.data.augment import AugmentSpec, Views, apply_views, draw_views, view_epoch
from kdsweep.data.batches import eval_batches, normalise, on_device, split_images, train_batches
from kdsweep.data.registry import check_dataset_name, list_datasets, load_dataset, register_dataset
from kdsweep.data.spec import DataSpec
from kdsweep.data.splits import Batch, Dataset, FolderSplit, MemorySplit, Split, split_in_memory

__all__ = [
    "AugmentSpec",
    "Batch",
    "DataSpec",
    "Dataset",
    "FolderSplit",
    "MemorySplit",
    "Split",
    "Views",
    "apply_views",
    "check_dataset_name",
    "draw_views",
    "eval_batches",
    "list_datasets",
    "load_dataset",
    "normalise",
    "on_device",
    "register_dataset",
    "split_images",
    "split_in_memory",
    "train_batches",
    "view_epoch",
]
