"""torchvision's datasets (CIFAR-10/100, MNIST, Fashion-MNIST), downloaded once into $KDSWEEP_DATA."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdsweep.data.augment import AugmentSpec
from kdsweep.data.registry import Loader, register_dataset
from kdsweep.data.spec import DataSpec
from kdsweep.data.splits import Dataset, split_in_memory
from kdsweep.errors import ConfigError


@dataclass(frozen=True)
class _Torchvision:
    factory: str  # class name in torchvision.datasets
    num_classes: int
    augment: AugmentSpec
    url: str


_TORCHVISION = {
    "cifar10": _Torchvision(
        "CIFAR10", 10, AugmentSpec(pad=4, flip=True), "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    ),
    "cifar100": _Torchvision(
        "CIFAR100", 100, AugmentSpec(pad=4, flip=True), "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    ),
    "mnist": _Torchvision(
        "MNIST", 10, AugmentSpec(pad=2, flip=False), "https://ossci-datasets.s3.amazonaws.com/mnist/"
    ),
    "fashion_mnist": _Torchvision(
        "FashionMNIST", 10, AugmentSpec(pad=2, flip=True), "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    ),
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
                "data.name",
                f"cannot download {name} into {root} ({error.__class__.__name__}: {error}); on a machine without "
                f"network, fetch {source.url} elsewhere and place the files in {root} in torchvision's layout, "
                f"or point --set data.root=DIR (or KDSWEEP_DATA) at a copy",
            ) from error

        def arrays(ds) -> tuple[np.ndarray, torch.Tensor]:
            images = np.asarray(ds.data, dtype=np.uint8)  # N x H x W (x C): 8-bit pixels, kept as they are
            images = images.transpose(0, 3, 1, 2) if images.ndim == 4 else images[:, None]
            return np.ascontiguousarray(images), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)

        train_x, train_y = arrays(train)
        test_x, test_y = arrays(test)
        return split_in_memory(
            name, spec, train_x, train_y, test_x, test_y, source.num_classes, source.augment, pixel_max=255.0
        )

    return load


for _name, _source in _TORCHVISION.items():
    register_dataset(_name)(_torchvision_loader(_name, _source))
