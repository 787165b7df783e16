"""Datasets by name or path -> seeded train/val/test splits, and augmentation on whole batches.

Small datasets live in memory as normalised float tensors and are augmented batch-wise on the
tensors (no per-sample Python). Each epoch's augmentation is a function of (seed, epoch, sample
index) only, so every trial of a sweep sees the same views in the same epoch: that is what lets
the teacher's logits for those views be computed once and shared (see kdsweep.teacher).
ImageFolder trees too large for memory stream through a DataLoader with worker processes.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from kdsweep.errors import ConfigError


@dataclass(frozen=True)
class DataSpec:
    """What to load. `name` is a registered dataset or a directory in ImageFolder layout."""

    name: str = "digits"
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2  # only for datasets without their own test split
    root: str | None = None  # download/cache directory for torchvision datasets
    image_size: int = 32  # imagefolder resize and synthetic size
    channels: int = 3  # synthetic only
    num_classes: int = 10  # synthetic only
    num_samples: int = 512  # synthetic only
    memory_limit_mb: int = 2048  # larger ImageFolders stream from disk
    num_workers: int = 2  # streaming DataLoader workers


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

    def take(self, index: torch.Tensor) -> "Views":
        return Views(self.dx[index], self.dy[index], self.flip[index])


@dataclass(frozen=True)
class TensorSplit:
    images: torch.Tensor  # float32 N x C x H x W, normalised with the training statistics
    labels: torch.Tensor  # int64 N

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class FolderSplit:
    """A split that streams from disk (torchvision ImageFolder + a DataLoader with workers)."""

    folder: object  # torchvision.datasets.ImageFolder
    indices: list[int]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.indices)


Split = TensorSplit | FolderSplit


@dataclass(frozen=True)
class Batch:
    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor  # positions in the split: the teacher-cache key, with the epoch's views


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: AugmentSpec
    seed: int  # fixes the splits and every epoch's views
    num_workers: int = 0

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.train, TensorSplit)


# ---------------------------------------------------------------- augmentation on tensors


def draw_views(num_samples: int, augment: AugmentSpec, seed: int, epoch: int) -> Views:
    """The views of `epoch`: a pure function of (seed, epoch), shared by every trial of a sweep."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    size = 2 * augment.pad + 1
    dx = torch.randint(0, size, (num_samples,), generator=generator)
    dy = torch.randint(0, size, (num_samples,), generator=generator)
    flip = torch.rand(num_samples, generator=generator) < 0.5 if augment.flip else torch.zeros(num_samples, dtype=torch.bool)
    return Views(dx, dy, flip)


