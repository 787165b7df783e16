"""Datasets by name or path: one decorator, one dict, and the check that runs before any trial."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from kdsweep.data.folders import load_image_folder
from kdsweep.data.spec import DataSpec
from kdsweep.data.splits import Dataset
from kdsweep.errors import ConfigError
from kdsweep.registry import Registry

FIELD = "data.name"  # how the space file spells the dataset, in every error about it
Loader = Callable[[DataSpec], Dataset]
_DATASETS: Registry[Loader] = Registry("dataset")


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator: make `loader(spec) -> Dataset` loadable by `name`."""
    return _DATASETS.register(name)


def list_datasets() -> list[str]:
    return _DATASETS.names()


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
    raise ConfigError(FIELD, _DATASETS.unknown(name, or_else="an ImageFolder directory"))


def load_dataset(spec: DataSpec) -> Dataset:
    """Load a registered dataset or an ImageFolder directory into seeded, disjoint splits."""
    check_dataset_name(spec.name)
    if spec.name not in _DATASETS:
        return load_image_folder(spec)
    return _DATASETS.get(spec.name)(spec)
