"""A sweep from start to end: check everything that can be bad input, start Ray, prepare the data and the
teacher once, track the sweep in MLflow, tune, rank, select the champion."""

from __future__ import annotations

import os
from dataclasses import dataclass

import ray
from ray import tune
from ray.tune import ExperimentAnalysis

from kdsweep.champion import Champion, select_champion
from kdsweep.config import SweepConfig, any_trial_needs_teacher, pretrained_students
from kdsweep.data import Dataset, load_dataset
from kdsweep.disk import check_writable_dir
from kdsweep.errors import ConfigError, one_line
from kdsweep.feasibility import check_some_fit, violations
from kdsweep.importance import report_importance
from kdsweep.leaderboard import Row, add_seed_stats, print_leaderboard, write_json
from kdsweep.models import PretrainedUnavailable, pretrained_state
from kdsweep.outcome import Outcome
from kdsweep.selection import Constraints, at_precision
from kdsweep.space import TrialTemplate, trial_template
from kdsweep.summary import summarise_sweep
from kdsweep.sweep.baselines import Baselines, compare_with_baselines, log_gains, plan_baselines
from kdsweep.sweep.callbacks import RunCloser
from kdsweep.sweep.cluster import (
    check_experiment_artifacts,
    check_folder_on_nodes,
    check_storage_on_nodes,
    tracking_host,
)
from kdsweep.sweep.cost_stage import CostTable, cache_latencies, cached_latencies, cost_stage, measures_cost
from kdsweep.sweep.int8_stage import measure_int8
from kdsweep.sweep.resources import check_resources, cluster_node_types, this_machine
from kdsweep.sweep.rows import leaderboard_rows
from kdsweep.sweep.teacher_stage import StagedTeacher, find_teachers, teacher_stage
from kdsweep.sweep.tuner import build_tuner, experiment_path, local_storage_dir, storage_path
from kdsweep.tracking.pending import FAIL_FAST
from kdsweep.tracking.runs import SweepTracker, TrackingContext
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
    staged_teachers: dict[str, StagedTeacher]  # by teacher name; none when no trial distils
    store: str  # the MLflow store, before a private server fronts it
    tracking_host: str | None  # where that server listens (None: 127.0.0.1)
    server: MlflowServer | None  # that server, launched and starting up (None: the store is a server)
    costs: CostTable | None = None  # each student architecture's cost (None: no budget, no trial reports cost)


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
    check_pretrained_students(config)
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
            check_storage_on_nodes(local_storage_dir(config), node_types, config)
        costs = check_budget(config, data, store) if measures_cost(config) else None  # before any teacher trains
        data_ref = ray.put(data)
        staged_teachers = teacher_stage(config, data, data_ref, found) if distils else {}
    except BaseException:
        if server is not None:
            server.discard()
        raise
    return Prepared(data, data_ref, staged_teachers, store, host, server, costs)


def check_budget(config: SweepConfig, data: Dataset, store: str) -> CostTable:
    """Each student architecture's cost, measured (or read from the experiment's cache) while nothing else of
    the sweep runs; a budget no student of the space meets is bad input."""
    table = cost_stage(config, data, cached_latencies(store, config.experiment_name))
    print(table.describe(config.deploy), flush=True)
    if config.deploy.has_budget:
        check_some_fit(table.costs, config.deploy)
        for arch, cost in table.costs.items():
            if violations(cost, config.deploy):
                print(f"infeasible, never trained: {arch.name} ({', '.join(violations(cost, config.deploy))})")
    return table


def check_storage(config: SweepConfig) -> None:
    """Tune's storage on a disk of this machine (not a URI such as s3://) takes writes and has room."""
    folder = local_storage_dir(config)
    if folder is not None:
        check_writable_dir("--storage", str(folder), "the sweep's results")