def apply_views(images: torch.Tensor, views: Views, pad: int) -> torch.Tensor:
    """Crop each image at its own offset from the zero-padded batch, then flip where asked."""
    if pad:
        n, c, h, w = images.shape
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        dev = images.device
        rows = (views.dy.to(dev)[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (views.dx.to(dev)[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        batch = torch.arange(n, device=dev)[:, None, None, None]
        channel = torch.arange(c, device=dev)[None, :, None, None]
        images = padded[batch, channel, rows, cols]
    flip = views.flip.to(images.device)
    if flip.any():
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    return images


# ---------------------------------------------------------------- iterating


def view_epoch(epoch: int, view_epochs: int | None) -> int:
    """The epoch whose views `epoch` trains on: they repeat every `view_epochs` (a teacher cache's size)."""
    return epoch if view_epochs is None else (epoch - 1) % view_epochs + 1


def train_batches(
    data: Dataset, batch_size: int, epoch: int, shuffle_seed: int, device: torch.device, view_epochs: int | None = None
) -> Iterator[tuple[Batch, Views | None]]:
    """Shuffled, augmented training batches of `epoch`, with the views used (None when streaming)."""
    # Another stream than draw_views' (seed * 1_000_003 + epoch): order and views stay independent.
    generator = torch.Generator().manual_seed((shuffle_seed + 1) * 2_000_029 + epoch)
    split = data.train
    if isinstance(split, FolderSplit):
        yield from ((batch, None) for batch in _stream(data, split, batch_size, generator, train=True, device=device))
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
        yield from _stream(data, split, batch_size, None, train=False, device=device)
        return
    for start in range(0, len(split), batch_size):
        index = torch.arange(start, min(start + batch_size, len(split)))
        yield Batch(split.images[index].to(device), split.labels[index].to(device), index)


# ---------------------------------------------------------------- registry


Loader = Callable[[DataSpec], Dataset]
_DATASETS: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    def decorator(loader: Loader) -> Loader:
        _DATASETS[name] = loader
        return loader

    return decorator


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def check_dataset_name(name: str) -> None:
    """Raise ConfigError unless `name` is registered or an ImageFolder directory."""
    if name in _DATASETS:
        return
    if os.sep in name or name.startswith(".") or Path(name).exists():
        path = Path(name)
        if not path.is_dir():
            raise ConfigError("dataset", f"directory '{name}' does not exist")
        if not (path / "train").is_dir():
            raise ConfigError("dataset", f"'{name}' has no train/ folder (ImageFolder layout: train/ and test/ or val/)")
        if not ((path / "test").is_dir() or (path / "val").is_dir()):
            raise ConfigError("dataset", f"'{name}' has no test/ or val/ folder next to train/")
        return
    close = difflib.get_close_matches(name, list_datasets(), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError("dataset", f"unknown dataset '{name}'{hint} (choose from: {', '.join(list_datasets())}, or a directory)")


def load_dataset(spec: DataSpec) -> Dataset:
    """Load a registered dataset or an ImageFolder directory into seeded, disjoint splits."""
    check_dataset_name(spec.name)
    loader = _DATASETS.get(spec.name)
    if loader is None:
        from kdsweep.folders import load_image_folder

        return load_image_folder(spec)
    return loader(spec)


# ---------------------------------------------------------------- building splits


def split_and_normalise(
    name: str,
    spec: DataSpec,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor | None,
    test_y: torch.Tensor | None,
    num_classes: int,
    augment: AugmentSpec,
) -> Dataset:
    """Carve test (if the source has none) and validation from train, stratified and seeded; normalise."""
    if test_x is None:
        train_x, test_x, train_y, test_y = _stratified(train_x, train_y, spec.test_fraction, spec.seed)
    train_x, val_x, train_y, val_y = _stratified(train_x, train_y, spec.val_fraction, spec.seed + 1)
    mean = train_x.mean(dim=(0, 2, 3))
    std = train_x.std(dim=(0, 2, 3)).clamp_min(1e-6)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return ((x - mean[:, None, None]) / std[:, None, None]).contiguous()

    return Dataset(
        name=name,
        train=TensorSplit(norm(train_x), train_y),
        val=TensorSplit(norm(val_x), val_y),
        test=TensorSplit(norm(test_x), test_y),
        num_classes=num_classes,
        in_channels=train_x.shape[1],
        image_size=train_x.shape[-1],
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
        augment=augment,
        seed=spec.seed,
    )


def _stratified(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int):
    keep, held = train_test_split(np.arange(len(y)), test_size=fraction, random_state=seed, stratify=y.numpy())
    keep, held = torch.from_numpy(keep), torch.from_numpy(held)
    return x[keep], x[held], y[keep], y[held]


@register_dataset("digits")
def load_digits(spec: DataSpec) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images): the embedded default, no network."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    return split_and_normalise("digits", spec, images, labels, None, None, 10, AugmentSpec(pad=1, flip=False))


@register_dataset("synthetic")
def load_synthetic(spec: DataSpec) -> Dataset:
    """Seeded, learnable data of any shape: a fixed random pattern per class plus noise."""
    generator = torch.Generator().manual_seed(spec.seed)
    shape = (spec.channels, spec.image_size, spec.image_size)
    prototypes = torch.randn(spec.num_classes, *shape, generator=generator)
    labels = torch.arange(spec.num_samples) % spec.num_classes
    labels = labels[torch.randperm(spec.num_samples, generator=generator)]
    images = prototypes[labels] + 1.5 * torch.randn(spec.num_samples, *shape, generator=generator)
    return split_and_normalise("synthetic", spec, images, labels, None, None, spec.num_classes, AugmentSpec(pad=1, flip=True))


def _stream(data: Dataset, split: FolderSplit, batch_size: int, generator, train: bool, device) -> Iterator[Batch]:
    from kdsweep.folders import stream_batches

    return stream_batches(data, split, batch_size, generator, train, device)


# ---------------------------------------------------------------- torchvision (downloaded once)


@dataclass(frozen=True)
class _Torchvision:
    factory: str  # class name in torchvision.datasets
    num_classes: int
    augment: AugmentSpec
    url: str


_TORCHVISION = {
    "cifar10": _Torchvision("CIFAR10", 10, AugmentSpec(pad=4, flip=True), "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": _Torchvision("CIFAR100", 100, AugmentSpec(pad=4, flip=True), "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
    "mnist": _Torchvision("MNIST", 10, AugmentSpec(pad=2, flip=False), "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    "fashion_mnist": _Torchvision("FashionMNIST", 10, AugmentSpec(pad=2, flip=True), "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
}


def default_root() -> Path:
    return Path(os.environ.get("KDSWEEP_DATA", Path.home() / ".cache" / "kdsweep" / "data"))


def _torchvision_loader(name: str, source: _Torchvision) -> Loader:
    def load(spec: DataSpec) -> Dataset:
        import torchvision.datasets

        root = Path(spec.root) if spec.root else default_root()
        factory = getattr(torchvision.datasets, source.factory)
        try:
            train = factory(str(root), train=True, download=True)
            test = factory(str(root), train=False, download=True)
        except (OSError, RuntimeError) as error:  # URLError is an OSError
            raise ConfigError(
                "dataset",
                f"cannot download {name} into {root} ({error.__class__.__name__}: {error}); on a machine without "
                f"network, fetch {source.url} elsewhere and place the files in {root} in torchvision's layout, "
                f"or point --set data.root=DIR (or KDSWEEP_DATA) at a copy",
            ) from error

        def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
            images = torch.as_tensor(np.asarray(ds.data), dtype=torch.float32) / 255.0
            images = images.permute(0, 3, 1, 2) if images.ndim == 4 else images[:, None]
            return images.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)

        train_x, train_y = tensors(train)
        test_x, test_y = tensors(test)
        return split_and_normalise(name, spec, train_x, train_y, test_x, test_y, source.num_classes, source.augment)

    return load


for _name, _source in _TORCHVISION.items():
    register_dataset(_name)(_torchvision_loader(_name, _source))
