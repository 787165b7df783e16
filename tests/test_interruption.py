"""A sweep that is stopped part-way, with the default tracking store, and then resumed.

The driver runs as a user runs it (`python -m kdsweep.search`, a subprocess in its own directory, so
./mlflow.db is the default store there) against the session's Ray runtime; it is interrupted with
Ctrl-C (SIGINT) or killed (SIGKILL) while trials run, then continued with `--resume`.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import faults
import pytest
import yaml
from mlflow.tracking import MlflowClient
from processes import servers_of
from test_sweep import TINY_SPACE

pytestmark = pytest.mark.slow  # end to end: the fast loop (-m "not slow") leaves it to CI

PACE_S = 1.5  # each epoch lasts this long: the window in which the driver is interrupted
SPACE = {
    **TINY_SPACE,
    "plugins": ["faults"],
    "budget": {"epochs": 4, "num_samples": 4},
    "scheduler": {"name": "none"},
    "searcher": {"name": "random", "max_concurrent": 2, "seed": 2},
    "fixed": {**TINY_SPACE["fixed"], "student": faults.PACED},
    "search": {k: v for k, v in TINY_SPACE["search"].items() if k not in ("student", "width")},
}
TRIALS = SPACE["budget"]["num_samples"] + 1  # and the one student's scratch baseline


class Driver:
    def __init__(self, tmp_path: Path, command: list[str], log_name: str) -> None:
        self.log = tmp_path / log_name
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                command,
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0"},  # experiment state saved at every step
            )

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"the sweep did not end in {timeout:.0f}s:\n{self.log.read_text()[-5000:]}")


def start(tmp_path: Path, ray_session, name: str) -> tuple[Driver, list[str]]:
    faults.pace(PACE_S)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    args = ["--space", "space.yaml", "--name", name, "--storage", "results", "--output-json", f"{name}.json"]
    args += ["--address", ray_session.get_runtime_context().gcs_address]
    return Driver(tmp_path, [sys.executable, "-m", "kdsweep.search", *args], f"{name}.log"), args


def epochs_reported(tmp_path: Path, name: str) -> dict[str, str]:
    """Each trial's result.json (one line per reported epoch), by trial directory."""
    return {p.parent.name: p.read_text() for p in (tmp_path / "results" / name).glob("*/result.json")}


