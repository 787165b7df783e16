"""A real two-node Ray cluster on this machine: a head and a worker, each its own `ray start` process.

The sweep driver joins it with --address as a subprocess (the pytest process never connects to Ray,
so it cannot clash with the session's own runtime), writes Tune results to a local directory that
both nodes see (standing in for shared storage) and tracks students in a real `mlflow server`.
"""

from __future__ import annotations

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
from mlflow.tracking import MlflowClient

from kdsweep.tracking.server import free_port

pytestmark = pytest.mark.multinode

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))  # the venv's CLI: nodes run this interpreter

SPACE = {
    "data": {"name": "synthetic", "channels": 1, "image_size": 8, "num_classes": 4, "num_samples": 2000},
    "teacher": {"arch": "small_cnn", "epochs": 1},
    "budget": {"epochs": 2, "num_samples": 2},
    "scheduler": {"name": "none"},
    "searcher": {"name": "random", "seed": 1},
    "resources": {"cpus_per_trial": 1, "max_failures": 3},
    "fixed": {"batch_size": 32, "lr": 0.05, "student": "small_cnn"},
    "search": {
        "width": {"choice": [4, 8]},
        "temperature": {"uniform": [2.0, 6.0]},
        "alpha": {"uniform": [0.5, 1.0]},
    },
}


def wait_for(predicate, timeout: float, what: str, every: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class LocalCluster:
    """A head and a worker node as two `ray start --block` process groups sharing a private temp dir.

    Each node is stopped by killing its own process group, never with `ray stop`, which would also
    stop any other Ray runtime on this machine.
    """

    def __init__(self, head_args: list[str], worker_args: list[str]) -> None:
        self.head_args, self.worker_args = head_args, worker_args
        # Short and private: Ray's unix sockets live under it (107-byte limit), and `ray start`
        # records its address there rather than in /tmp/ray, where a plain `ray.init()` would find it.
        self.temp_dir = tempfile.mkdtemp(prefix="kdray", dir="/tmp")
        self.head: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.address = self.head_node_id = self.worker_node_id = ""

    def start(self) -> None:
        self.head = self._start(
            "head",
            [
                "--head",
                f"--port={free_port()}",
                "--include-dashboard=false",
                f"--dashboard-port={free_port()}",
                *self.head_args,
            ],
        )
        address_file = Path(self.temp_dir) / "ray_current_cluster"  # written once the head is up
        self.address = wait_for(
            lambda: self._check_running() and address_file.exists() and address_file.read_text().strip(),
            120,
            "the head node",
        )
        self.start_worker()

    def start_worker(self) -> None:
        self.worker = self._start("worker", [f"--address={self.address}", *self.worker_args])
        nodes = self._alive_nodes(expected=2)
        self.head_node_id = next(n["NodeID"] for n in nodes if "node:__internal_head__" in n["Resources"])
        self.worker_node_id = next(n["NodeID"] for n in nodes if n["NodeID"] != self.head_node_id)

    def ensure_worker(self) -> None:
        """Start a new worker node if a test killed the last one."""
        if self.worker is None or self.worker.poll() is not None:
            self.start_worker()

    def kill_worker(self) -> None:
        """SIGKILL the worker node's whole process group: raylet, object store, agents, all at once."""
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(timeout=30)

    def _start(self, role: str, args: list[str]) -> subprocess.Popen:
        common = [
            "--block",
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
            f"--dashboard-agent-listen-port={free_port()}",
        ]
        with open(Path(self.temp_dir) / f"{role}.log", "a") as log:
            return subprocess.Popen(
                [RAY, "start", *args, *common],
                env=ray_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _check_running(self) -> bool:
        for process in (self.head, self.worker):
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"a ray node exited early:\n{self.logs()}")
        return True

    def _alive_nodes(self, expected: int) -> list[dict]:
        """The alive nodes, once `expected` of them have registered (public API, in a throwaway driver)."""
        code = (
            "import json, time, ray\n"
            f"ray.init(address={self.address!r}, log_to_driver=False)\n"
            "deadline = time.time() + 120\n"
            f"while len(nodes := [n for n in ray.nodes() if n['Alive']]) < {expected} and time.time() < deadline:\n"
            "    time.sleep(0.5)\n"
            "print(json.dumps(nodes))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], env=ray_env(), capture_output=True, text=True, timeout=180)
        self._check_running()
        assert out.returncode == 0, out.stderr[-3000:]
        nodes = json.loads(out.stdout.strip().splitlines()[-1])
        assert len(nodes) == expected, f"{len(nodes)} of {expected} nodes joined:\n{self.logs()}"
        return nodes

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(Path(self.temp_dir).glob("*.log")))

    def stop(self) -> None:
        for process in (self.worker, self.head):
            if process is None:
                continue
            try:  # SIGTERM would make the head drain for up to 30 s; nothing here needs a clean exit
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


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
    )
    return env


@pytest.fixture(scope="module")
def cluster():
    """1 CPU per node, and one GPU on the head: declared, not real, so trials still compute on the CPU."""
    cluster = LocalCluster(head_args=["--num-cpus=1", "--num-gpus=1"], worker_args=["--num-cpus=1", "--num-gpus=0"])
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def two_nodes(cluster) -> LocalCluster:
    cluster.ensure_worker()
    return cluster


