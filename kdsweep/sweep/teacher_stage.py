"""The teacher stage of a sweep, where the trials will run: on a GPU node when they use GPUs.

The driver (the head of a cluster, often without a GPU) only finds the teacher: a file on its own
disk, a model in MLflow, or one trained earlier for this data. Training it and computing its logit
cache run as one Ray task that asks for a GPU whenever the trials do, so the autoscaler provides one
and the head's CPUs never train a ResNet. The cache stays in Ray's object store, where the trials
read it; only the (small) teacher module comes back to the driver, to be logged and kept on disk.
"""

from __future__ import annotations

import ray

from kdsweep.config import SweepConfig
from kdsweep.data import Dataset
from kdsweep.errors import ConfigError
from kdsweep.teachers import Teacher, TeacherSpec, teacher_outputs
from kdsweep.teachers.prepare import find_teacher, keep_trained
from kdsweep.teachers.train import train_teacher
from kdsweep.trial import TeacherOutputs, pick_device


@ray.remote(num_returns=4)
def _train_and_cache(spec: TeacherSpec, teacher: Teacher | None, data: Dataset, epochs: int):
    if teacher is None:
        teacher = train_teacher(spec, data)
    outputs = teacher_outputs(spec, teacher, data, epochs)
    return teacher, outputs, ray.get_runtime_context().get_node_id(), val_accuracy(outputs, data)


def val_accuracy(outputs: TeacherOutputs, data: Dataset) -> float:
    """The teacher's validation accuracy, from the logits trials compare with: what gap_closed closes."""
    logits = outputs.eval_logits(data, "val", pick_device())
    return float((logits.argmax(1).cpu() == data.val.labels).double().mean())


def teacher_stage(config: SweepConfig, data: Dataset, data_ref: ray.ObjectRef, log=print):
    """(the Teacher, a reference to what trials read logits from, the node that computed it, the
    teacher's validation accuracy)."""
    teacher = find_teacher(config.teacher, data, log)
    gpus = 1 if config.resources.gpus_per_trial > 0 else 0
    refs = _train_and_cache.options(num_cpus=config.resources.cpus_per_trial, num_gpus=gpus).remote(
        config.teacher, teacher, data_ref, config.budget.epochs
    )
    teacher_ref, outputs_ref, node_ref, accuracy_ref = refs
    try:
        trained, node_id, accuracy = ray.get([teacher_ref, node_ref, accuracy_ref])
    except ray.exceptions.RayTaskError as error:  # bad input found on the node (e.g. pretrained weights)
        if isinstance(error.cause, ConfigError):
            raise error.cause from None
        raise
    if teacher is None:
        keep_trained(config.teacher, trained, data, log)
    log(
        f"teacher: {'trained and ' if teacher is None else ''}cached on node {node_id}{' (GPU)' if gpus else ''}, "
        f"val_accuracy {accuracy:.4f}"
    )
    outputs: ray.ObjectRef[TeacherOutputs] = outputs_ref
    return trained, outputs, node_id, accuracy
