"""One Tune trial: the sampled config validated once, then the shared trial function, reporting every epoch.

Runs in a Ray worker process, possibly on another node: everything it needs arrives through
`tune.with_parameters` (the dataset, the teachers' logit sources, where to log) and the object store.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from kdsweep.data import Dataset
from kdsweep.feasibility import Architecture, architecture_of
from kdsweep.models import ModelCost, create_model
from kdsweep.plots import confusion_figure
from kdsweep.plugins import import_plugins
from kdsweep.space import TrialTemplate
from kdsweep.sweep.baselines import is_baseline, is_confirmation, run_tags, trial_config
from kdsweep.tracking.pending import FAIL_FAST
from kdsweep.tracking.runs import TrackingContext, TrialTracker
from kdsweep.tracking.store import QUIET_MLFLOW
from kdsweep.trial import TeacherOutputs, TrialConfig, pick_device, place, predict, run_trial

STATE_FILE = "state.pt"


def run_name(config: TrialConfig, trial_id: str, baseline: bool = False, confirmation: bool = False) -> str:
    """e.g. resnet8-T4.0-a0.90-kd-7f3a, resnet8-scratch-7f3a, a confirmation trial's resnet8-scratch-seed1-7f3a:
    readable in the MLflow UI, unique in the sweep."""
    student = config.student + (f"w{config.width}" if config.width else "")
    suffix = (f"seed{config.seed}-" if confirmation else "") + trial_id[-4:]
    if baseline:
        return f"{student}-scratch-{suffix}"
    return f"{student}-T{config.temperature:.1f}-a{config.alpha:.2f}-{config.loss}-{suffix}"


def tune_trial(
    sampled_config: dict[str, Any],
    template: TrialTemplate,
    data: Dataset,
    logit_sources: dict[str, ray.ObjectRef],
    tracking: TrackingContext | None,
    plugins: list[str],
    costs: dict[Architecture, ModelCost],
) -> None:
    """The Tune trainable: `sampled_config` is what the searcher drew, `template` what every trial shares,
    `costs` each student architecture's, measured once before the trials (kdsweep.sweep.cost_stage)."""
    # Quiet in every worker: one line per checkpoint per epoch, and MLflow's link after every upload.
    for name in ("ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.update({**QUIET_MLFLOW, **FAIL_FAST})  # a worker started before the command did not inherit them
    import_plugins(plugins)
    context = tune.get_context()
    cpus = max(1, int(context.get_trial_resources().required_resources.get("CPU", 1)))
    # The Tune boundary: validated here once, trusted everywhere after (the space's every extreme
    # was validated before Ray started, so a failure here is a bug, with its traceback).
    config = trial_config(template, sampled_config, num_threads=cpus)
    trial_id = context.get_trial_id()
    tracker = open_trial_run(tracking, trial_id, sampled_config, config, data, background=True) if tracking else None
    node_id = ray.get_runtime_context().get_node_id()
    resume_state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume_state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)

    def report(metrics: dict[str, float], state) -> None:
        snapshot = state()
        extra: dict[str, Any] = {"node_id": node_id}
        if tracker:
            tracker.log_epoch(metrics)
            # All before the last report: a scheduler may end the trial as soon as it sees it.
            ended_itself = metrics.get("diverged") or metrics.get("collapsed")  # no student worth shipping
            if metrics["epoch"] == config.epochs or ended_itself:
                if not ended_itself:
                    log_final_student(tracker, config, snapshot["student"], data)
                unsaved = tracker.finish()
                if unsaved:  # the tracking server stayed away: say exactly what it does not have
                    extra["tracking_unsaved"] = unsaved
            extra["mlflow_run_id"] = tracker.run_id
        with tempfile.TemporaryDirectory() as directory:
            torch.save(snapshot, Path(directory) / STATE_FILE)
            tune.report({**metrics, **extra}, checkpoint=tune.Checkpoint.from_directory(directory))

    # Only the drawn teacher's logits come to this process, and none to a trial that does not distil.
    logit_source: TeacherOutputs | None = ray.get(logit_sources[config.teacher]) if config.needs_teacher else None
    try:
        cost = costs.get(architecture_of(config))
        run_trial(config, data, logit_source=logit_source, report=report, resume_state=resume_state, cost=cost)
    finally:  # a crashed trial's calls must not go on beside its retry's (Tune may reuse this process)
        if tracker:
            tracker.pending.close()


def open_trial_run(
    tracking: TrackingContext,
    trial_id: str,
    sampled_config: dict[str, Any],
    config: TrialConfig,
    data: Dataset,
    background: bool = False,
) -> TrialTracker:
    """The trial's MLflow run (found by its trial id, else created with its parameters; a baseline's
    tagged as such). `background`: for the trial itself, whose training never waits for MLflow (the
    driver's repairs wait)."""
    params = {**config.model_dump(exclude_unset=True), "data": data.spec.model_dump()}
    tags = run_tags(sampled_config, config, data.digest)
    name = run_name(config, trial_id, is_baseline(sampled_config), is_confirmation(sampled_config))
    return TrialTracker(tracking, trial_id, name, params, data, tags=tags, background=background)


def log_final_student(tracker: TrialTracker, config: TrialConfig, weights: dict, data: Dataset) -> None:
    """The finished student as an MLflow model, with its validation confusion matrix."""
    student = create_model(config.student, data.num_classes, data.in_channels, data.image_size, config.width)
    student.load_state_dict(weights)
    logits, labels = predict(place(student, pick_device()), data, "val")
    figure = confusion_figure(labels.cpu().numpy(), logits.argmax(1).cpu().numpy(), data.num_classes)
    tracker.log_student(student, data, figure)
