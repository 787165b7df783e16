"""Bring-your-own data: a directory in ImageFolder layout (train/ plus test/ or val/ of class folders).

Trees that fit `memory_limit_mb` as uint8 pixels are decoded once into memory and augmented like
the built-in datasets; larger ones stream through a DataLoader with worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from kdsweep.data.augment import AugmentSpec
from kdsweep.data.spec import DataSpec
from kdsweep.data.splits import Batch, Dataset, FolderSplit, split_in_memory, stratified_indices
from kdsweep.errors import ConfigError


def load_image_folder(spec: DataSpec) -> Dataset:
    root = Path(spec.name)
    test_dir = root / "test" if (root / "test").is_dir() else root / "val"
    train = _folder(root / "train", spec.image_size)
    test = _folder(test_dir, spec.image_size)
    if train.classes != test.classes:
        raise ConfigError("data.name", f"class folders differ between {root / 'train'} and {test_dir}")
    channels = 1 if _is_grayscale(train) else 3
    augment = AugmentSpec(pad=max(1, spec.image_size // 8), flip=True)
    bytes_needed = (len(train) + len(test)) * channels * spec.image_size**2  # uint8 pixels
    if bytes_needed <= spec.memory_limit_mb * 2**20:
        train_x, train_y = _decode(train, channels)
        test_x, test_y = _decode(test, channels)
        return split_in_memory(
            str(root), spec, train_x, train_y, test_x, test_y, len(train.classes), augment, pixel_max=255.0
        )
    return _streaming(spec, train, test, channels, augment)


def _folder(path: Path, image_size: int) -> datasets.ImageFolder:
    try:
        folder = datasets.ImageFolder(str(path))
    except (FileNotFoundError, OSError) as error:
        raise ConfigError("data.name", f"cannot read images under {path}: {error}") from error
    folder.transform = transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size)])
    return folder


def _is_grayscale(folder: datasets.ImageFolder) -> bool:
    # Not folder.loader: torchvision's pil_loader converts every image to RGB. Look at the file's own mode.
    from PIL import Image

    with Image.open(folder.samples[0][0]) as image:
        return image.mode in ("L", "1", "I;16", "I", "LA")


def _pixels(image, channels: int) -> torch.Tensor:
    """C x H x W uint8, as the file holds them."""
    return transforms.functional.pil_to_tensor(image.convert("L" if channels == 1 else "RGB"))


def _to_tensor(image, channels: int) -> torch.Tensor:
    return _pixels(image, channels).float() / 255.0


def _decode(folder: datasets.ImageFolder, channels: int) -> tuple[np.ndarray, torch.Tensor]:
    images = np.stack([_pixels(folder[i][0], channels).numpy() for i in range(len(folder))])
    return images, torch.tensor(folder.targets, dtype=torch.int64)


class _Normalised(torch.utils.data.Dataset):
    """Decode, normalise, (augment) one image in a worker process.

    Normalised first, as in-memory data is: a crop's padding is then 0 after normalisation (the mean
    colour) in both, so the same tree trains the same whether it fits memory_limit_mb or streams.
    """

    def __init__(self, folder, channels: int, mean, std, augment: AugmentSpec | None, image_size: int):
        self.folder, self.channels = folder, channels
        steps = []
        if augment is not None:
            steps.append(transforms.RandomCrop(image_size, padding=augment.pad))
            if augment.flip:
                steps.append(transforms.RandomHorizontalFlip())
        self.augment = transforms.Compose(steps)
        self.normalise = transforms.Normalize(mean, std)

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int):
        image, label = self.folder[index]
        return self.augment(self.normalise(_to_tensor(image, self.channels))), label, index


def _streaming(spec: DataSpec, train, test, channels: int, augment: AugmentSpec) -> Dataset:
    targets = np.asarray(train.targets)
    keep, held = stratified_indices(targets, spec.val_fraction, spec.seed + 1, "data.val_fraction")
    # Normalisation statistics from a seeded sample of the training split: exact enough, and cheap.
    sample = np.random.default_rng(spec.seed).choice(keep, size=min(1000, len(keep)), replace=False)
    stack = torch.stack([_to_tensor(train[int(i)][0], channels) for i in sample])
    mean = tuple(stack.mean(dim=(0, 2, 3)).tolist())
    std = tuple(stack.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist())
    test_targets = torch.tensor(test.targets, dtype=torch.int64)
    return Dataset(
        name=str(spec.name),
        spec=spec,
        train=FolderSplit(train, keep.tolist(), torch.as_tensor(targets[keep])),
        val=FolderSplit(train, held.tolist(), torch.as_tensor(targets[held])),
        test=FolderSplit(test, list(range(len(test))), test_targets),
        num_classes=len(train.classes),
        in_channels=channels,
        image_size=spec.image_size,
        mean=mean,
        std=std,
        augment=augment,
    )


def stream_batches(
    data: Dataset, split: FolderSplit, batch_size: int, generator, train: bool, device: torch.device
) -> Iterator[Batch]:
    source = _Normalised(
        split.folder, data.in_channels, data.mean, data.std, data.augment if train else None, data.image_size
    )
    loader = DataLoader(
        Subset(source, split.indices),
        batch_size=batch_size,
        shuffle=train,
        generator=generator,
        num_workers=data.spec.num_workers,
        persistent_workers=False,
        pin_memory=device.type == "cuda",
    )
    position = {index: i for i, index in enumerate(split.indices)}
    for images, labels, indices in loader:
        local = torch.tensor([position[int(i)] for i in indices])
        yield Batch(images.to(device, non_blocking=True), labels.to(device), local)
