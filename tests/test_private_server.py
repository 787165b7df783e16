"""The sweep's own MLflow server (what the default store, ./mlflow.db, gets) dies mid-sweep, as the OOM
killer would end it: the sweep restarts it, the trials train on, and the record loses nothing.

The driver runs as a user runs it (`python -m kdsweep.search` in its own directory, against the
session's Ray runtime); the test finds the server through /proc and kills it with SIGKILL: the server
with its uvicorn worker, or only the `mlflow server` parent (whose worker no death signal reaches).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import faults
import pytest
import yaml
from processes import holding, listening_on, parent_of, running, servers_of
from test_interruption import PACE_S, SPACE, Driver, epochs_reported, trial_runs, wait_until

pytestmark = pytest.mark.slow

EPOCHS = 14  # long enough for two deaths and two restarts mid-sweep
RESTARTED = "MLflow: the private server was killed (SIGKILL); restarted it on the same store"


def start(tmp_path: Path, ray_session, name: str) -> Driver:
    faults.pace(PACE_S)
    space = {**SPACE, "budget": {"epochs": EPOCHS, "num_samples": 2}}  # and the student's scratch baseline
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    args = ["--space", "space.yaml", "--name", name, "--storage", "results", "--output-json", f"{name}.json"]
    args += ["--address", ray_session.get_runtime_context().gcs_address]
    return Driver(tmp_path, [sys.executable, "-m", "kdsweep.search", *args], f"{name}.log")


def server_mid_sweep(tmp_path: Path, driver: Driver, name: str) -> tuple[int, int, str]:
    """Once two trials report: the private server's pid, its uvicorn worker's, and its URL."""
    wait_until(
        lambda: sum(text.count("\n") >= 1 for text in epochs_reported(tmp_path, name).values()) >= 2,
        driver,
        "two trials reporting",
    )
    pids = servers_of(tmp_path)
    (server,) = [pid for pid in pids if parent_of(pid) not in pids]
    (worker,) = [pid for pid in pids if parent_of(pid) == server]
    served = next(line for line in driver.log.read_text().splitlines() if " served at " in line)
    return server, worker, served.rsplit(" ", 1)[1]


def port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def wait_gone(pids: list[int], what: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while [pid for pid in pids if running(pid)] and time.time() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if running(pid)], what


def assert_nothing_lost(tmp_path: Path, name: str, driver: Driver) -> None:
    """Exit 0; every trial FINISHED in the leaderboard and in MLflow, one run each, every epoch logged once,
    its model there; a champion chosen; no process of the store left, none holding its database."""
    assert driver.wait() == 0, driver.log.read_text()[-5000:]
    rows = json.loads((tmp_path / f"{name}.json").read_text())
    assert len(rows) == 3, rows
    assert all(row["status"] == "FINISHED" and not row["not_in_mlflow"] for row in rows), rows
    client, runs = trial_runs(tmp_path, name)
    assert sorted(r.data.tags["kdsweep.trial_id"] for r in runs) == sorted(row["trial_id"] for row in rows)
    for run in runs:
        assert run.info.status == "FINISHED", run.info.run_name
        assert run.data.tags["kdsweep.outcome"] == "FINISHED", run.info.run_name
        assert "kdsweep.model_uri" in run.data.tags, run.info.run_name
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy"))
        assert steps == list(range(1, EPOCHS + 1)), (run.info.run_name, steps)
    assert client.get_run(runs[0].data.tags["mlflow.parentRunId"]).info.status == "FINISHED"
    assert client.get_model_version_by_alias(name, "champion").run_id in {r.info.run_id for r in runs}
    assert servers_of(tmp_path) == []
    assert holding(tmp_path / "mlflow.db") == []


def restarts(driver: Driver) -> int:
    return driver.log.read_text().count(RESTARTED)


def test_a_killed_private_server_is_restarted_twice_and_the_sweep_loses_nothing(ray_session, tmp_path):
    """One sweep, two deaths: first only the `mlflow server` parent (its worker, orphaned, would go on
    serving the port and the database), restarted on the same port; then the server and its worker
    while another program takes the port, restarted on a new one that the trials follow."""
    driver = start(tmp_path, ray_session, "killed")
    server, worker, url = server_mid_sweep(tmp_path, driver, "killed")
    os.kill(server, signal.SIGKILL)

    wait_gone([worker], "the killed server's worker outlived it")
    wait_until(lambda: restarts(driver) == 1, driver, "the server restarted")
    assert f"same store and port ({url})" in driver.log.read_text()

    pids = servers_of(tmp_path)
    (server,) = [pid for pid in pids if parent_of(pid) not in pids]
    (worker,) = [pid for pid in pids if parent_of(pid) == server]
    # Another program takes the port between the server's death and its restart: the server is
    # frozen (a frozen server is neither dead nor, for a minute, hung), its worker killed, the port
    # taken, and only then is the server killed.
    os.kill(server, signal.SIGSTOP)
    try:
        os.kill(worker, signal.SIGKILL)
        wait_gone([worker], "the worker did not die")
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((url.removeprefix("http://").rsplit(":", 1)[0], port(url)))
        squatter.listen()
    finally:
        os.kill(server, signal.SIGKILL)
    with squatter:
        wait_until(lambda: restarts(driver) == 2, driver, "the server restarted on another port")
        assert_nothing_lost(tmp_path, "killed", driver)
        log = driver.log.read_text()
        assert restarts(driver) == 2, log[-5000:]
        assert "its port was taken; trials follow it there" in log, log[-5000:]
    (moved,) = [line for line in log.splitlines() if "its port was taken" in line]
    new_url = moved.split(" at ", 1)[1].split(" ", 1)[0]
    assert new_url != url
    assert listening_on(port(url)) == []
    assert listening_on(port(new_url)) == []
