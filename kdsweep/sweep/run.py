"""A sweep from start to end: check everything that can be bad input, start Ray, prepare the data and the
teacher once, track the sweep in MLflow, tune, rank, select the champion."""

from __future__ import annotations

import os
from dataclasses import dataclass

import ray
from ray import tune
from ray.tune import ExperimentAnalysis

from kdsweep.champion import Champion, select_champion
from kdsweep.config import SweepConfig, any_trial_needs_teacher
from kdsweep.data import Dataset, load_dataset
from kdsweep.disk import check_writable_dir
from kdsweep.errors import ConfigError, one_line
from kdsweep.importance import report_importance
from kdsweep.leaderboard import leaderboard_rows, print_leaderboard, write_json
from kdsweep.outcome import Outcome
from kdsweep.selection import Constraints
from kdsweep.space import trial_template
from kdsweep.summary import summarise_sweep
from kdsweep.sweep.baselines import compare_with_baselines
from kdsweep.sweep.callbacks import RunCloser
from kdsweep.sweep.cluster import check_experiment_artifacts, check_folder_on_nodes, tracking_host
from kdsweep.sweep.resources import check_resources, cluster_node_types, this_machine
from kdsweep.sweep.teacher_stage import StagedTeacher, find_teachers, teacher_stage
from kdsweep.sweep.tuner import Baselines, build_tuner, experiment_path, storage_path
from kdsweep.tracking.pending import FAIL_FAST
from kdsweep.tracking.runs import SweepTracker
from kdsweep.tracking.server import MlflowServer, launch_private_server, tracking_service
from kdsweep.tracking.store import QUIET_MLFLOW, display_uri, resolve_tracking_uri, use_store
from kdsweep.tracking.teacher_run import log_teacher
from kdsweep.tracking.ui import experiment_url, run_url, ui_base

# Tune's classic reporter shows only the columns we pick; a checkpoint every epoch is the point
# (resume from the last epoch), so Tune's warning about checkpoint sync time is noise. Workers of a
# cluster get these (and MLflow's quiet settings) through the job's runtime environment.
EXIT_INTERRUPTED = 130  # what shells expect of a program stopped by Ctrl-C (128 + SIGINT)
QUIET_TUNE = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}


@dataclass
class Prepared:
    """What a sweep has once its input is known to be good."""

    data: Dataset
    data_ref: ray.ObjectRef  # the dataset in the object store, decoded once, shared by every trial
    teachers: dict[str, StagedTeacher]  # by name; none when no trial distils
    store: str  # the MLflow store, before a private server fronts it
    tracking_host: str | None  # where that server listens (None: 127.0.0.1)
    server: MlflowServer | None  # that server, launched and starting up (None: the store is a server)


def start_ray(config: SweepConfig):
    for key, value in {**QUIET_TUNE, **FAIL_FAST}.items():  # the driver's MLflow calls, too, must not block Tune
        os.environ.setdefault(key, value)
    if not ray.is_initialized():
        ray.init(
            address=config.run.address,
            include_dashboard=False,
            log_to_driver=True,
            runtime_env={"env_vars": {**QUIET_MLFLOW, **QUIET_TUNE, **FAIL_FAST}} if config.run.address else None,
        )


def prepare(config: SweepConfig) -> Prepared:
    """Everything that can fail on bad input, before a single trial starts and before MLflow is written."""
    if not config.run.address:  # an embedded runtime gets this machine: check before starting it
        check_resources(config, this_machine())
    if config.run.resume and not tune.Tuner.can_restore(experiment_path(config)):
        raise ConfigError(
            "--resume", f"no sweep named '{config.experiment_name}' to resume under {storage_path(config)}"
        )
    check_storage(config)
    data = load_dataset(config.data)
    check_data_workers(config, data)
    distils = any_trial_needs_teacher(config)
    found = find_teachers(config, data, in_store=False) if distils else {}
    store = resolve_tracking_uri(config.run.tracking_uri)
    use_store(store)
    check_experiment_artifacts(config, store)
    found |= find_teachers(config, data, in_store=True) if distils else {}
    # A sweep on this machine launches its private MLflow server now, so that the server's start-up
    # (seconds: Python, MLflow, gunicorn) overlaps Ray's; a cluster's must listen on the head's address.
    server = None if config.run.address else launch_private_server(store)
    try:
        start_ray(config)
        host = tracking_host(config, store)
        node_types = cluster_node_types(ray)
        check_resources(config, node_types)
        if config.run.address:
            check_folder_on_nodes(data, node_types, config)
        data_ref = ray.put(data)
        teachers = teacher_stage(config, data, data_ref, found) if distils else {}
    except BaseException:
        if server is not None:
            server.discard()
        raise
    return Prepared(data, data_ref, teachers, store, host, server)


def check_storage(config: SweepConfig) -> None:
    """Tune's storage on a disk of this machine (not a URI such as s3://) takes writes and has room."""
    storage = storage_path(config)
    if "://" not in storage or storage.startswith("file://"):
        check_writable_dir("--storage", storage.removeprefix("file://"), "the sweep's results")


def check_data_workers(config: SweepConfig, data: Dataset) -> None:
    """A streamed folder is decoded by data.num_workers processes per trial, on the CPUs the trial owns."""
    if not data.in_memory and data.spec.num_workers > config.resources.cpus_per_trial:
        raise ConfigError(
            "data.num_workers",
            f"{data.spec.num_workers} loader processes per trial, but a trial has {config.resources.cpus_per_trial:g} "
            "CPUs (resources.cpus_per_trial): lower it, or give trials more CPUs",
        )


