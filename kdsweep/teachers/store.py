"""Trained teachers kept on disk (where the sweep's driver runs), so that later sweeps reuse them.

A file is keyed on everything that makes the teacher what it is: the exact data splits
(`Dataset.digest`: dataset, seed, val/test fractions, image size, a folder's files) and every
training setting. Change any of them and a new teacher is trained; nothing stale is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from kdsweep.data import Dataset
from kdsweep.teachers.spec import TeacherSpec

# The TeacherSpec fields that change what a trained teacher is (mode, cache sizes and where it lives do not).
TRAINING_FIELDS = ("arch", "weights", "epochs", "optimizer", "lr", "batch_size", "seed")


def default_cache_dir() -> Path:
    return Path(os.environ.get("KDSWEEP_CACHE", Path.home() / ".cache" / "kdsweep" / "teachers"))


def training_settings(spec: TeacherSpec) -> dict:
    return {name: getattr(spec, name) for name in TRAINING_FIELDS}


def cache_path(spec: TeacherSpec, data: Dataset) -> Path:
    """e.g. digits-resnet18-3f9a0c1d2e4b5a67.pt (or ...-resnet18-IMAGENET1K_V1-...): readable, and
    unique to the data and the training."""
    key = hashlib.sha256(json.dumps([data.digest, training_settings(spec)], sort_keys=True).encode()).hexdigest()[:16]
    root = Path(spec.cache_dir) if spec.cache_dir else default_cache_dir()
    start = f"-{'pretrained' if spec.weights is True else spec.weights}" if spec.weights else ""
    label = f"{Path(data.name).name or data.name}-{spec.arch}{start}-{key}.pt"  # a folder's last component
    return root / re.sub(r"[^A-Za-z0-9_.-]+", "_", label)  # one file name (timm/NAME's slash replaced)
