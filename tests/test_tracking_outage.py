"""The tracking server goes away mid-sweep. Trials train on; what they logged arrives when it is back,
and when it does not come back in time, the leaderboard says exactly what MLflow lacks.

A real `mlflow server` (sqlite) that the test stops and starts again on the same port and database;
the sweep runs as a user runs it, `python -m kdsweep.search --tracking-uri http://...`.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import faults
import pytest
import yaml
from mlflow.tracking import MlflowClient
from test_interruption import PACE_S, Driver, epochs_reported, wait_until
from test_sweep import TINY_SPACE

from kdsweep.tracking.server import MlflowServer, free_port

pytestmark = pytest.mark.slow  # end to end: the fast loop (-m "not slow") leaves it to CI

EPOCHS = 5
SPACE = {
    **TINY_SPACE,
    "plugins": ["faults"],
    "budget": {"epochs": EPOCHS, "num_samples": 2},
    "scheduler": {"name": "none"},
    "searcher": {"name": "random", "max_concurrent": 2, "seed": 4},
    "fixed": {**TINY_SPACE["fixed"], "student": faults.PACED},
    "search": {"width": {"choice": [4, 8]}, "temperature": {"uniform": [2.0, 6.0]}},
}


class Server:
    """One tracking store, served on one port by a server process that can be stopped and started again."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: MlflowServer | None = None

    def start(self) -> None:
        backend = f"sqlite:///{self.root / 'mlflow.db'}"
        self.process = MlflowServer(backend, self.root / "artifacts", self.root / "server.log", port=self.port)
        self.process.wait_ready()

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture
def server(tmp_path):
    server = Server(tmp_path)
    server.start()
    yield server
    server.stop()


def sweep(tmp_path: Path, ray_session, server: Server, name: str, *extra: str) -> Driver:
    faults.pace(PACE_S)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    args = ["--space", "space.yaml", "--name", name, "--storage", "results", "--output-json", f"{name}.json"]
    args += ["--address", ray_session.get_runtime_context().gcs_address, "--tracking-uri", server.uri, *extra]
    args.append("--no-baselines")  # two trials training side by side, nothing else
    return Driver(tmp_path, [sys.executable, "-m", "kdsweep.search", *args], f"{name}.log")


def reported(tmp_path: Path, name: str) -> list[int]:
    """Epochs each trial has reported to Tune so far."""
    return [text.count("\n") for text in epochs_reported(tmp_path, name).values()]


def test_what_trials_log_while_the_server_is_away_arrives_when_it_is_back(ray_session, server, tmp_path):
    driver = sweep(tmp_path, ray_session, server, "outage")
    wait_until(
        lambda: len(reported(tmp_path, "outage")) == 2 and min(reported(tmp_path, "outage")) >= 1,
        driver,
        "both trials reporting",
    )
    server.stop()
    during = reported(tmp_path, "outage")
    wait_until(lambda: sum(reported(tmp_path, "outage")) >= sum(during) + 2, driver, "trials training on, unlogged")
    server.start()
    assert driver.wait() == 0, driver.log.read_text()[-5000:]

    log = driver.log.read_text()
    assert "MLflow: could not store" in log
    assert "MLflow: reachable again" in log
    rows = json.loads((tmp_path / "outage.json").read_text())
    assert len(rows) == 2
    assert all(row["status"] == "FINISHED" and not row["not_in_mlflow"] for row in rows)
    client = MlflowClient(server.uri)
    runs = client.search_runs([client.get_experiment_by_name("outage").experiment_id], "tags.`kdsweep.role` = 'trial'")
    assert len(runs) == 2
    assert all(r.info.status == "FINISHED" and "kdsweep.model_uri" in r.data.tags for r in runs)
    for run in runs:  # every epoch arrived, once
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy"))
        assert steps == list(range(1, EPOCHS + 1)), (run.info.run_name, steps)
    assert client.get_model_version_by_alias("outage", "champion").run_id in {r.info.run_id for r in runs}


