"""The cluster path as users run it: a sweep joins a cluster whose GPU workers do not exist yet.

Ray's own autoscaler (its fake_multinode provider: real autoscaling, local processes for nodes, GPUs
declared) runs cluster.yaml's node types, read from the file so that the two cannot drift apart: a
head without GPUs and a GPU worker type with `min_workers: 0`. The sweep is run as a user runs it on
the head: `python -m kdsweep.search --address ... --gpus-per-trial 0.5` with the default tracking
store (./mlflow.db), which workers on other nodes could not write to a file.
"""

from __future__ import annotations

import mlflow
import pytest
import torch
import yaml
from clusters import CLUSTER_YAML, AutoscalingCluster, alive_nodes
from mlflow.tracking import MlflowClient

from kdsweep.tracking.server import open_store

pytestmark = [pytest.mark.multinode, pytest.mark.slow]

SPACE = {
    "data": {"name": "synthetic", "channels": 1, "image_size": 8, "num_classes": 4, "num_samples": 400},
    "teacher": {"arch": "small_cnn", "epochs": 1},
    "budget": {"epochs": 2, "num_samples": 3},
    "confirm": {"top": 0},
    "scheduler": {"name": "none"},
    "searcher": {"name": "random", "seed": 3},
    "resources": {"cpus_per_trial": 0.5, "max_failures": 1},
    "fixed": {"batch_size": 32, "lr": 0.05, "student": "small_cnn", "stop_at_chance": False},
    "search": {"width": {"choice": [4, 8]}, "temperature": {"uniform": [2.0, 6.0]}},
}


@pytest.fixture(scope="module")
def autoscaling():
    cluster = AutoscalingCluster(worker_cpus=1, max_workers=2)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_the_test_cluster_has_the_node_types_of_cluster_yaml(autoscaling):
    source = yaml.safe_load(CLUSTER_YAML.read_text())
    config = yaml.safe_load(autoscaling.config_file.read_text())
    workers = {name for name in source["available_node_types"] if name != source["head_node_type"]}
    assert workers
    assert workers <= set(config["available_node_types"])
    for name in workers:
        assert config["available_node_types"][name]["resources"]["GPU"] == source["available_node_types"][name][
            "resources"
        ].get("GPU")
        assert config["available_node_types"][name]["min_workers"] == 0


def test_a_sweep_gets_gpu_workers_from_the_autoscaler_and_tracks_every_trial_in_the_default_store(
    autoscaling, sweeps, tmp_path
):
    before = autoscaling.nodes()
    assert len(before) == 1, "the cluster starts with its head alone"
    assert not before[0]["Resources"].get("GPU"), "the cluster starts with its head alone"

    sweep = sweeps(autoscaling, None, tmp_path, SPACE, "autoscaled", "--gpus-per-trial", "0.5", select=True)
    code, rows = sweep.finish(timeout=480)
    assert code == 0, sweep.log_tail()

    nodes = alive_nodes(autoscaling.address, dead_too=True)
    gpu_nodes = {n["NodeID"] for n in nodes if n["Resources"].get("GPU")}
    assert gpu_nodes, "the autoscaler added GPU workers"
    assert autoscaling.head_node_id not in gpu_nodes, "the autoscaler added GPU workers"
    assert len(rows) == 3, sweep.log_tail()
    assert all(row["status"] == "FINISHED" for row in rows), sweep.log_tail()
    assert {row["node_id"] for row in rows} <= gpu_nodes, "every trial ran on a GPU worker"

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")  # the default store, in the sweep's directory
    experiment = client.get_experiment_by_name("autoscaled")
    parent = client.search_runs([experiment.experiment_id], "tags.`kdsweep.role` = 'parent'")[0]
    assert parent.data.tags["kdsweep.teacher_node_id"] in gpu_nodes, "the teacher was prepared on a GPU node"
    runs = client.search_runs([experiment.experiment_id], "tags.`kdsweep.role` = 'trial'")
    assert sorted(r.info.run_id for r in runs) == sorted(row["mlflow_run_id"] for row in rows)
    assert all(r.info.status == "FINISHED" and "kdsweep.model_uri" in r.data.tags for r in runs)
    # Served on the head's cluster address (not 127.0.0.1, which is every node's own), and the students
    # uploaded through it: a worker's disk is out of the driver's reach.
    served = next(line for line in sweep.log.read_text().splitlines() if line.startswith("MLflow: "))
    assert "http://127.0.0.1" not in served, served
    assert autoscaling.address.split(":")[0] in served, served
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in runs)
    assert len(list((tmp_path / "mlartifacts").rglob("MLmodel"))) >= len(runs)
    champion = client.get_model_version_by_alias("autoscaled", "champion")
    assert champion.run_id in {row["mlflow_run_id"] for row in rows}
    assert "champion:" in sweep.log_tail()
    # Afterwards, on the head, the champion loads from the same default store (served again, locally).
    with open_store(f"sqlite:///{tmp_path / 'mlflow.db'}", log=lambda _: None):
        student = mlflow.pytorch.load_model("models:/autoscaled@champion", map_location="cpu")
    assert student(torch.zeros(2, 1, 8, 8)).shape == (2, 4)