def check_pretrained_students(config: SweepConfig) -> None:
    """Students that start from pretrained weights get them now, before Ray starts: fetched once into the
    cache their trials read on this machine; weights that do not exist or cannot be fetched are bad input."""
    for field, student, weights in pretrained_students(config):
        try:
            pretrained_state(student, weights)
        except PretrainedUnavailable as error:
            raise ConfigError(field, str(error)) from None


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
    """The sweep once its input is known to be good, against the tracking server at `uri`."""
    # What every trial shares, built once: the tuner, trials, run closer and rows read Tune configs with it.
    template = trial_template(config)
    tracked = start_tracking(config, prepared, uri)
    print_header(config, prepared, tracked)
    # Without a teacher, every trial is scratch: nothing to compare with.
    enabled = bool(config.run.baselines and prepared.staged_teachers)
    baselines = plan_baselines(enabled, template, tracked.tracker, prepared.data.digest)
    closer = run_trials(config, template, prepared, tracked, baselines)
    analysis, lacking = read_results(config, closer)
    rows = ranked_rows(config, template, prepared, analysis, lacking, closer.run_ids, baselines)
    measure_int8(config, tracked.uri, tracked.context.parent_run_id, prepared.data, rows, lacking)
    show_rows(config, rows, len(prepared.data.val))
    stopped = stopped_before_selection(tracked, rows, lacking, resume_command)
    if stopped is not None:
        return stopped
    log_gains(tracked.tracker, rows)
    # A sweep of which only scratch baselines succeeded distilled nothing.
    succeeded = any(row.role == "trial" and row.status in (Outcome.FINISHED, Outcome.STOPPED) for row in rows)
    _finish(tracked.tracker, "FINISHED" if succeeded else "FAILED")
    champion, no_champion = select_and_mark(config, tracked, rows, succeeded)
    report(config, tracked, rows, champion, no_champion)
    return 0 if succeeded else 1


@dataclass(frozen=True)
class Tracked:
    """The sweep in MLflow: its parent run, what trials find it with, and where it is in the UI."""

    tracker: SweepTracker
    context: TrackingContext
    ui_base: str  # where a browser finds MLflow's UI
    ui_command: str | None  # what starts that UI, when no server serves it
    sweep_link: str  # the sweep's runs, best first

    @property
    def uri(self) -> str:
        """Where the tracking server answers now (a private server restarted on another port answers there)."""
        return self.tracker.server.current()


def start_tracking(config: SweepConfig, prepared: Prepared, uri: str) -> Tracked:
    """The sweep's parent run (reused by --resume), linked to each teacher's own run."""
    tracker = SweepTracker(uri, config.experiment_name)
    context = tracker.start_parent(config, prepared.data, resume=config.run.resume)
    if prepared.costs is not None:
        cache_latencies(tracker.client, tracker.experiment_id, prepared.costs.measured)
        if config.deploy.has_budget and not config.run.resume:  # a resumed sweep logged them when it started
            for arch, cost in prepared.costs.costs.items():
                why = violations(cost, config.deploy)
                if why:
                    tracker.log_infeasible(arch.student, arch.width, cost.metrics(), why)
    for teacher_name, staged in prepared.staged_teachers.items():
        teacher_run_id, reference = log_teacher(uri, staged.teacher, prepared.data)
        reference["val_accuracy"] = staged.val_accuracy  # what gap_closed closes
        tracker.link_teacher(teacher_run_id, reference, staged.node_id, teacher_name if config.teachers else None)
    base, ui_command = ui_base(prepared.store)
    primary = config.objectives[0]
    return Tracked(
        tracker, context, base, ui_command, experiment_url(base, context.experiment_id, primary.metric, primary.mode)
    )


def print_header(config: SweepConfig, prepared: Prepared, tracked: Tracked) -> None:
    mlflow, parent = display_uri(tracked.uri), tracked.context.parent_run_id
    print(
        f"sweep '{config.experiment_name}': {config.budget.num_samples} samples on {prepared.data.name}, "
        f"storage {storage_path(config)}, MLflow {mlflow} (parent run {parent})\n"
        f"MLflow UI: {tracked.sweep_link}" + (f"  (start it with: {tracked.ui_command})" if tracked.ui_command else ""),
        flush=True,
    )


def run_trials(
    config: SweepConfig, template: TrialTemplate, prepared: Prepared, tracked: Tracked, baselines: Baselines | None
) -> RunCloser:
    """Run the trials; the returned closer has closed their MLflow runs as Tune ended them."""
    closer = RunCloser(tracked.tracker, tracked.context, template, config.budget.epochs, prepared.data)
    closer.register(config.experiment_name)  # what Tune's restored callbacks close runs with
    logit_sources = {teacher_name: staged.logit_source for teacher_name, staged in prepared.staged_teachers.items()}
    costs = prepared.costs.costs if prepared.costs else None
    build_tuner(config, template, prepared.data_ref, logit_sources, tracked.context, baselines, costs).fit()
    return closer


def read_results(config: SweepConfig, closer: RunCloser) -> tuple[ExperimentAnalysis, dict[str, str]]:
    """The trials as Tune last saved them, and what MLflow still lacks of them (by trial id) once every
    run has been repaired. On Ctrl-C Tune saves the running trials as RUNNING (what --resume continues)
    before it stops them, so a status other than TERMINATED or ERROR means interrupted."""
    analysis = ExperimentAnalysis(experiment_path(config))
    return analysis, closer.reconcile(analysis.trials, analysis.trial_dataframes)


