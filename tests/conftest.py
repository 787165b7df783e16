"""Shared fixtures: tiny data, an isolated teacher cache, and one Ray runtime per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kdsweep.data import DataSpec, load_dataset
from kdsweep.tracking.server import MlflowServer


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path_factory, monkeypatch):
    """Trained teachers and datasets go to a per-session temp dir, never the user's cache."""
    root = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("KDSWEEP_CACHE", str(root / "teacher-cache"))
    monkeypatch.setenv("KDSWEEP_DATA", str(root / "data-cache"))


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="module")
def no_tracking_uri_leak():
    """mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI, which every later subprocess (a sweep
    run as a user runs it) would inherit as its default store: each test module starts and ends clean."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    mlflow.set_tracking_uri(before)


@pytest.fixture(scope="session")
def tiny_data():
    """4 classes of 1x8x8 synthetic images: a trial on it takes well under a second."""
    return load_dataset(DataSpec(name="synthetic", channels=1, image_size=8, num_classes=4, num_samples=160))


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """One real Ray runtime for the whole test session (starting Ray costs seconds)."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Before Ray starts, so that its workers inherit it: where tests/faults.py reads what to break.
    faults = tmp_path_factory.getbasetemp() / "faults.json"
    faults.write_text("{}")
    os.environ["KDSWEEP_TEST_FAULTS"] = str(faults)
    # Ray's workers get the driver's working directory on sys.path, not pytest's tests/: put it on
    # PYTHONPATH, which they inherit, so that a space's `plugins: [faults]` imports there too.
    tests = str(Path(__file__).parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on a free 127.0.0.1 port: sqlite backend, artifacts served over HTTP."""
    root = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(f"sqlite:///{root}/mlflow.db", root / "artifacts", root / "server.log")
    server.wait_ready()
    yield server.url
    server.stop()


@pytest.fixture
def sweeps():
    """Start `python -m kdsweep.search --address ...` subprocesses (tests/clusters.py); any still
    running after the test is killed."""
    from clusters import Sweep

    started: list[Sweep] = []

    def run(*args, **kwargs) -> Sweep:
        started.append(Sweep(*args, **kwargs))
        return started[-1]

    yield run
    for sweep in started:
        sweep.kill()
