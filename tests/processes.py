"""The processes a test left behind, found through /proc (no psutil in the project)."""

from __future__ import annotations

from pathlib import Path


def servers_of(folder: Path) -> list[int]:
    """Pids of running processes whose command line names `folder`'s ./mlflow.db: its MLflow servers."""
    database = str(folder / "mlflow.db").encode()
    return [int(path.parent.name) for path in Path("/proc").glob("[0-9]*/cmdline") if database in _reads(path)]


def _reads(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""
