"""What a sweep that joins a cluster (`--address`) must check: that its workers reach what the driver has.

Trials run on other machines. They reach MLflow only over the network (a sqlite file or a `file:`
store on the head is out of their reach), and they read a streamed image folder by its path, which
must therefore exist, with the same files, on every node a trial can land on; so must Tune's storage,
where they write their checkpoints, when it is a path rather than a URI.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from pathlib import Path

import ray
from mlflow.tracking import MlflowClient
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from kdsweep.config import SweepConfig
from kdsweep.data import Dataset
from kdsweep.errors import ConfigError, one_line
from kdsweep.sweep.resources import NodeType
from kdsweep.tracking.server import PROXIED

REMOTE_ARTIFACT_SCHEMES = (PROXIED.rstrip("/"), "s3:", "gs:", "wasbs:", "abfss:", "hdfs:", "http:", "https:", "dbfs:")


def tracking_host(config: SweepConfig, store: str) -> str | None:
    """Where the private MLflow server listens: None (127.0.0.1) for a sweep on this machine, the head's
    cluster address when workers on other nodes must reach it. A store they could not share is refused."""
    if not config.run.address:
        return None
    if not store.startswith(("sqlite:///", "http://", "https://", "postgresql", "mysql", "mssql", "databricks")):
        raise ConfigError(
            "--tracking-uri",
            f"{store} is a file store on this machine: trials on other nodes would write their runs to their own "
            "disks. Use the default ./mlflow.db (kdsweep serves it to the cluster) or an http(s):// tracking server",
        )
    return ray.util.get_node_ip_address() if store.startswith("sqlite:///") else None


def check_experiment_artifacts(config: SweepConfig, store: str) -> None:
    """An existing experiment whose artifacts live on a local path cannot take runs from other nodes."""
    if not config.run.address:
        return
    experiment = MlflowClient(store).get_experiment_by_name(config.experiment_name)
    if experiment is not None and not experiment.artifact_location.startswith(REMOTE_ARTIFACT_SCHEMES):
        raise ConfigError(
            "--name",
            f"experiment '{config.experiment_name}' keeps its artifacts in {experiment.artifact_location}, which "
            "trials on other nodes cannot write: give this cluster sweep another --name",
        )


def folder_fingerprint(root: str, relative_paths: list[str]) -> str:
    """These files (path, size) under `root` as one hash; OSError when one cannot be read."""
    digest = hashlib.sha256()
    for relative in relative_paths:
        digest.update(f"{relative}:{(Path(root) / relative).stat().st_size}\n".encode())
    return digest.hexdigest()


@ray.remote
def _fingerprint_on_node(root: str, relative_paths: list[str]) -> tuple[str, str, str | None]:
    """(node id, fingerprint there or "", why not)."""
    node = ray.get_runtime_context().get_node_id()
    try:
        return node, folder_fingerprint(root, relative_paths), None
    except OSError as error:
        return node, "", one_line(error)


def _on(node_type: NodeType) -> dict:
    """Ray task options that place a task on a node of this type: that node itself when it exists,
    else a task as large as the type, which only a node of that type (which the autoscaler adds) fits."""
    if node_type.node_id:
        return {"num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(node_type.node_id, soft=False)}
    return {"num_cpus": node_type.resources.get("CPU", 0), "num_gpus": node_type.resources.get("GPU", 0)}


def _trial_node_types(node_types: list[NodeType], config: SweepConfig) -> list[NodeType]:
    """The node types that can run a trial: where a trial's path must mean what it means to the driver."""
    request = {"CPU": config.resources.cpus_per_trial, "GPU": config.resources.gpus_per_trial}
    return [node for node in node_types if node.fits(request)]


def check_folder_on_nodes(data: Dataset, node_types: list[NodeType], config: SweepConfig) -> None:
    """A streamed ImageFolder is read by path: check, with a task the size of each node type that can run
    a trial (so it lands on that type, and an autoscaler adds one if needed), that its files are there."""
    if data.in_memory:
        return  # decoded once by the driver and shipped to every trial through the object store
    folders = {id(split.folder): split.folder for split in (data.train, data.val, data.test)}
    for folder in folders.values():
        relative = [str(Path(path).relative_to(folder.root)) for path, _ in folder.samples]
        expected = folder_fingerprint(folder.root, relative)  # as the driver, which loaded it, sees it
        for node_type in _trial_node_types(node_types, config):
            task = _fingerprint_on_node.options(**_on(node_type))
            node, found, problem = ray.get(task.remote(folder.root, relative))
            if found != expected:
                problem = problem or "other files (names or sizes differ)"
                raise ConfigError(
                    "data.name",
                    f"{data.name} is not the same on node {node} ({node_type.name}): {problem}. A streamed folder "
                    "is read by its path on every node: put it on storage every node mounts at that path",
                )


@ray.remote
def _read_on_node(path: str) -> tuple[str, str | None, str | None]:
    """(node id, the file's text there or None, why not)."""
    node = ray.get_runtime_context().get_node_id()
    try:
        return node, Path(path).read_text(), None
    except OSError as error:
        return node, None, one_line(error)


def check_storage_on_nodes(root: Path | None, node_types: list[NodeType], config: SweepConfig) -> None:
    """Tune's storage on a path (`root`; None for a URI such as s3://) must be ONE directory that every
    node running trials sees, or each trial fails at its first checkpoint and burns its retries: the driver
    writes a marker there, and a task on each node type that can run a trial (see `_on`) must read it back."""
    if root is None:
        return
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    marker = root / f".kdsweep-shared-{token}"
    marker.write_text(token)
    try:
        for node_type in _trial_node_types(node_types, config):
            node, seen, problem = ray.get(_read_on_node.options(**_on(node_type)).remote(str(marker)))
            if seen != token:
                raise ConfigError(
                    "--storage",
                    f"{root} is not shared with node {node} ({node_type.name}): {problem or 'another file there'}. "
                    "Trials write their checkpoints there: give a directory every node mounts at this path "
                    "(NFS, ...) or an s3:// URI",
                )
    finally:
        marker.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):  # Tune makes it again; a sweep refused leaves nothing behind
                root.rmdir()