def ranked_rows(
    config: SweepConfig,
    template: TrialTemplate,
    prepared: Prepared,
    analysis: ExperimentAnalysis,
    lacking: dict[str, str],
    run_ids: dict[str, str],
    baselines: Baselines | None,
) -> list[Row]:
    """One row per trial, best first; each distillation trial compared with its scratch baseline, each row
    with its configuration's figures over seeds."""
    rows = leaderboard_rows(analysis.trials, template, config, lacking, run_ids)
    if baselines:
        staged_teachers = prepared.staged_teachers.items()
        teacher_accuracies = {teacher_name: staged.val_accuracy for teacher_name, staged in staged_teachers}
        frames, resolution = analysis.trial_dataframes, 1 / len(prepared.data.val)
        compare_with_baselines(rows, analysis.trials, frames, baselines, teacher_accuracies, resolution)
    return add_seed_stats(rows, config.objectives[0].metric)


def show_rows(config: SweepConfig, rows: list[Row], val_size: int) -> None:
    print_leaderboard(rows, config, val_size)
    if config.run.output_json:
        write_json(rows, config.run.output_json)


def stopped_before_selection(
    tracked: Tracked, rows: list[Row], lacking: dict[str, str], resume_command: str
) -> int | None:
    """The exit code of a sweep that must not select (interrupted, or MLflow lacks part of it); None otherwise."""
    if any(row.status == Outcome.INTERRUPTED for row in rows):
        _finish(tracked.tracker, "KILLED")
        print(f"\ninterrupted: nothing was selected or registered. Continue the sweep with:\n  {resume_command}")
        return EXIT_INTERRUPTED
    if lacking:  # the tracking server stayed away: selection would read an incomplete record
        print(
            f"\nMLflow ({display_uri(tracked.uri)}) stayed unreachable: it lacks what {len(lacking)} trial(s) recorded "
            "(rows marked 'not in MLflow'); nothing was selected or registered. Once it is back, this stores "
            f"what it lacks from the sweep's own record, trains nothing again, and selects:\n  {resume_command}"
        )
        return 1
    return None


def select_and_mark(
    config: SweepConfig, tracked: Tracked, rows: list[Row], succeeded: bool
) -> tuple[Champion | None, str]:
    """The champion, registered and marked in the rows (when the sweep selects one), or why there is none."""
    if not succeeded:
        return None, "no trial succeeded"
    if not config.run.select:
        return None, "selection skipped (--no-select)"
    champion = choose_champion(config, tracked.uri, tracked.context.parent_run_id)
    if champion is not None:
        link = run_url(tracked.ui_base, champion.experiment_id, champion.run_id)
        print(f"champion: {champion.run_name} -> {champion.model_uri}  {link}")
        for row in rows:
            row.champion = row.mlflow_run_id == champion.run_id
    return champion, "no finished trial with a model"


def report(config: SweepConfig, tracked: Tracked, rows: list[Row], champion: Champion | None, no_champion: str) -> None:
    """What mattered, the summary on the parent run, the link to it; the rows again, champion marked."""
    parent_run_id, primary = tracked.context.parent_run_id, config.objectives[0]
    report_importance(rows, config, tracked.uri, parent_run_id)  # its plot before the summary, which lists it
    ranked_by = at_precision(primary.metric, config.deploy.precision)  # what selection ranked by
    summarise_sweep(tracked.uri, parent_run_id, ranked_by, primary.mode, champion, no_champion)
    print(f"the sweep in MLflow's UI: {tracked.sweep_link}")
    if config.run.output_json:
        write_json(rows, config.run.output_json)


def choose_champion(config: SweepConfig, uri: str, parent_run_id: str) -> Champion | None:
    """Rank the configurations by the primary objective (at deploy.precision) and register the best within
    the deploy budget's latency and size (scratch students compete unless run.distilled_only)."""
    primary, deploy = config.objectives[0], config.deploy
    return select_champion(
        uri,
        config.experiment_name,
        parent_run_id,
        Constraints(max_latency_ms=deploy.max_latency_ms, max_params=deploy.max_params),
        register=config.run.register_name,
        metric=primary.metric,
        mode=primary.mode,
        show_table=False,
        distilled_only=config.run.distilled_only,
        precision=config.deploy.precision,
    )


def _finish(tracker: SweepTracker, status: str) -> None:
    """The parent run's status; a server that went away is named, not a traceback."""
    try:
        tracker.finish(status)
    except Exception as error:
        print(f"MLflow: could not mark the sweep's run {status} ({one_line(error)})")
