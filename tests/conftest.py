"""Shared fixtures: tiny data, an isolated teacher cache, and one Ray runtime per test session."""

from __future__ import annotations

import os

import pytest

from kdsweep.data import DataSpec, load_dataset


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path_factory, monkeypatch):
    """Trained teachers and datasets go to a per-session temp dir, never the user's cache."""
    root = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("KDSWEEP_CACHE", str(root / "teacher-cache"))
    monkeypatch.setenv("KDSWEEP_DATA", str(root / "data-cache"))


@pytest.fixture(scope="session")
def tiny_data():
    """4 classes of 1x8x8 synthetic images: a trial on it takes well under a second."""
    return load_dataset(DataSpec(name="synthetic", channels=1, image_size=8, num_classes=4, num_samples=160))


@pytest.fixture(scope="session")
def ray_session():
    """One real Ray runtime for the whole test session (starting Ray costs seconds)."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield ray
    ray.shutdown()
