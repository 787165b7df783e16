"""Trained teachers kept on disk, so that later sweeps on the same data reuse them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from kdsweep.data import Dataset
from kdsweep.teachers.spec import TeacherSpec


def default_cache_dir() -> Path:
    return Path(os.environ.get("KDSWEEP_CACHE", Path.home() / ".cache" / "kdsweep" / "teachers"))


def cache_path(spec: TeacherSpec, data: Dataset) -> Path:
    dataset = data.name if "/" not in data.name else "folder-" + hashlib.sha1(data.name.encode()).hexdigest()[:10]
    root = Path(spec.cache_dir) if spec.cache_dir else default_cache_dir()
    start = f"-{spec.weights}" if spec.weights else ""
    return root / f"{dataset}-{spec.arch}{start}-seed{spec.seed}-data{data.seed}-e{spec.epochs}.pt"