def test_a_server_that_stays_away_is_named_in_the_leaderboard_and_stored_later_by_the_printed_command(
    ray_session, server, tmp_path
):
    driver = sweep(tmp_path, ray_session, server, "gone", "--set", "run.tracking_patience_s=2")
    wait_until(
        lambda: len(reported(tmp_path, "gone")) == 2 and min(reported(tmp_path, "gone")) >= 1,
        driver,
        "both trials reporting",
    )
    server.stop()
    started = time.time()
    assert driver.wait() == 1, driver.log.read_text()[-5000:]
    log = driver.log.read_text()
    assert "stayed unreachable" in log
    assert "nothing was selected or registered" in log
    rows = json.loads((tmp_path / "gone.json").read_text())
    assert len(rows) == 2, rows
    assert all(row["status"] == "FINISHED" for row in rows), rows
    for row in rows:
        assert f"{EPOCHS}" in row["not_in_mlflow"], row
        assert "the student model" in row["not_in_mlflow"], row
        assert "its final status" in row["not_in_mlflow"]
    assert time.time() - started < 240, "the patience bounds how long the sweep waits for the server"
    server.start()  # what did arrive is consistent: runs with the epochs logged before the outage
    client = MlflowClient(server.uri)
    runs = client.search_runs([client.get_experiment_by_name("gone").experiment_id], "tags.`kdsweep.role` = 'trial'")
    for run in runs:
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy"))
        assert steps == list(range(1, len(steps) + 1))
        assert len(steps) < EPOCHS

    # The command it printed stores the rest from the sweep's own record, trains nothing again, and selects.
    before = epochs_reported(tmp_path, "gone")
    replay = shlex.split(log.rstrip().splitlines()[-1])
    assert replay[:3] == ["python", "-m", "kdsweep.search"], log[-3000:]
    assert replay[-1] == "--resume", log[-3000:]
    driver = Driver(tmp_path, [sys.executable, *replay[1:]], "gone-replayed.log")
    assert driver.wait() == 0, driver.log.read_text()[-5000:]
    assert epochs_reported(tmp_path, "gone") == before
    runs = client.search_runs([client.get_experiment_by_name("gone").experiment_id], "tags.`kdsweep.role` = 'trial'")
    assert len(runs) == 2
    assert all(r.info.status == "FINISHED" and "kdsweep.model_uri" in r.data.tags for r in runs)
    for run in runs:
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy"))
        assert steps == list(range(1, EPOCHS + 1)), (run.info.run_name, steps)
    assert client.get_model_version_by_alias("gone", "champion").run_id in {r.info.run_id for r in runs}


def _finished_with_a_checkpoint_torch_cannot_read(sampled: dict) -> None:
    """A trainable that ends its one epoch with a checkpoint torch cannot load (as one saved from a GPU, read
    without map_location on a CPU-only head, could not be)."""
    import tempfile

    from ray import tune

    from kdsweep.sweep.trainable import STATE_FILE

    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / STATE_FILE).write_bytes(b"not a checkpoint this machine can load")
        tune.report({"epoch": 1, "val_accuracy": 0.5}, checkpoint=tune.Checkpoint.from_directory(directory))


def test_an_unreadable_checkpoint_is_said_at_once_not_retried_as_mlflow_being_away(
    ray_session, mlflow_server, tmp_path
):
    """The driver's repair of a run without its model reads the student from the trial's last checkpoint:
    a torch/pickle error there is no tracking outage, so it must not wait out the patience and end as
    'MLflow stayed unreachable'."""
    from ray import tune
    from ray.tune import ExperimentAnalysis
    from test_sweep import write_space

    from kdsweep.config import load_config
    from kdsweep.data import load_dataset
    from kdsweep.space import trial_template, tune_param_space
    from kdsweep.sweep.callbacks import RunCloser
    from kdsweep.tracking.runs import SweepTracker

    space = {**TINY_SPACE, "budget": {"epochs": 1, "num_samples": 1}, "scheduler": {"name": "none"}}
    config = load_config(write_space(tmp_path, space), ["run.tracking_patience_s=30", "run.name=unreadable"])
    run_config = tune.RunConfig(storage_path=str(tmp_path / "results"), name="unreadable", verbose=0)
    tune.Tuner(
        _finished_with_a_checkpoint_torch_cannot_read, param_space=tune_param_space(config), run_config=run_config
    ).fit()
    analysis = ExperimentAnalysis(str(tmp_path / "results" / "unreadable"))
    data = load_dataset(config.data)
    tracker = SweepTracker(mlflow_server, "unreadable")
    said: list[str] = []
    context = tracker.start_parent(config, data, resume=False)
    closer = RunCloser(tracker, context, trial_template(config), config.budget.epochs, data, log=said.append)

    started = time.monotonic()
    lacking = closer.reconcile(analysis.trials, analysis.trial_dataframes)
    assert time.monotonic() - started < 15, said
    assert lacking == {}, said
    (trial,) = analysis.trials
    assert [line for line in said if "checkpoint cannot be read" in line and trial.trial_id in line], said
    assert not [line for line in said if line.startswith("MLflow: could not store")], said
    (run,) = MlflowClient(mlflow_server).search_runs([tracker.experiment_id], "tags.`kdsweep.role` = 'trial'")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["val_accuracy"] == 0.5