def wait_until(predicate, driver: Driver, what: str, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if driver.process.poll() is not None or time.time() > deadline:
            pytest.fail(f"never saw {what}:\n{driver.log.read_text()[-5000:]}")
        time.sleep(0.3)


def trial_runs(tmp_path: Path, name: str):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")  # the default store of the sweep's directory
    experiment = client.get_experiment_by_name(name)
    return client, client.search_runs([experiment.experiment_id], "tags.`kdsweep.role` = 'trial'")


def assert_resumed_to_the_end(tmp_path: Path, name: str, command: list[str], before: dict[str, str]) -> None:
    """--resume finishes the sweep: no finished trial rerun, one closed run per trial, every epoch logged
    once, the champion chosen over the whole sweep."""
    driver = Driver(tmp_path, command, f"{name}-resumed.log")
    assert driver.wait() == 0, driver.log.read_text()[-5000:]
    rows = json.loads((tmp_path / f"{name}.json").read_text())
    assert len(rows) == TRIALS, rows
    assert all(row["status"] == "FINISHED" for row in rows), rows
    assert [row["role"] for row in rows].count("baseline") == 1
    assert all("kd_gain" in row["metrics"] for row in rows if row["role"] == "trial")
    after = epochs_reported(tmp_path, name)
    for trial, text in before.items():
        if text.count("\n") == SPACE["budget"]["epochs"]:
            assert after[trial] == text, f"finished trial {trial} was run again"
    client, runs = trial_runs(tmp_path, name)
    assert len(runs) == TRIALS
    assert len({r.data.tags["kdsweep.trial_id"] for r in runs}) == TRIALS
    assert all(r.info.status == "FINISHED" and r.data.tags["kdsweep.outcome"] == "FINISHED" for r in runs)
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert sorted(steps) == list(range(1, SPACE["budget"]["epochs"] + 1)), (run.info.run_name, steps)
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.run_id in {r.info.run_id for r in runs}
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"


def ctrl_c_stops_the_sweep_and_closes_its_runs(tmp_path: Path, ray_session, name: str) -> list[str]:
    """Ctrl-C while two trials train: exit 130, the resume command printed, every run closed, nothing
    registered. Returns the printed resume command."""
    driver, args = start(tmp_path, ray_session, name)
    wait_until(
        lambda: sum(text.count("\n") >= 1 for text in epochs_reported(tmp_path, name).values()) >= 2,
        driver,
        "two trials reporting",
    )
    driver.process.send_signal(signal.SIGINT)
    assert driver.wait() == 130
    log = driver.log.read_text()
    resume = shlex.join(["python", "-m", "kdsweep.search", *args, "--resume"])
    assert resume in log, log[-3000:]

    rows = json.loads((tmp_path / f"{name}.json").read_text())
    interrupted = [row for row in rows if row["status"] == "INTERRUPTED"]
    assert interrupted, rows
    assert all(row["status"] in ("FINISHED", "INTERRUPTED") for row in rows), rows
    for row in interrupted:  # with their real parameters
        if row["role"] == "trial":
            assert row["config"]["loss"] in ("kd", "dkd")
            assert "temperature" in row["config"]
        else:
            assert row["config"]["alpha"] == 0
            assert "loss" not in row["config"]
    client, runs = trial_runs(tmp_path, name)
    assert runs, "no run is left RUNNING"
    assert not [r for r in runs if r.info.status == "RUNNING"], "no run is left RUNNING"
    by_trial = {r.data.tags["kdsweep.trial_id"]: r for r in runs}
    for row in interrupted:
        if row["trial_id"] in by_trial:  # one that never started has no run
            run = by_trial[row["trial_id"]]
            assert run.info.status == "KILLED"
            assert run.data.tags["kdsweep.outcome"] == "INTERRUPTED"
    assert client.search_registered_models() == [], "an interrupted sweep registers nothing"
    assert "champion" not in log
    # Nothing Tune pickled into its experiment state (which may live on shared storage) holds where
    # this invocation's tracking server listened.
    served = next(line for line in log.splitlines() if line.startswith("MLflow: ")).rsplit(" at ", 1)[1]
    state = [p for p in (tmp_path / "results" / name).iterdir() if p.is_file()]
    assert state
    assert not [p.name for p in state if served.encode() in p.read_bytes()]
    return [sys.executable, *shlex.split(resume)[1:]]


def test_a_sweep_stopped_by_ctrl_c_then_killed_mid_resume_is_finished_by_resume(ray_session, tmp_path):
    """Ctrl-C, `--resume`, the resumed driver killed (SIGKILL) part-way, `--resume` again: one sweep, both
    ways a user loses a driver, and no finished trial trained twice."""
    resume = ctrl_c_stops_the_sweep_and_closes_its_runs(tmp_path, ray_session, "stopped")
    at_stop = {trial: text.count("\n") for trial, text in epochs_reported(tmp_path, "stopped").items()}
    driver = Driver(tmp_path, resume, "stopped-killed.log")
    done = SPACE["budget"]["epochs"]

    def one_finished_one_midway_since_resumed() -> bool:
        epochs = {trial: text.count("\n") for trial, text in epochs_reported(tmp_path, "stopped").items()}
        return any(n >= done for n in epochs.values()) and any(
            at_stop.get(trial, 0) < n < done - 1 and n >= 1 for trial, n in epochs.items()
        )

    wait_until(one_finished_one_midway_since_resumed, driver, "a finished trial and one part-way")
    time.sleep(0.5)  # Tune saves its experiment state at every step (TUNE_GLOBAL_CHECKPOINT_S=0)
    driver.process.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.time() + 30  # the server gets SIGTERM when its parent dies, and shuts down
    while servers_of(tmp_path) and time.time() < deadline:
        time.sleep(0.3)
    assert servers_of(tmp_path) == [], "the killed driver's private MLflow server outlived it"
    before = epochs_reported(tmp_path, "stopped")
    assert 1 <= sum(text.count("\n") >= done for text in before.values()) < TRIALS, "the driver must be killed part-way"
    _, runs = trial_runs(tmp_path, "stopped")
    seen = [(r.info.run_name, r.info.status, r.data.metrics.get("epoch")) for r in runs]
    assert [r for r in runs if r.info.status == "RUNNING"], f"a killed driver leaves runs open: {seen}, {before}"
    assert_resumed_to_the_end(tmp_path, "stopped", resume, before)


CONFIRMED_EPOCHS = 3
CONFIRMED = {  # 2 search trials, then the best again with seeds 1, 2 and 3 (no baselines: three trials at most)
    **SPACE,
    "budget": {"epochs": CONFIRMED_EPOCHS, "num_samples": 2},
    "confirm": {"top": 1, "seeds": 4},
    "run": {"baselines": False},
}


def confirmation_epochs(tmp_path: Path, name: str) -> dict[str, int]:
    """Epochs reported by each confirmation trial (its Tune config has `confirm: true`), by trial directory."""
    counts = {}
    for trial, text in epochs_reported(tmp_path, name).items():
        lines = text.splitlines()
        if lines and json.loads(lines[0])["config"].get("confirm"):
            counts[trial] = len(lines)
    return counts


def test_a_driver_killed_while_confirming_is_finished_by_resume_without_training_a_seed_twice(ray_session, tmp_path):
    faults.pace(PACE_S)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(CONFIRMED))
    args = ["--space", "space.yaml", "--name", "confirmed", "--storage", "results", "--output-json", "confirmed.json"]
    command = [
        sys.executable,
        "-m",
        "kdsweep.search",
        *args,
        "--address",
        ray_session.get_runtime_context().gcs_address,
    ]
    driver = Driver(tmp_path, command, "confirmed.log")

    def one_confirmed_one_midway() -> bool:
        epochs = confirmation_epochs(tmp_path, "confirmed").values()
        return any(n >= CONFIRMED_EPOCHS for n in epochs) and any(1 <= n < CONFIRMED_EPOCHS for n in epochs)

    wait_until(one_confirmed_one_midway, driver, "a confirmation trial finished and another part-way")
    time.sleep(0.5)  # Tune saves its experiment state (the searcher's with it) at every step
    driver.process.send_signal(signal.SIGKILL)
    driver.wait()
    before = epochs_reported(tmp_path, "confirmed")
    resumed = Driver(tmp_path, [*command, "--resume"], "confirmed-resumed.log")
    assert resumed.wait() == 0, resumed.log.read_text()[-5000:]
    assert "confirmation: the top 1 configurations with 3 more seed(s) each" in driver.log.read_text()
    assert "confirmation:" not in resumed.log.read_text(), "chosen once, before the driver was killed"
    rows = json.loads((tmp_path / "confirmed.json").read_text())
    assert sorted(row["config"].get("seed", 0) for row in rows) == [0, 0, 1, 2, 3]
    assert all(row["status"] == "FINISHED" for row in rows), rows
    after = epochs_reported(tmp_path, "confirmed")
    assert len(after) == len(rows)
    for trial, text in before.items():
        if text.count("\n") == CONFIRMED_EPOCHS:
            assert after[trial] == text, f"finished trial {trial} was run again"
    client, runs = trial_runs(tmp_path, "confirmed")
    assert sorted(r.data.params.get("seed", "0") for r in runs) == ["0", "0", "1", "2", "3"]
    assert sorted(r.data.tags.get("kdsweep.confirmation", "") for r in runs) == ["", "", "true", "true", "true"]
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert sorted(steps) == list(range(1, CONFIRMED_EPOCHS + 1)), (run.info.run_name, steps)
