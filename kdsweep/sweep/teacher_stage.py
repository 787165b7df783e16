"""The teacher stage of a sweep, where the trials will run: on a GPU node when they use GPUs.

The driver (the head of a cluster, often without a GPU) only finds the teacher: a file on its own
disk, a model in MLflow, or one trained earlier for this data. Training it and computing its logit
cache run as one Ray task that asks for a GPU whenever the trials do, so the autoscaler provides one
and the head's CPUs never train a ResNet. The cache stays in Ray's object store, where the trials
read it; only the (small) teacher module comes back to the driver, to be logged and kept on disk.
"""

from __future__ import annotations

from dataclasses import dataclass

import ray

from kdsweep.config import SweepConfig
from kdsweep.data import Dataset
from kdsweep.errors import ConfigError
from kdsweep.sweep.object_store import describe_cut, node_object_store_bytes, plan_view_epochs
from kdsweep.teachers import Teacher, TeacherSpec, teacher_outputs
from kdsweep.teachers.cache import cache_size
from kdsweep.teachers.from_mlflow import MLFLOW_SCHEMES
from kdsweep.teachers.prepare import find_teacher, keep_trained
from kdsweep.teachers.train import train_teacher
from kdsweep.trial import TeacherOutputs, pick_device


@ray.remote(num_returns=4)
def _train_and_cache(spec: TeacherSpec, teacher: Teacher | None, data: Dataset, epochs: int):
    if teacher is None:
        teacher = train_teacher(spec, data)
    logit_source = teacher_outputs(spec, teacher, data, epochs)
    return teacher, logit_source, ray.get_runtime_context().get_node_id(), val_accuracy(logit_source, data)


def val_accuracy(logit_source: TeacherOutputs, data: Dataset) -> float:
    """The teacher's validation accuracy, from the logits trials compare with: what gap_closed closes."""
    logits = logit_source.eval_logits(data, "val", pick_device())
    return float((logits.argmax(1).cpu() == data.val.labels).double().mean())


@dataclass(frozen=True)
class StagedTeacher:
    """One teacher of the sweep, ready: the model (for its MLflow run), what trials read its logits from
    (in the object store), the node that computed them, and its validation accuracy (what gap_closed closes)."""

    teacher: Teacher
    logit_source: ray.ObjectRef  # a TeacherOutputs
    node_id: str
    val_accuracy: float


def find_teachers(config: SweepConfig, data: Dataset, in_store: bool, log=print) -> dict[str, Teacher | None]:
    """The sweep's teachers that exist already (None: to be trained), by name: those named by a file or
    cached on disk (`in_store` False: checked before MLflow's store and Ray are touched, so that a bad
    file is one line of bad input), or those in the MLflow store (`in_store` True)."""
    return {
        teacher_name: find_teacher(spec, data, log)
        for teacher_name, spec in config.teacher_specs.items()
        if (spec.checkpoint or "").startswith(MLFLOW_SCHEMES) == in_store
    }


def plan_caches(config: SweepConfig, data: Dataset, capacity: int, log=print) -> dict[str, int]:
    """The epochs of views each teacher caches, by name: the sweep's, or fewer (one line logged) where a
    node's object store of `capacity` bytes cannot hold the data and every cache; bad input where it
    cannot hold even one view epoch of each. Checked before any teacher trains."""
    sizes = {
        name: cache_size(data, config.budget.epochs, spec.cache_limit_mb)
        for name, spec in config.teacher_specs.items()
        if spec.mode == "cached" and data.in_memory
    }
    sizes = {name: size for name, size in sizes.items() if size.view_epochs >= 1}  # the others run online
    planned = plan_view_epochs(data.nbytes, sizes, capacity)
    line = describe_cut(data.nbytes, sizes, planned, capacity)
    if line:
        log(line)
    return {name: planned.get(name, config.budget.epochs) for name in config.teacher_specs}


def teacher_stage(
    config: SweepConfig, data: Dataset, data_ref: ray.ObjectRef, found: dict[str, Teacher | None], log=print
) -> dict[str, StagedTeacher]:
    """Every teacher of the sweep, by name: each `found` (see `find_teachers`) or trained once, its logits
    cached once, all of them at the same time (one task each, on a GPU when the trials use GPUs)."""
    gpus = 1 if config.resources.gpus_per_trial > 0 else 0
    epochs = plan_caches(config, data, node_object_store_bytes(ray), log)
    refs = {}
    for teacher_name, spec in config.teacher_specs.items():
        refs[teacher_name] = _train_and_cache.options(num_cpus=config.resources.cpus_per_trial, num_gpus=gpus).remote(
            spec, found[teacher_name], data_ref, epochs[teacher_name]
        )
    staged = {}
    for teacher_name, (teacher_ref, logit_source_ref, node_ref, accuracy_ref) in refs.items():
        try:
            trained, node_id, teacher_accuracy = ray.get([teacher_ref, node_ref, accuracy_ref])
        except ray.exceptions.RayTaskError as error:  # bad input found on the node (e.g. pretrained weights)
            if isinstance(error.cause, ConfigError):
                raise error.cause from None
            raise
        spec = config.teacher_specs[teacher_name]
        if found[teacher_name] is None:
            keep_trained(spec, trained, data, log)
        what = f"teacher {teacher_name}" if config.teachers else "teacher"
        log(
            f"{what}: {'trained and ' if found[teacher_name] is None else ''}cached on node {node_id}"
            f"{' (GPU)' if gpus else ''}, val_accuracy {teacher_accuracy:.4f}"
        )
        staged[teacher_name] = StagedTeacher(trained, logit_source_ref, node_id, teacher_accuracy)
    return staged
