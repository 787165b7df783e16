"""The Tuner: the trainable with its shared objects and resources, a scheduler, a searcher, a reporter."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import CheckpointConfig, CLIReporter, FailureConfig, RunConfig
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import ConcurrencyLimiter, SearchAlgorithm, Searcher

from kdsweep.config import SweepConfig
from kdsweep.feasibility import Architecture, Feasibility, describe_skipped
from kdsweep.models import ModelCost
from kdsweep.schedulers import SchedulerSettings, scheduler_entry
from kdsweep.searchers import SearchSettings, searcher_entry
from kdsweep.space import OptunaSpace, TrialTemplate, tune_param_space
from kdsweep.sweep.baselines import BASELINE, Baselines, BaselinesFirst, BaselinesRunOut, drawn_points, with_baselines
from kdsweep.sweep.callbacks import CloseRuns
from kdsweep.sweep.confirm import CONFIRMATION_KEYS, ConfirmedVariants, ConfirmLast, plan_confirmation
from kdsweep.sweep.trainable import tune_trial
from kdsweep.tracking.runs import TrackingContext

DEFAULT_STORAGE = "kdsweep_results"
REPORT_EVERY_S = 15  # the progress table; Tune's default of 5 s floods a log of a long sweep


def storage_path(config: SweepConfig) -> str:
    storage = config.run.storage or os.environ.get("KDSWEEP_STORAGE") or DEFAULT_STORAGE
    return storage if "://" in storage else str(Path(storage).resolve())


def local_storage_dir(config: SweepConfig) -> Path | None:
    """Tune's storage as a folder of the file system (a path or file://), None for a URI such as s3://."""
    storage = storage_path(config)
    if "://" in storage and not storage.startswith("file://"):
        return None
    return Path(storage.removeprefix("file://"))


def experiment_path(config: SweepConfig) -> str:
    return f"{storage_path(config).rstrip('/')}/{config.experiment_name}"


def build_tuner(
    config: SweepConfig,
    template: TrialTemplate,
    data: ray.ObjectRef,
    logit_sources: dict[str, ray.ObjectRef],
    tracking: TrackingContext,
    baselines: Baselines | None = None,
    costs: dict[Architecture, ModelCost] | None = None,
) -> tune.Tuner:
    """Every trial gets the dataset and, by teacher name, what it may read teacher logits from (TeacherOutputs),
    all already in the object store: put there once, by the driver and by the teacher stage; and its
    student's cost, from the sweep's table (kdsweep.sweep.cost_stage)."""
    trainable = tune.with_resources(
        tune.with_parameters(
            tune_trial,
            template=template,
            data=data,
            logit_sources=logit_sources,
            tracking=tracking,
            plugins=config.plugins,
            costs=costs or {},
        ),
        {"cpu": config.resources.cpus_per_trial, "gpu": config.resources.gpus_per_trial},
    )
    searcher, param_space, num_samples = _searcher(config, template, baselines, costs)
    if config.run.resume:
        return tune.Tuner.restore(
            experiment_path(config),
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            param_space=param_space,
        )
    run_config = RunConfig(
        name=config.experiment_name,
        storage_path=storage_path(config),
        failure_config=FailureConfig(max_failures=config.resources.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=1),
        progress_reporter=_reporter(config),
        callbacks=[CloseRuns(config.experiment_name)],
        verbose=1,
    )
    # A trial's worker process is reused by the next trial: a fresh one costs ~17 s of start-up and
    # imports on 2 cores (benchmarks/RESULTS.md). run_trial sets every seed, its threads and
    # determinism itself, and the rest (plugins, MLflow's settings) is the same for every trial.
    tune_config = tune.TuneConfig(
        num_samples=num_samples, scheduler=_scheduler(config), search_alg=searcher, reuse_actors=True
    )
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)


def _scheduler(config: SweepConfig) -> TrialScheduler:
    """The registered scheduler; scratch baselines are kept out of one that stops trials early."""
    entry = scheduler_entry(config.scheduler.name)
    primary = config.objectives[0]
    scheduler = entry.build(
        SchedulerSettings(
            metric=primary.metric,
            mode=primary.mode,
            max_t=config.budget.epochs,
            grace_period=config.scheduler.grace_period,
            reduction_factor=config.scheduler.reduction_factor,
        )
    )
    return BaselinesRunOut(scheduler) if entry.stops_early else scheduler


def _searcher(
    config: SweepConfig,
    template: TrialTemplate,
    baselines: Baselines | None,
    costs: dict[Architecture, ModelCost] | None = None,
) -> tuple[SearchAlgorithm | Searcher, dict[str, Any], int]:
    """(the search algorithm, Tune's param_space, Tune's num_samples): one that draws up front gets the
    trials drawn here (random/grid, baselines among them); an adaptive one (Optuna) its define-by-run
    space, and a baseline in front of each new student from `BaselinesFirst`. Either makes the confirmation
    trials once its own have ended (kdsweep.sweep.confirm), which Tune's num_samples must not count.
    With a deploy budget, no draw over it becomes a trial (kdsweep.feasibility)."""
    entry = searcher_entry(config.searcher.name)
    settings = SearchSettings(
        metrics=[o.metric for o in config.objectives],
        modes=[o.mode for o in config.objectives],
        seed=config.searcher.seed,
        max_concurrent=config.searcher.max_concurrent or 0,
    )
    confirmation = plan_confirmation(config, template, baselines)
    feasibility = Feasibility(template.trial, costs, config.deploy) if costs and config.deploy.has_budget else None
    if not entry.adaptive:
        fits = (lambda point: not feasibility.violations(point)) if feasibility else None
        draws = drawn_points(tune_param_space(config), config.budget.num_samples, config.searcher.seed, fits)
        if feasibility:
            print(describe_skipped(draws.skipped, feasibility), flush=True)
        points = draws.points
        if baselines:
            points = with_baselines(points, baselines.template, baselines.digest, set(baselines.done))
        drawn = entry.build(replace(settings, points=points))
        if confirmation:
            drawn = ConfirmedVariants(drawn, confirmation, settings.max_concurrent)
        # Keys only: every point sets its values (a domain here would make Tune check a baseline's
        # scratch values against it, and warn).
        return drawn, dict.fromkeys([*config.search, BASELINE, *CONFIRMATION_KEYS]), len(points)
    searcher = entry.build(replace(settings, define_by_run=OptunaSpace(config), feasibility=feasibility))
    num_samples = config.budget.num_samples
    if baselines:  # the searcher says when it is done: Tune's count would include the baselines
        searcher = BaselinesFirst(searcher, baselines.template, baselines.digest, set(baselines.done), num_samples)
        num_samples = -1
    if confirmation:  # and the confirmation trials
        searcher = ConfirmLast(searcher, confirmation, config.budget.num_samples)
        num_samples = -1
    if config.searcher.max_concurrent:
        searcher = ConcurrencyLimiter(searcher, max_concurrent=config.searcher.max_concurrent)
    return searcher, {}, num_samples


def _reporter(config: SweepConfig) -> CLIReporter:
    primary = config.objectives[0]
    return CLIReporter(
        # Conditional parameters are absent from some trials' configs, which the table cannot show.
        parameter_columns=[name for name, param in config.search.items() if not param.when],
        metric_columns={
            "training_iteration": "epoch",
            "val_accuracy": "val_acc",
            "val_macro_f1": "f1",
            "latency_ms": "ms",
        },
        max_report_frequency=REPORT_EVERY_S,
        sort_by_metric=True,
        metric=primary.metric,
        mode=primary.mode,
    )
