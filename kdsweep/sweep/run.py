"""A sweep from start to end: check everything that can be bad input, start Ray, prepare the data and the
teacher once, track the sweep in MLflow, tune, rank, select the champion."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from ray import tune

from kdsweep.champion import Champion, select_champion
from kdsweep.config import SweepConfig, any_trial_needs_teacher
from kdsweep.data import Dataset, load_dataset
from kdsweep.errors import ConfigError
from kdsweep.leaderboard import leaderboard_rows, print_leaderboard, write_json
from kdsweep.outcome import Outcome
from kdsweep.selection import Constraints
from kdsweep.summary import summarise_sweep
from kdsweep.sweep.resources import check_resources
from kdsweep.sweep.tuner import build_tuner, experiment_path, storage_path
from kdsweep.teachers import Teacher, prepare_teacher, teacher_outputs
from kdsweep.tracking.runs import SweepTracker
from kdsweep.tracking.server import tracking_service
from kdsweep.tracking.store import QUIET_MLFLOW, display_uri, resolve_tracking_uri, use_store
from kdsweep.tracking.teacher_run import log_teacher
from kdsweep.tracking.ui import experiment_url, run_url, ui_base

# Tune's classic reporter shows only the columns we pick; a checkpoint every epoch is the point
# (resume from the last epoch), so Tune's warning about checkpoint sync time is noise. Workers of a
# cluster get these (and MLflow's quiet settings) through the job's runtime environment.
QUIET_TUNE = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}


@dataclass
class Prepared:
    """What a sweep has once its input is known to be good."""

    data: Dataset
    teacher: Teacher | None  # the teacher model, for its MLflow run; trials get its outputs
    store: str  # the MLflow store, before a private server fronts it


def start_ray(config: SweepConfig):
    import ray

    for key, value in QUIET_TUNE.items():
        os.environ.setdefault(key, value)
    if not ray.is_initialized():
        ray.init(
            address=config.run.address,
            include_dashboard=False,
            log_to_driver=True,
            runtime_env={"env_vars": {**QUIET_MLFLOW, **QUIET_TUNE}} if config.run.address else None,
        )
    return ray


def prepare(config: SweepConfig) -> Prepared:
    """Everything that can fail on bad input, before a single trial starts and before MLflow is written."""
    if not config.run.address:  # an embedded runtime gets this machine: check before starting it
        check_resources(config, {"CPU": os.cpu_count() or 1, "GPU": torch.cuda.device_count()})
    if config.run.resume and not tune.Tuner.can_restore(experiment_path(config)):
        raise ConfigError(
            "--resume", f"no sweep named '{config.experiment_name}' to resume under {storage_path(config)}"
        )
    store = resolve_tracking_uri(config.run.tracking_uri)
    use_store(store)
    ray = start_ray(config)
    check_resources(config, ray.cluster_resources())
    data = load_dataset(config.data)
    teacher = prepare_teacher(config.teacher, data) if any_trial_needs_teacher(config) else None
    return Prepared(data, teacher, store)


def run_sweep(config: SweepConfig) -> int:
    """0 when some trial finished, 1 when none did; bad input raises ConfigError before anything runs."""
    prepared = prepare(config)
    with tracking_service(prepared.store) as uri:
        return track_and_tune(config, prepared, uri)


def track_and_tune(config: SweepConfig, prepared: Prepared, uri: str) -> int:
    data, teacher = prepared.data, prepared.teacher
    tracker = SweepTracker(uri, config.experiment_name)
    tracking = tracker.start_parent(config, data, resume=config.run.resume)
    if teacher is not None:
        tracker.link_teacher(*log_teacher(uri, teacher, data))
    base, ui_command = ui_base(prepared.store)
    primary = config.objectives[0]
    sweep_link = experiment_url(base, tracking.experiment_id, primary.metric, primary.mode)
    print(
        f"sweep '{config.experiment_name}': {config.budget.num_samples} samples on {data.name}, "
        f"storage {storage_path(config)}, MLflow {display_uri(uri)} (parent run {tracking.parent_run_id})\n"
        f"MLflow UI: {sweep_link}" + (f"  (start it with: {ui_command})" if ui_command else ""),
        flush=True,
    )
    outputs = teacher_outputs(config.teacher, teacher, data, config.budget.epochs) if teacher is not None else None
    results = build_tuner(config, data, outputs, tracker, tracking).fit()
    rows = leaderboard_rows(results, config)
    print_leaderboard(rows, config)
    succeeded = any(row["status"] in (Outcome.FINISHED, Outcome.STOPPED) for row in rows)
    tracker.finish("FINISHED" if succeeded else "FAILED")
    champion, no_champion = None, "selection skipped (--no-select)" if succeeded else "no trial succeeded"
    if succeeded and config.run.select:
        champion, no_champion = choose_champion(config, uri, tracking.parent_run_id), "no finished trial with a model"
        if champion is not None:
            link = run_url(base, champion.experiment_id, champion.run_id)
            print(f"champion: {champion.run_name} -> {champion.model_uri}  {link}")
            for row in rows:
                row["champion"] = row.get("mlflow_run_id") == champion.run_id
    # The hyperparameter-importance report (its own issue) goes here: it logs its plot on the
    # parent run (summary.PLOTS names it) before the summary, which then lists it.
    summarise_sweep(uri, tracking.parent_run_id, primary.metric, primary.mode, champion, no_champion)
    print(f"the sweep in MLflow's UI: {sweep_link}")
    if config.run.output_json:
        write_json(rows, config.run.output_json)
    return 0 if succeeded else 1


def choose_champion(config: SweepConfig, uri: str, parent_run_id: str) -> Champion | None:
    """Rank the finished students by the primary objective and register the best (no constraints)."""
    primary = config.objectives[0]
    return select_champion(
        uri,
        config.experiment_name,
        parent_run_id,
        Constraints(),
        register=config.run.register_name,
        metric=primary.metric,
        mode=primary.mode,
        show_table=False,
    )
