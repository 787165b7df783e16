"""The teacher's own run in `kdsweep-teachers`: made once per teacher file, linked from every sweep."""

from __future__ import annotations

import hashlib
import time

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from kdsweep.models import cpu_latency_ms, measure_cost
from kdsweep.tracking.datasets import log_dataset
from kdsweep.tracking.models import log_model
from kdsweep.tracking.runs import (
    REFERENCE_METRICS,
    TAG_ROLE,
    TAG_TEACHER_KEY,
    TEACHERS_EXPERIMENT,
    experiment_id,
    tag_equals,
)


def log_teacher(uri: str, teacher, data) -> tuple[str, dict[str, float]]:
    """The teacher's own run (training curve, test accuracy, size, latency, model), made once per
    teacher; returns its run id and the reference metrics students are compared with."""
    client = MlflowClient(uri)
    teachers_experiment = experiment_id(client, TEACHERS_EXPERIMENT)
    origin = teacher.source.split(":", 1)[-1]  # the teacher file: one run per file, however often reused
    if origin.startswith(("models:/", "runs:/")):  # already in MLflow: link to the run that logged it
        return source_run_id(client, origin), {"test_accuracy": teacher.meta.test_accuracy}
    # The file's path, hashed: a path may hold any character, a hash is safe in a search filter.
    key = hashlib.sha256(origin.encode()).hexdigest()
    found = client.search_runs([teachers_experiment], tag_equals(TAG_TEACHER_KEY, key), max_results=1)
    if found:
        reference = {k: found[0].data.metrics[k] for k in REFERENCE_METRICS if k in found[0].data.metrics}
        return found[0].info.run_id, reference
    if teacher.form == "pytorch":
        cost = measure_cost(teacher.module, data.input_shape)
        costs = {"params": cost.params, "flops": cost.flops, "latency_ms": cost.latency_ms}
    else:  # another runtime's file: torch cannot count inside it, but it can time it
        costs = {"latency_ms": cpu_latency_ms(teacher.module, data.input_shape)}
    run = client.create_run(
        teachers_experiment,
        tags={TAG_ROLE: "teacher", TAG_TEACHER_KEY: key, "source": teacher.source},
        run_name=f"teacher-{teacher.meta.arch}-{teacher.meta.dataset}",
    )
    run_id = run.info.run_id
    log_dataset(client, run_id, data)
    now = int(time.time() * 1000)
    metrics = [
        Metric(k, float(v), now, int(m["epoch"]))
        for m in (teacher.history or [])
        for k, v in m.items()
        if k in ("train_loss", "val_accuracy", "val_loss")
    ]
    metrics += [Metric(k, float(v), now, 0) for k, v in {"test_accuracy": teacher.meta.test_accuracy, **costs}.items()]
    params = [Param(k, str(v)) for k, v in teacher.meta.model_dump().items()]
    client.log_batch(run_id, metrics=metrics, params=params)
    if teacher.form == "pytorch":
        log_model(uri, run_id, teacher.module, data)
    else:  # the file itself: what taught, as the user brought it
        client.log_artifact(run_id, origin, "teacher")
    client.set_terminated(run_id)
    reference = {"test_accuracy": teacher.meta.test_accuracy, **costs}
    return run_id, {k: v for k, v in reference.items() if k in REFERENCE_METRICS}


def source_run_id(client: MlflowClient, model_uri: str) -> str:
    """The run that logged a model: runs:/ID/..., models:/NAME@ALIAS, models:/NAME/VERSION, models:/m-ID."""
    if model_uri.startswith("runs:/"):
        return model_uri.removeprefix("runs:/").split("/", 1)[0]
    reference = model_uri.removeprefix("models:/")
    if "@" in reference:
        name, alias = reference.split("@", 1)
        return client.get_model_version_by_alias(name, alias).run_id
    if "/" in reference:
        name, version = reference.split("/", 1)
        return client.get_model_version(name, version).run_id
    return client.get_logged_model(reference).source_run_id