def run_sweep(config: SweepConfig, resume_command: str = "") -> int:
    """0 when some trial finished, 1 when none did, 130 when interrupted (Ctrl-C: `resume_command` is
    printed); bad input raises ConfigError before anything runs."""
    prepared = prepare(config)
    with tracking_service(prepared.store, prepared.tracking_host, server=prepared.server) as uri:
        return track_and_tune(config, prepared, uri, resume_command)


def track_and_tune(config: SweepConfig, prepared: Prepared, uri: str, resume_command: str = "") -> int:
    data, teachers = prepared.data, prepared.teachers
    tracker = SweepTracker(uri, config.experiment_name)
    tracking = tracker.start_parent(config, data, resume=config.run.resume)
    for name, staged in teachers.items():
        teacher_run_id, reference = log_teacher(uri, staged.teacher, data)
        reference["val_accuracy"] = staged.val_accuracy  # what gap_closed closes
        tracker.link_teacher(teacher_run_id, reference, staged.node_id, name if config.teachers else None)
    base, ui_command = ui_base(prepared.store)
    primary = config.objectives[0]
    sweep_link = experiment_url(base, tracking.experiment_id, primary.metric, primary.mode)
    print(
        f"sweep '{config.experiment_name}': {config.budget.num_samples} samples on {data.name}, "
        f"storage {storage_path(config)}, MLflow {display_uri(uri)} (parent run {tracking.parent_run_id})\n"
        f"MLflow UI: {sweep_link}" + (f"  (start it with: {ui_command})" if ui_command else ""),
        flush=True,
    )
    baselines, earlier = None, {}
    if config.run.baselines and teachers:  # without a teacher, every trial is scratch
        earlier = tracker.finished_baselines()
        baselines = Baselines(data.digest, frozenset(earlier))
    closer = RunCloser(tracker, tracking, config, data)
    closer.register(config.experiment_name)  # what Tune's restored callbacks close runs with
    outputs = {name: staged.outputs for name, staged in teachers.items()}
    build_tuner(config, prepared.data_ref, outputs, tracking, baselines).fit()
    # The trials as Tune last saved them: on Ctrl-C it saves the running ones as RUNNING (what --resume
    # continues) before it stops them, so a status other than TERMINATED or ERROR means interrupted.
    analysis = ExperimentAnalysis(experiment_path(config))
    lacking = closer.reconcile(analysis.trials, analysis.trial_dataframes)
    uri = tracker.server.current()  # a private server restarted on another port answers there
    rows = leaderboard_rows(analysis.trials, config, lacking)
    if baselines:
        accuracy = {name: staged.val_accuracy for name, staged in teachers.items()}
        frames, resolution = analysis.trial_dataframes, 1 / len(data.val)
        compare_with_baselines(
            rows, analysis.trials, frames, trial_template(config), data.digest, earlier, accuracy, resolution
        )
    print_leaderboard(rows, config)
    if config.run.output_json:
        write_json(rows, config.run.output_json)
    if any(row["status"] == Outcome.INTERRUPTED for row in rows):
        _finish(tracker, "KILLED")
        print(f"\ninterrupted: nothing was selected or registered. Continue the sweep with:\n  {resume_command}")
        return EXIT_INTERRUPTED
    if lacking:  # the tracking server stayed away: selection would read an incomplete record
        print(
            f"\nMLflow ({display_uri(uri)}) stayed unreachable: it lacks what {len(lacking)} trial(s) recorded "
            "(rows marked 'not in MLflow'); nothing was selected or registered. Once it is back, this stores "
            f"what it lacks from the sweep's own record, trains nothing again, and selects:\n  {resume_command}"
        )
        return 1
    for row in rows:
        if "kd_gain" in row["metrics"] and row.get("mlflow_run_id"):
            gap = row["metrics"].get("gap_closed")
            tracker.log_gains(row["mlflow_run_id"], row["metrics"]["kd_gain"], gap, row["vs_scratch"]["epoch"])
    # A sweep of which only scratch baselines succeeded distilled nothing.
    succeeded = any(row["role"] == "trial" and row["status"] in (Outcome.FINISHED, Outcome.STOPPED) for row in rows)
    _finish(tracker, "FINISHED" if succeeded else "FAILED")
    champion, no_champion = None, "selection skipped (--no-select)" if succeeded else "no trial succeeded"
    if succeeded and config.run.select:
        champion, no_champion = choose_champion(config, uri, tracking.parent_run_id), "no finished trial with a model"
        if champion is not None:
            link = run_url(base, champion.experiment_id, champion.run_id)
            print(f"champion: {champion.run_name} -> {champion.model_uri}  {link}")
            for row in rows:
                row["champion"] = row.get("mlflow_run_id") == champion.run_id
    report_importance(rows, config, uri, tracking.parent_run_id)  # its plot before the summary, which lists it
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


def _finish(tracker: SweepTracker, status: str) -> None:
    """The parent run's status; a server that went away is named, not a traceback."""
    try:
        tracker.finish(status)
    except Exception as error:
        print(f"MLflow: could not mark the sweep's run {status} ({one_line(error)})")
