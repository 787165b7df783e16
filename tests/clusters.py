"""Ray clusters of several processes on this machine, for the tests that need a real cluster.

`LocalCluster`: a head and workers started with `ray start`, resources declared up front (optionally a
worker that does not see some paths, as another machine would not). `AutoscalingCluster`: Ray's own
autoscaler with its fake_multinode provider, whose node types come from our cluster.yaml, so that
nodes (GPU workers included) are added on demand. Every cluster uses its own ports and temp dir and
is stopped by killing its own process groups: never `ray stop`, which would stop every Ray runtime on
this machine. `Sweep` runs `python -m kdsweep.search --address ...` against one, as a subprocess.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from kdsweep.tracking.server import free_port

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
RAY = str(Path(sys.executable).with_name("ray"))  # the venv's CLI: nodes run this interpreter
CLUSTER_YAML = REPO / "cluster.yaml"
FAKE_HEAD_TYPE = "ray.head.default"  # the fake_multinode provider names the head's node type so, always
MB = 2**20


def wait_for(predicate, timeout: float, what: str, every: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def ray_env() -> dict[str, str]:
    """This process's environment (with its per-test caches) for the nodes and drivers, minus RAY_ADDRESS."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(
        # `ray start --head` turns token authentication on when ~/.ray/auth_token exists (any earlier
        # `ray.init()` writes one), and a worker node started without the token could not join.
        RAY_AUTH_MODE="disabled",
        # Declare a killed node dead after ~3 s of missed health checks instead of ~15 s.
        RAY_health_check_initial_delay_ms="1000",
        RAY_health_check_period_ms="1000",
        RAY_health_check_failure_threshold="3",
        # This checkout's kdsweep (and tests/faults.py) in every node's workers and every driver.
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), str(TESTS), os.environ.get("PYTHONPATH")])),
    )
    return env


def _ports() -> list[str]:
    """Free ports for everything a node opens, so that it never meets another Ray runtime's defaults."""
    return [
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
    ]


