"""Datasets by name or path -> seeded train/val/test splits, and augmentation on whole batches.

Small datasets live in memory as normalised float tensors and are augmented batch-wise on the
tensors (no per-sample Python). Each epoch's augmentation is a function of (seed, epoch, sample
index) only, so every trial of a sweep sees the same views in the same epoch. ImageFolder trees
too large for memory stream through a DataLoader with worker processes.
"""

from kdsweep.data import builtin, glyphs, torchvision_data  # noqa: F401  (they register)
from kdsweep.data.augment import AugmentSpec, Views, apply_views, draw_views, view_epoch
from kdsweep.data.batches import eval_batches, train_batches
from kdsweep.data.registry import check_dataset_name, list_datasets, load_dataset, register_dataset
from kdsweep.data.spec import DataSpec
from kdsweep.data.splits import Batch, Dataset, FolderSplit, Split, TensorSplit, split_and_normalise

__all__ = [
    "AugmentSpec",
    "Batch",
    "DataSpec",
    "Dataset",
    "FolderSplit",
    "Split",
    "TensorSplit",
    "Views",
    "apply_views",
    "check_dataset_name",
    "draw_views",
    "eval_batches",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "split_and_normalise",
    "train_batches",
    "view_epoch",
]
