"""An `mlflow server` process: the private one that fronts ./mlflow.db during a sweep, and the tests' own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow

from kdsweep.errors import ConfigError
from kdsweep.tracking.store import check_reachable, resolve_tracking_uri, use_store

# A cold start creates or migrates the database: tens of seconds on two busy cores.
SERVER_START_TIMEOUT_S = 120
# Runs `argv[2:]` in this process once Linux has been asked (prctl PR_SET_PDEATHSIG, kept across exec)
# to send it SIGTERM when its parent (pid argv[1]) dies: a driver killed with SIGKILL, or by the OOM
# killer, leaves no server holding its port and database. A fresh interpreter, so no thread of the
# parent's is there to deadlock it (what makes Popen's preexec_fn unsafe in a Ray driver).
ENDS_WITH_PARENT = (
    "import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); "
    "os.getppid() == int(sys.argv[1]) or sys.exit(1); os.execv(sys.argv[2], sys.argv[2:])"
)
PROXIED = "mlflow-artifacts:/"  # artifacts uploaded through the server, stored in its artifacts destination


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now (for servers and Ray nodes started on this machine)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class MlflowServer:
    """`mlflow server` as a child process, ready once its /health answers; `stop()` ends it, workers too.

    One gunicorn worker, because several would write one sqlite file at once ("database is
    locked"), and no job runner (MLflow's huey consumers: 7 processes kdsweep never uses). It
    serves artifacts from `artifacts_destination` (what `mlflow-artifacts:/` URIs mean: clients
    upload and download over HTTP, as workers on other machines must); experiments it creates
    store theirs at `default_artifact_root` (a path that clients write directly, or
    `mlflow-artifacts:/` to have them uploaded through it). It accepts requests addressed to its
    own host and port only (MLflow's protection against DNS rebinding).

    `mlflow server` runs its worker as a child process (uvicorn), which no death signal reaches: the
    server gets a process group (a session) of its own, and `stop()` ends the whole group, so that a
    worker whose parent was killed holds neither the port nor the database. Its own session also keeps
    a terminal's Ctrl-C, meant for the sweep, from stopping the server the sweep still writes to.
    """

    def __init__(
        self,
        backend_store_uri: str,
        artifacts_destination: Path,
        log_path: Path,
        default_artifact_root: str = PROXIED,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.log_path = log_path
        allowed = f"{host}:{self.port},{host},127.0.0.1:{self.port},localhost:{self.port}"
        command = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(self.port)]
        if sys.platform == "linux":
            command = [sys.executable, "-c", ENDS_WITH_PARENT, str(os.getpid()), *command]
        command += ["--workers", "1", "--backend-store-uri", backend_store_uri, "--allowed-hosts", allowed]
        command += ["--serve-artifacts", "--artifacts-destination", str(artifacts_destination)]
        command += ["--default-artifact-root", default_artifact_root]
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                start_new_session=True,  # setsid in the child, before exec: no Python runs there
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
        """SIGTERM (which `mlflow server` passes on to its worker), then SIGKILL for whatever of its
        process group is left: a worker orphaned by a server that was killed."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # the group is empty: nothing was left
            pass
        self.process.wait()

    def discard(self) -> None:
        """Stop it and remove its log: the end of a private server that did its job (or was not needed)."""
        self.stop()
        self.log_path.unlink(missing_ok=True)


def launch_private_server(uri: str, host: str | None = None) -> MlflowServer | None:
    """Start (not wait for) the private server a sqlite store gets, so that its start-up overlaps
    other work (Ray's); None for any other store. `host` as in `tracking_service`."""
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///"))
    log_path = database.parent / f".mlflow-server-{os.getpid()}.log"
    root = PROXIED if host else str(database.parent / "mlruns")
    return MlflowServer(uri, database.parent / "mlartifacts", log_path, root, host or "127.0.0.1")


@contextmanager
def tracking_service(uri: str, host: str | None = None, log=print, server: MlflowServer | None = None) -> Iterator[str]:
    """The URI to log to. A local sqlite store is put behind a private `mlflow server` for as long
    as it is used, so that concurrent trials never write the database file at once ("database is
    locked"), and so that artifacts stored through a server (`mlflow-artifacts:/`) can be read.

    `host` None: on 127.0.0.1, and new experiments keep their artifacts in ./mlruns next to the
    database, written directly. `host` an address of this machine that the other nodes of a cluster
    reach: new experiments' artifacts are uploaded through the server into ./mlartifacts (where
    `mlflow ui` in the same directory looks for them), since a worker's own disk is out of reach.
    `server`: that server, already launched by `launch_private_server` (it is stopped here too).
    """
    server = server or launch_private_server(uri, host)
    if server is None:
        yield uri
        return
    server.wait_ready()  # on failure the log stays, for the user to read
    try:
        log(f"MLflow: {uri} served at {server.url}")
        yield server.url
    finally:
        server.discard()


@contextmanager
def open_store(tracking_uri: str | None, log=print) -> Iterator[str]:
    """For a command: the store `--tracking-uri` names (or the default), checked, served when it is a
    sqlite file (so that artifacts a cluster sweep uploaded through a server can be read), and made
    the one `models:/` URIs resolve against."""
    store = resolve_tracking_uri(tracking_uri)
    use_store(store)
    with tracking_service(store, log=log) as uri:
        mlflow.set_tracking_uri(uri)
        yield uri
