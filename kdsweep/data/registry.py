"""Datasets by name or path: one decorator, one dict, and the check that runs before any trial."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from kdsweep.data.folders import load_image_folder
from kdsweep.data.spec import DataSpec
from kdsweep.data.splits import Dataset
from kdsweep.errors import ConfigError, unknown_name

FIELD = "data.name"  # how the space file spells the dataset, in every error about it
Loader = Callable[[DataSpec], Dataset]
_DATASETS: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator: make `loader(spec) -> Dataset` loadable by `name`."""

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
            raise ConfigError(FIELD, f"directory '{name}' does not exist")
        if not (path / "train").is_dir():
            raise ConfigError(FIELD, f"'{name}' has no train/ folder (ImageFolder layout: train/ and test/ or val/)")
        if not ((path / "test").is_dir() or (path / "val").is_dir()):
            raise ConfigError(FIELD, f"'{name}' has no test/ or val/ folder next to train/")
        return
    raise ConfigError(FIELD, unknown_name("dataset", name, list_datasets(), or_else="an ImageFolder directory"))


def load_dataset(spec: DataSpec) -> Dataset:
    """Load a registered dataset or an ImageFolder directory into seeded, disjoint splits."""
    check_dataset_name(spec.name)
    loader = _DATASETS.get(spec.name)
    if loader is None:
        return load_image_folder(spec)
    return loader(spec)
