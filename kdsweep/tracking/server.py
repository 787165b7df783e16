"""An `mlflow server` process: the private one that fronts ./mlflow.db during a sweep (kept up while it
is used), and the tests' own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import mlflow

from kdsweep.errors import ConfigError
from kdsweep.tracking import address
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
# The keeper of a private server: how often it looks at the process (a dead one is restarted at
# once), how often it asks /health, and for how long a live process may not answer before it is
# taken for hung and restarted (generous: on two busy cores a healthy server can be slow).
WATCH_S, HEALTH_EVERY_S, HUNG_AFTER_S = 1.0, 5.0, 60.0
RESTART_RETRY_S = 10.0  # after a restart that failed (the log says why), the next try
PORT_RELEASE_S = 5.0  # how long a dead server's port may take to be free again before another is taken


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
        self.host, self.url, self.log_path = host, f"http://{host}:{self.port}", log_path
        self.launched_with = {
            "backend_store_uri": backend_store_uri,
            "artifacts_destination": artifacts_destination,
            "log_path": log_path,
            "default_artifact_root": default_artifact_root,
            "host": host,
        }
        allowed = f"{host}:{self.port},{host},127.0.0.1:{self.port},localhost:{self.port}"
        command = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(self.port)]
        if sys.platform == "linux":
            command = [sys.executable, "-c", ENDS_WITH_PARENT, str(os.getpid()), *command]
        command += ["--workers", "1", "--backend-store-uri", backend_store_uri, "--allowed-hosts", allowed]
        command += ["--serve-artifacts", "--artifacts-destination", str(artifacts_destination)]
        command += ["--default-artifact-root", default_artifact_root]
        with open(log_path, "a") as log:  # appended: a restarted server's log keeps why the last one died
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                start_new_session=True,  # setsid in the child, before exec: no Python runs there
            )

    def relaunch(self, port: int | None) -> MlflowServer:
        """Another server on the same store and artifacts (`port` None: a free one), starting up."""
        return MlflowServer(**self.launched_with, port=port)

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
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        with suppress(ProcessLookupError, PermissionError):  # the group is empty: nothing was left
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def discard(self) -> None:
        """Stop it and remove its log: the end of a private server that did its job (or was not needed)."""
        self.stop()
        self.log_path.unlink(missing_ok=True)


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on `port` now (as uvicorn binds: SO_REUSEADDR, so a closed
    connection's TIME_WAIT does not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class ServerKeeper:
    """Keeps a private server up while a sweep uses it: one that dies (the OOM killer, a stray kill) or
    stops answering is ended with its whole process group and restarted on the same store, on its
    port when that is free, else on another; each start is published (tracking/address.py), so that
    trials follow a new port and retry at once what they could not store; one line says so.

    The keeper's thread launches the replacements, and Linux sends a server its death signal when the
    *thread* that started it ends: the thread lives until `stop()`, which is followed by the server's.
    """

    def __init__(self, server: MlflowServer, log=print) -> None:
        self.server, self.log = server, log
        self.first_url, self.starts = server.url, 1
        address.publish(self.first_url, server.url, self.starts)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="kdsweep-mlflow-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> MlflowServer:
        """Stop watching; the server that runs now, for its owner to stop."""
        self._stopping.set()
        self._thread.join()
        address.withdraw(self.first_url)
        return self.server

    def _watch(self) -> None:
        next_health, silent_since = time.monotonic() + HEALTH_EVERY_S, None
        while not self._stopping.wait(WATCH_S):
            code = self.server.process.poll()
            if code is None and time.monotonic() >= next_health:
                next_health = time.monotonic() + HEALTH_EVERY_S
                try:
                    check_reachable(self.server.url, timeout=HEALTH_EVERY_S)
                    silent_since = None
                except ConfigError:
                    silent_since = silent_since or time.monotonic()
            hung = silent_since is not None and time.monotonic() - silent_since >= HUNG_AFTER_S
            if code is not None or hung:
                cause = f"did not answer for {HUNG_AFTER_S:.0f} s" if hung else _ended(code)
                if self._restart(cause):
                    next_health, silent_since = time.monotonic() + HEALTH_EVERY_S, None
                else:
                    self._stopping.wait(RESTART_RETRY_S)

    def _restart(self, cause: str) -> bool:
        old = self.server
        old.stop()  # its whole process group: a worker it left behind holds the port and the database
        deadline = time.monotonic() + PORT_RELEASE_S
        while not port_is_free(old.host, old.port) and time.monotonic() < deadline:
            time.sleep(0.2)
        same_port = port_is_free(old.host, old.port)
        try:
            new = old.relaunch(old.port if same_port else None)
            new.wait_ready()
        except ConfigError as error:  # it did not start: the old one's record is kept, it is tried again
            self.log(f"MLflow: the private server {cause} and could not be restarted ({error.problem}); retrying")
            return False
        self.server, self.starts = new, self.starts + 1
        address.publish(self.first_url, new.url, self.starts)
        where = f"and port ({new.url})" if same_port else f"at {new.url} (its port was taken; trials follow it there)"
        self.log(f"MLflow: the private server {cause}; restarted it on the same store {where}")
        return True


def _ended(code: int) -> str:
    if code < 0:
        return f"was killed ({signal.Signals(-code).name})"
    return f"exited (code {code})"


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

    A private server that dies meanwhile is restarted (`ServerKeeper`); the URI yielded is where it
    first answered, which `address.ServerAddress` follows should a restart take another port.
    """
    server = server or launch_private_server(uri, host)
    if server is None:
        yield uri
        return
    server.wait_ready()  # on failure the log stays, for the user to read
    keeper = ServerKeeper(server, log)
    try:
        log(f"MLflow: {uri} served at {server.url}")
        yield server.url
    finally:
        keeper.stop().discard()


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
