"""Datasets that need no network: scikit-learn's digits (the embedded default) and seeded synthetic data."""

from __future__ import annotations

import numpy as np
import torch

from kdsweep.data.augment import AugmentSpec
from kdsweep.data.registry import register_dataset
from kdsweep.data.spec import DataSpec
from kdsweep.data.splits import Dataset, split_in_memory


@register_dataset("digits")
def load_digits(spec: DataSpec) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images): the embedded default, no network."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = bunch.images.astype(np.uint8)[:, None]  # grey levels 0..16, as the source gives them
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    return split_in_memory(
        "digits", spec, images, labels, None, None, 10, AugmentSpec(pad=1, flip=False), pixel_max=16.0
    )


@register_dataset("synthetic")
def load_synthetic(spec: DataSpec) -> Dataset:
    """Seeded, learnable data of any shape: a fixed random pattern per class plus noise."""
    generator = torch.Generator().manual_seed(spec.seed)
    shape = (spec.channels, spec.image_size, spec.image_size)
    prototypes = torch.randn(spec.num_classes, *shape, generator=generator)
    labels = torch.arange(spec.num_samples) % spec.num_classes
    labels = labels[torch.randperm(spec.num_samples, generator=generator)]
    images = prototypes[labels] + 1.5 * torch.randn(spec.num_samples, *shape, generator=generator)
    return split_in_memory(
        "synthetic", spec, images.numpy(), labels, None, None, spec.num_classes, AugmentSpec(pad=1, flip=True)
    )
