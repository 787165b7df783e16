"""A real two-node Ray cluster on this machine: a head and a worker, each its own `ray start` process.

The sweep driver joins it with --address as a subprocess (the pytest process never connects to Ray,
so it cannot clash with the session's own runtime), writes Tune results to a local directory that
both nodes see (standing in for shared storage) and tracks students in a real `mlflow server`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from clusters import LocalCluster, wait_for
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.multinode, pytest.mark.slow]

SPACE = {
    "data": {"name": "synthetic", "channels": 1, "image_size": 8, "num_classes": 4, "num_samples": 2000},
    "teacher": {"arch": "small_cnn", "epochs": 1},
    "budget": {"epochs": 2, "num_samples": 2},
    "confirm": {"top": 0},
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
    assert len(rows) == 2, sweep.log_tail()
    assert all(row["status"] == "FINISHED" for row in rows), sweep.log_tail()
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
    assert len(rows) == 4, sweep.log_tail()
    assert all(row["status"] == "FINISHED" for row in rows), sweep.log_tail()
    assert {row["node_id"] for row in rows} == {two_nodes.head_node_id}  # the only node with a GPU
    # All four were running at one moment: each started before any of them had finished.
    spans = [(r[0]["timestamp"] - r[0]["time_total_s"], r[-1]["timestamp"]) for r in sweep.results().values()]
    assert len(spans) == 4, spans
    assert max(start for start, _ in spans) < min(end for _, end in spans), spans


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
    assert len(rows) == 2, sweep.log_tail()
    assert all(row["status"] == "FINISHED" for row in rows), sweep.log_tail()
    results = sweep.results()[interrupted]
    # Resumed after its last checkpoint, not from epoch 1: every epoch reported exactly once, in order.
    assert [r["epoch"] for r in results] == list(range(1, epochs + 1)), results
    assert results[0]["node_id"] == two_nodes.worker_node_id
    assert results[-1]["node_id"] == two_nodes.head_node_id

    runs = trial_runs(mlflow_server, "multinode-fault")
    trial_ids = [r.data.tags["kdsweep.trial_id"] for r in runs]
    assert len(runs) == 2, trial_ids
    assert len(set(trial_ids)) == 2, trial_ids
    assert sorted(r.info.run_id for r in runs) == sorted(row["mlflow_run_id"] for row in rows)
    assert all(r.info.status == "FINISHED" and "kdsweep.model_uri" in r.data.tags for r in runs)


def refused_beside_a_blind_node(two_nodes, sweeps, mlflow_server, tmp_path, hidden: Path, space: dict, name: str):
    """A sweep run while a third node sees an empty folder at `hidden`, as a node of another machine would:
    it exits 2 before any trial. (Its one error line, the blind node's id.)"""
    blind = two_nodes.start_worker("blind", ["--num-cpus=1", "--num-gpus=0"], hidden=[hidden])
    try:
        sweep = sweeps(two_nodes, mlflow_server, tmp_path, space, name)
        code, _rows = sweep.finish(timeout=240)
    finally:
        two_nodes.kill_role("blind")
    assert code == 2, sweep.log_tail()
    return next(line for line in sweep.log.read_text().splitlines() if line.startswith("error: ")), blind


def test_a_streamed_folder_that_a_node_cannot_read_is_refused_before_any_trial(
    two_nodes, sweeps, mlflow_server, tmp_path
):
    from PIL import Image

    root = tmp_path / "pets"
    for split in ("train", "test"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(4):
                Image.new("L", (8, 8), color=i * 40).save(root / split / label / f"{i}.png")
    # A third node that does not see the folder, as a node of another machine would not.
    data = {"name": str(root), "image_size": 8, "memory_limit_mb": 0, "num_workers": 0, "val_fraction": 0.25}
    run = (two_nodes, sweeps, mlflow_server, tmp_path)
    error, blind = refused_beside_a_blind_node(*run, root, {**SPACE, "data": data}, "multinode-folder")
    assert error.startswith(f"error: data.name: {root} is not the same on node {blind}"), error
    assert "No such file or directory" in error
    assert not (tmp_path / "results").exists()


def test_a_storage_path_that_a_node_does_not_share_is_refused_before_any_trial(
    two_nodes, sweeps, mlflow_server, tmp_path
):
    storage = tmp_path / "results"  # where Sweep puts Tune's storage
    storage.mkdir()
    # A third node that sees another directory at that path, as a node of another machine would.
    run = (two_nodes, sweeps, mlflow_server, tmp_path)
    error, blind = refused_beside_a_blind_node(*run, storage, SPACE, "multinode-storage")
    assert error.startswith(f"error: --storage: {storage} is not shared with node {blind}"), error
    assert "No such file or directory" in error
    assert list(storage.iterdir()) == []
    assert MlflowClient(mlflow_server).get_experiment_by_name("multinode-storage") is None
