"""Shared fixtures: tiny data, an isolated teacher cache, and one Ray runtime per test session."""

from __future__ import annotations

import os

import pytest

from kdsweep.data import DataSpec, load_dataset
from kdsweep.tracking import free_port


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




@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on a free 127.0.0.1 port: sqlite backend, artifacts served over HTTP."""
    import subprocess
    import sys
    import time
    import urllib.request

    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--serve-artifacts",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        stdout=open(root / "server.log", "w"), stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield uri
    process.terminate()
    process.wait(timeout=30)