def alive_nodes(address: str, expected: int = 1, timeout: float = 120, dead_too: bool = False) -> list[dict]:
    """The alive nodes (and the dead ones too), once `expected` are alive (public API, in a throwaway driver)."""
    code = (
        "import json, time, ray\n"
        f"ray.init(address={address!r}, log_to_driver=False)\n"
        f"deadline = time.time() + {timeout}\n"
        f"while len([n for n in ray.nodes() if n['Alive']]) < {expected} and time.time() < deadline:\n"
        "    time.sleep(0.5)\n"
        f"print(json.dumps([n for n in ray.nodes() if n['Alive'] or {dead_too}]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=ray_env(), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    # Ray may print a warning after it (a node's lagging heartbeats on a busy machine): the JSON line is ours.
    return json.loads(next(line for line in reversed(out.stdout.splitlines()) if line.startswith("[")))


class _Cluster:
    """Nodes as `ray start --block` process groups sharing a private temp dir; killed by group."""

    def __init__(self) -> None:
        # Short and private: Ray's unix sockets live under it (107-byte limit), and `ray start`
        # records its address there rather than in /tmp/ray, where a plain `ray.init()` would find it.
        self.temp_dir = tempfile.mkdtemp(prefix="kdray", dir="/tmp")
        self.processes: dict[str, subprocess.Popen] = {}
        self.address = self.head_node_id = ""

    def _start(self, role: str, args: list[str], env: dict[str, str], prefix: list[str] = ()) -> None:
        command = [*prefix, RAY, "start", *args, "--block", "--disable-usage-stats", f"--temp-dir={self.temp_dir}"]
        with open(Path(self.temp_dir) / f"{role}.log", "a") as log:
            self.processes[role] = subprocess.Popen(
                [*command, *_ports()], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _start_head(self, args: list[str], env: dict[str, str]) -> None:
        port = free_port()
        self._start(
            "head",
            ["--head", f"--port={port}", "--include-dashboard=false", f"--dashboard-port={free_port()}", *args],
            env,
        )
        address_file = Path(self.temp_dir) / "ray_current_cluster"  # written once the head is up
        self.address = wait_for(
            lambda: self._check_running() and address_file.exists() and address_file.read_text().strip(),
            120,
            "the head node",
        )
        self.head_node_id = self.nodes()[0]["NodeID"]

    def nodes(self, expected: int = 1) -> list[dict]:
        nodes = alive_nodes(self.address, expected)
        self._check_running()
        assert len(nodes) >= expected, f"{len(nodes)} of {expected} nodes joined:\n{self.logs()}"
        return nodes

    def _check_running(self) -> bool:
        for role, process in self.processes.items():
            if process.poll() is not None and not role.startswith("killed"):
                raise RuntimeError(f"ray node {role} exited early:\n{self.logs()}")
        return True

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(Path(self.temp_dir).glob("*.log")))

    def stop(self) -> None:
        """SIGKILL every process group this cluster started (nodes an autoscaler added run in the head's)."""
        for process in self.processes.values():
            # SIGTERM would make the head drain for up to 30 s; nothing here needs a clean exit
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class LocalCluster(_Cluster):
    """A head and workers with declared resources. A worker may be started in its own mount namespace
    with some paths hidden (an empty directory mounted over them): a node of another machine."""

    def __init__(self, head_args: list[str], worker_args: list[str]) -> None:
        super().__init__()
        self.head_args, self.worker_args = head_args, worker_args
        self.worker_node_id = ""

    def start(self, head_env: dict[str, str] | None = None) -> None:
        """`head_env`: the head's environment (default `ray_env()`), e.g. one that hides this machine's GPU."""
        self._start_head(self.head_args, head_env or ray_env())
        self.worker_node_id = self.start_worker("worker", self.worker_args)

    def start_worker(self, role: str, args: list[str], hidden: list[Path] = ()) -> str:
        """Start a worker node; returns its node id."""
        before = {n["NodeID"] for n in self.nodes()}
        prefix: list[str] = []
        if hidden:  # root only: unshare(1) with a private mount namespace, then bind an empty dir over each path
            empty = Path(tempfile.mkdtemp(prefix="kdempty"))
            mounts = " && ".join(f"mount --bind {empty} {path}" for path in hidden)
            prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{mounts} && exec "$@"', "sh"]
        self._start(role, [f"--address={self.address}", *args], ray_env(), prefix)
        # Wait for the new node itself, not for a count: a node killed by the test before may still be
        # listed alive in `before` and be declared dead meanwhile.
        new = wait_for(
            lambda: [n["NodeID"] for n in alive_nodes(self.address, timeout=5) if n["NodeID"] not in before],
            120,
            f"the {role} node",
        )
        self._check_running()
        return new[0]

    @property
    def worker(self) -> subprocess.Popen | None:
        return self.processes.get("worker")

    def ensure_worker(self) -> None:
        """Start a new worker node if a test killed the last one."""
        if self.worker is None or self.worker.poll() is not None:
            self.processes.pop("worker", None)
            self.worker_node_id = self.start_worker("worker", self.worker_args)

    def kill_worker(self) -> None:
        self.kill_role("worker")

    def kill_role(self, role: str) -> None:
        """SIGKILL a worker node's whole process group: raylet, object store, agents, all at once."""
        worker = self.processes.pop(role)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        self.processes[f"killed-{role}-{worker.pid}"] = worker


class AutoscalingCluster(_Cluster):
    """Ray's real autoscaler with the fake_multinode provider: a head without GPUs, and cluster.yaml's
    worker node types, added by the autoscaler when work asks for them (their processes run in the
    head's process group). Resources are shrunk to what this 2-core machine allows; GPUs are declared."""

    def __init__(self, cluster_yaml: Path = CLUSTER_YAML, worker_cpus: int = 1, max_workers: int = 2) -> None:
        super().__init__()
        self.source = yaml.safe_load(cluster_yaml.read_text())
        self.worker_cpus, self.max_workers = worker_cpus, max_workers
        self.config_file = Path(self.temp_dir) / "autoscaling.yaml"

    def node_types(self, gcs_address: str) -> dict:
        """cluster.yaml's node types for the fake provider: names, GPUs and min/max workers as there."""
        head = self.source["head_node_type"]
        types = {
            FAKE_HEAD_TYPE: {"resources": {"CPU": 1, "GPU": 0}, "node_config": {}, "min_workers": 0, "max_workers": 0}
        }
        for name, spec in self.source["available_node_types"].items():
            if name == head:
                assert not spec.get("resources", {}).get("GPU"), "cluster.yaml's head must have no GPU"
                continue
            resources = dict(spec["resources"], CPU=min(spec["resources"].get("CPU", 1), self.worker_cpus))
            resources["object_store_memory"] = 100 * MB  # the provider passes it to the fake raylet
            types[name] = {
                "resources": resources,
                "node_config": {},
                "min_workers": spec.get("min_workers", 0),
                "max_workers": min(spec.get("max_workers", self.max_workers), self.max_workers),
            }
        return {
            "cluster_name": "kdsweep-fake",
            "max_workers": self.max_workers,
            "upscaling_speed": self.source.get("upscaling_speed", 1.0),
            "idle_timeout_minutes": 1.0,
            "provider": {
                "type": "fake_multinode",
                "gcs_address": gcs_address,
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
            },
            "available_node_types": types,
            "head_node_type": FAKE_HEAD_TYPE,
            # Keys the v1 autoscaler reads as they are (this Ray's wheel has no example config to fill them).
            "auth": {},
            "docker": {},
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "rsync_exclude": [],
            "rsync_filter": [],
        }

    def start(self) -> None:
        import ray._private.services

        port = free_port()
        ip = ray._private.services.get_node_ip_address()
        # The provider joins its nodes to <ip>:6379 unless told the head's real address.
        self.config_file.write_text(yaml.safe_dump(self.node_types(f"{ip}:{port}")))
        env = {
            **ray_env(),
            "RAY_FAKE_CLUSTER": "1",
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        }
        self._start(
            "head",
            [
                "--head",
                f"--port={port}",
                f"--autoscaling-config={self.config_file}",
                "--num-cpus=1",
                "--num-gpus=0",
                f"--object-store-memory={100 * MB}",
                "--include-dashboard=false",
                f"--dashboard-port={free_port()}",
            ],
            env,
        )
        self.address = f"{ip}:{port}"
        wait_for(lambda: self._check_running() and "Ray runtime started" in self.logs(), 120, "the head node")
        self.head_node_id = self.nodes()[0]["NodeID"]


class Sweep:
    """`python -m kdsweep.search --address ...` as a subprocess, with its own storage and output.

    `tracking_uri` None: the default store, ./mlflow.db in `tmp_path` (its working directory)."""

    def __init__(
        self,
        cluster: _Cluster,
        tracking_uri: str | None,
        tmp_path: Path,
        space: dict,
        name: str,
        *extra: str,
        select: bool = False,
    ):
        """Without selection and scratch baselines, which are not what the cluster tests look at."""
        self.storage = tmp_path / "results"
        self.output = tmp_path / f"{name}.json"
        self.log = tmp_path / f"{name}.log"
        self.name = name
        space_file = tmp_path / "space.yaml"
        space_file.write_text(yaml.safe_dump(space))
        command = [
            sys.executable,
            "-m",
            "kdsweep.search",
            "--space",
            str(space_file),
            "--name",
            name,
            "--address",
            cluster.address,
            "--storage",
            str(self.storage),
            *(["--tracking-uri", tracking_uri] if tracking_uri else []),
            "--output-json",
            str(self.output),
            *([] if select else ["--no-select"]),
            "--no-baselines",
            *extra,
        ]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                command, cwd=tmp_path, env=ray_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def results(self) -> dict[str, list[dict]]:
        """Each trial directory's result.json lines so far (one per reported epoch)."""
        found = {}
        for path in (self.storage / self.name).glob("*/result.json"):
            lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]
            found[path.parent.name] = lines
        return found

    def finish(self, timeout: float) -> tuple[int, list[dict]]:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the sweep did not finish in {timeout:.0f}s:\n{self.log_tail()}")
        rows = json.loads(self.output.read_text()) if self.output.exists() else []
        return code, rows

    def log_tail(self) -> str:
        return self.log.read_text()[-6000:]

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
