"""An `mlflow server` process: the private one that fronts ./mlflow.db during a sweep, and the tests' own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kdsweep.errors import ConfigError
from kdsweep.tracking.store import check_reachable

# A cold start creates or migrates the database: tens of seconds on two busy cores.
SERVER_START_TIMEOUT_S = 120


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now (for servers and Ray nodes started on this machine)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class MlflowServer:
    """`mlflow server` as a child process, ready once its /health answers; `stop()` ends it.

    One gunicorn worker, because several would write one sqlite file at once ("database is
    locked"), and no job runner (MLflow's huey consumers: 7 processes kdsweep never uses).
    Artifacts are either served (clients upload over HTTP: `serve_artifacts`, as workers on other
    machines need) or written by clients straight to `artifacts` (a path they share).
    """

    def __init__(
        self,
        backend_store_uri: str,
        artifacts: Path,
        log_path: Path,
        serve_artifacts: bool = False,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.log_path = log_path
        where = (
            ["--serve-artifacts", "--artifacts-destination", str(artifacts)]
            if serve_artifacts
            else ["--no-serve-artifacts", "--default-artifact-root", str(artifacts)]
        )
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mlflow",
                    "server",
                    "--host",
                    host,
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                    "--backend-store-uri",
                    backend_store_uri,
                    *where,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            )

    def wait_ready(self, timeout: float = SERVER_START_TIMEOUT_S) -> None:
        deadline = time.time() + timeout
        while True:
            try:
                check_reachable(self.url, timeout=2)
                return
            except ConfigError:
                if self.process.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise ConfigError(
                        "--tracking-uri", f"the MLflow server did not start (see {self.log_path})"
                    ) from None
                time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@contextmanager
def tracking_service(uri: str, log=print) -> Iterator[str]:
    """The URI trials log to. A local sqlite store is put behind a private `mlflow server` on
    127.0.0.1 for the sweep's duration, so that concurrent trials never write the database file
    at once ("database is locked"); artifacts still go straight to ./mlruns next to it."""
    if not uri.startswith("sqlite:///"):
        yield uri
        return
    database = Path(uri.removeprefix("sqlite:///"))
    log_path = database.parent / f".mlflow-server-{os.getpid()}.log"
    server = MlflowServer(uri, database.parent / "mlruns", log_path)
    server.wait_ready()  # on failure the log stays, for the user to read
    try:
        log(f"MLflow: {uri} served to the trials at {server.url}")
        yield server.url
    finally:
        server.stop()
        log_path.unlink(missing_ok=True)