class Sweep:
    """`python -m kdsweep.search --address ...` as a subprocess, with its own storage and output."""

    def __init__(self, cluster: LocalCluster, tracking_uri: str, tmp_path: Path, space: dict, name: str, *extra: str):
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
            "--tracking-uri",
            tracking_uri,
            "--output-json",
            str(self.output),
            "--no-select",
            *extra,
        ]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=ray_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
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


@pytest.fixture
def sweeps():
    """Start sweeps; any still running after the test is killed."""
    started: list[Sweep] = []

    def run(*args, **kwargs) -> Sweep:
        started.append(Sweep(*args, **kwargs))
        return started[-1]

    yield run
    for sweep in started:
        sweep.kill()


def trial_runs(uri: str, experiment: str):
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([experiment_id], "tags.`kdsweep.role` = 'trial'")


def test_a_sweep_joined_by_address_runs_trials_on_both_nodes_and_logs_every_student_over_http(
    two_nodes, sweeps, mlflow_server, tmp_path
):
    import mlflow
    import torch

    sweep = sweeps(two_nodes, mlflow_server, tmp_path, SPACE, "multinode-spread")
    code, rows = sweep.finish(timeout=240)
    assert code == 0, sweep.log_tail()
    assert len(rows) == 2 and all(row["status"] == "FINISHED" for row in rows), sweep.log_tail()
    # One CPU per node and per trial: the two trials can only run at once on different nodes.
    assert {row["node_id"] for row in rows} == {two_nodes.head_node_id, two_nodes.worker_node_id}

    runs = trial_runs(mlflow_server, "multinode-spread")
    assert sorted(r.info.run_id for r in runs) == sorted(row["mlflow_run_id"] for row in rows)
    assert all(r.info.status == "FINISHED" and "kdsweep.model_uri" in r.data.tags for r in runs)
    # Served artifacts: the students were uploaded through the server, not written to a local path.
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in runs)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        student = mlflow.pytorch.load_model(runs[0].data.tags["kdsweep.model_uri"], map_location="cpu")
    finally:
        mlflow.set_tracking_uri(previous)
    assert student(torch.zeros(2, 1, 8, 8)).shape == (2, 4)


def test_a_quarter_gpu_per_trial_runs_four_trials_at_once_on_one_gpu(two_nodes, sweeps, mlflow_server, tmp_path):
    sweep = sweeps(
        two_nodes,
        mlflow_server,
        tmp_path,
        SPACE,
        "multinode-gpu",
        "--num-samples",
        "4",
        "--gpus-per-trial",
        "0.25",
        "--cpus-per-trial",
        "0.25",
    )
    code, rows = sweep.finish(timeout=240)
    assert code == 0, sweep.log_tail()
    assert len(rows) == 4 and all(row["status"] == "FINISHED" for row in rows), sweep.log_tail()
    assert {row["node_id"] for row in rows} == {two_nodes.head_node_id}  # the only node with a GPU
    # All four were running at one moment: each started before any of them had finished.
    spans = [(r[0]["timestamp"] - r[0]["time_total_s"], r[-1]["timestamp"]) for r in sweep.results().values()]
    assert len(spans) == 4 and max(start for start, _ in spans) < min(end for _, end in spans), spans


def test_killing_the_worker_node_mid_sweep_retries_its_trial_from_a_checkpoint_on_the_head(
    two_nodes, sweeps, mlflow_server, tmp_path
):
    # Small batches make epochs slow enough (~1 s) to kill the worker between its first and last report.
    epochs = 6
    space = {**SPACE, "budget": {"epochs": epochs, "num_samples": 2}, "fixed": {**SPACE["fixed"], "batch_size": 4}}
    sweep = sweeps(two_nodes, mlflow_server, tmp_path, space, "multinode-fault")

    def trial_on_worker_mid_way() -> str | None:
        if sweep.process.poll() is not None:
            pytest.fail(f"the sweep ended before the worker node was killed:\n{sweep.log_tail()}")
        for trial, results in sweep.results().items():
            if results and results[-1]["node_id"] == two_nodes.worker_node_id and results[-1]["epoch"] < epochs:
                return trial
        return None

    interrupted = wait_for(trial_on_worker_mid_way, 180, "a trial to checkpoint an epoch on the worker node")
    two_nodes.kill_worker()
    code, rows = sweep.finish(timeout=240)

    assert code == 0, sweep.log_tail()
    assert len(rows) == 2 and all(row["status"] == "FINISHED" for row in rows), sweep.log_tail()
    results = sweep.results()[interrupted]
    # Resumed after its last checkpoint, not from epoch 1: every epoch reported exactly once, in order.
    assert [r["epoch"] for r in results] == list(range(1, epochs + 1)), results
    assert results[0]["node_id"] == two_nodes.worker_node_id and results[-1]["node_id"] == two_nodes.head_node_id

    runs = trial_runs(mlflow_server, "multinode-fault")
    trial_ids = [r.data.tags["kdsweep.trial_id"] for r in runs]
    assert len(runs) == 2 and len(set(trial_ids)) == 2, trial_ids
    assert sorted(r.info.run_id for r in runs) == sorted(row["mlflow_run_id"] for row in rows)
    assert all(r.info.status == "FINISHED" and "kdsweep.model_uri" in r.data.tags for r in runs)
