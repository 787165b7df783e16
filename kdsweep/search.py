"""`python -m kdsweep.search`: a search space -> Ray Tune trials of the one distill function -> a leaderboard.

With no arguments it runs search_spaces/default.yaml (digits, CPU, a few minutes) on an embedded
Ray runtime. The dataset is decoded and the teacher prepared once, on the driver, and both reach
every trial through Ray's object store (`tune.with_parameters`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic reporter shows only the columns we pick
# A checkpoint every epoch is the point (resume from the last epoch): Tune's warning about it is noise,
# and so is MLflow's link line after every model upload (this module is imported in every trial too).
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

import torch  # noqa: E402
from ray import tune  # noqa: E402

from kdsweep.config import SweepConfig, any_trial_needs_teacher, load_config  # noqa: E402
from kdsweep.data import load_dataset  # noqa: E402
from kdsweep.distill import pick_device, predict, run_trial  # noqa: E402
from kdsweep.errors import ConfigError  # noqa: E402
from kdsweep.models import create_model  # noqa: E402
from kdsweep.leaderboard import leaderboard_rows, print_leaderboard, write_json  # noqa: E402
from kdsweep.space import OptunaSpace, sampled, tune_param_space  # noqa: E402
from kdsweep.select import Constraints, select_champion  # noqa: E402
from kdsweep.teacher import TeacherLogitCache, prepare_teacher, teacher_for_trials  # noqa: E402
from kdsweep.tracking import (  # noqa: E402
    SweepTracker,
    TrackingContext,
    TrialTracker,
    confusion_figure,
    display_uri,
    log_teacher,
    resolve_tracking_uri,
    tracking_service,
    use_store,
)

STATE_FILE = "state.pt"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m kdsweep.search",
        description="Run a knowledge-distillation sweep on Ray Tune (default: search_spaces/default.yaml).",
    )
    p.add_argument("--space", default=None, help="search-space YAML (default: search_spaces/default.yaml)")
    p.add_argument("--dataset", default=None, help="override data.name: a registered dataset or an ImageFolder dir")
    p.add_argument("--num-samples", type=int, default=None, help="override budget.num_samples (trials to sample)")
    p.add_argument("--max-concurrent", type=int, default=None, help="override searcher.max_concurrent")
    p.add_argument("--cpus-per-trial", type=float, default=None, help="override resources.cpus_per_trial")
    p.add_argument("--gpus-per-trial", type=float, default=None, help="fractions share a GPU, e.g. 0.25 = 4 per GPU")
    p.add_argument("--address", default=None, help="join a running Ray cluster ('auto' on a `ray up` head node)")
    p.add_argument("--storage", default=None, help="Tune storage path or URI (shared storage for multi-node)")
    p.add_argument("--name", default=None, help="experiment name (default: the space file's name)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep of that name")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any field, e.g. budget.epochs=4")
    p.add_argument("--output-json", default=None, help="write one row per trial (config, metrics, status, MLflow run) here")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    p.add_argument("--register", default=None, help="register the champion under this model name (default: the experiment name)")
    p.add_argument("--no-select", action="store_true", help="skip choosing and registering a champion at the end")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    if args.num_samples is not None and args.num_samples <= 0:
        raise ConfigError("--num-samples", "must be a positive number of trials")
    return load_config(
        args.space,
        args.set,
        **{
            "data.name": args.dataset,
            "budget.num_samples": args.num_samples,
            "searcher.max_concurrent": args.max_concurrent,
            "resources.cpus_per_trial": args.cpus_per_trial,
            "resources.gpus_per_trial": args.gpus_per_trial,
            "run.address": args.address,
            "run.storage": args.storage,
            "run.name": args.name,
            "run.output_json": args.output_json,
            "run.resume": True if args.resume else None,
            "run.tracking_uri": args.tracking_uri,
            "run.register_name": args.register,
            "run.select": False if args.no_select else None,
        },
    )


def storage_path(config: SweepConfig) -> str:
    storage = config.run.storage or os.environ.get("KDSWEEP_STORAGE") or "kdsweep_results"
    return storage if "://" in storage else str(Path(storage).resolve())


def experiment_path(config: SweepConfig) -> str:
    return f"{storage_path(config).rstrip('/')}/{config.experiment_name}"


# ---------------------------------------------------------------- the Tune trial


def run_name(config: dict[str, Any], trial_id: str) -> str:
    """e.g. resnet8-T4.0-a0.90-7f3a: readable in the MLflow UI, unique within the sweep."""
    student = config.get("student", "student") + (f"w{config['width']}" if config.get("width") else "")
    return f"{student}-T{config.get('temperature', 0):.1f}-a{config.get('alpha', 0):.2f}-{config.get('loss', 'kd')}-{trial_id[-4:]}"


def tune_trial(config: dict[str, Any], base: dict[str, Any], data, teacher, tracking: TrackingContext | None) -> None:
    """One Tune trial: the shared distill function, reporting every epoch with a checkpoint."""
    import ray

    for name in ("ray.tune", "ray.train"):  # one line per checkpoint per epoch is noise in the driver's log
        logging.getLogger(name).setLevel(logging.WARNING)
    context = tune.get_context()
    trial_config = {**base, **sampled(config)}
    trial_config["num_threads"] = max(1, int(context.get_trial_resources().required_resources.get("CPU", 1)))
    trial_id = context.get_trial_id()
    tracker = TrialTracker(tracking, trial_id, run_name(trial_config, trial_id), trial_config) if tracking else None
    node_id = ray.get_runtime_context().get_node_id()
    checkpoint = tune.get_checkpoint()
    resume_state = None
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume_state = torch.load(Path(directory) / STATE_FILE, weights_only=True)

    def report(metrics: dict[str, float], state) -> None:
        snapshot = state()
        if tracker:
            tracker.log_epoch(metrics)
            # Before the last report: a scheduler may end the trial as soon as it sees it.
            if metrics["epoch"] == trial_config["epochs"] and not metrics.get("diverged"):
                log_final_student(tracker, trial_config, snapshot["student"], data)
        extra = {"node_id": node_id, "mlflow_run_id": tracker.run_id if tracker else None}
        with tempfile.TemporaryDirectory() as directory:
            torch.save(snapshot, Path(directory) / STATE_FILE)
            tune.report({**metrics, **extra}, checkpoint=tune.Checkpoint.from_directory(directory))

    run_trial(trial_config, report=report, teacher=teacher, data=data, resume_state=resume_state)


def log_final_student(tracker: TrialTracker, trial_config: dict[str, Any], weights: dict, data) -> None:
    student = create_model(trial_config["student"], data.num_classes, data.in_channels, data.image_size, trial_config.get("width"))
    student.load_state_dict(weights)
    logits, labels = predict(student, data, "val", pick_device())
    figure = confusion_figure(labels.cpu().numpy(), logits.argmax(1).cpu().numpy(), data.num_classes)
    tracker.log_student(student, data, figure)


class CloseRuns(tune.Callback):
    """Tune tells only the driver how a trial ended: close its MLflow run with that status."""

    def __init__(self, tracker: SweepTracker, epochs: int) -> None:
        self.tracker, self.epochs = tracker, epochs

    def _run_id(self, trial) -> str | None:
        return (trial.last_result or {}).get("mlflow_run_id") or self.tracker.run_for_trial(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        run_id = self._run_id(trial)
        if run_id:
            last = trial.last_result or {}
            done = last.get("epoch", 0) >= self.epochs or last.get("diverged")
            self.tracker.close_trial(run_id, "FINISHED" if done else "KILLED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        run_id = self._run_id(trial)
        if run_id:
            error_file = trial.error_file
            error = Path(error_file).read_text().strip().splitlines()[-1] if error_file and Path(error_file).exists() else "error"
            self.tracker.close_trial(run_id, "FAILED", error)


# ---------------------------------------------------------------- Ray and the Tuner


def start_ray(config: SweepConfig):
    import ray

    if not ray.is_initialized():
        ray.init(address=config.run.address, include_dashboard=False, log_to_driver=True,
                 runtime_env={"env_vars": {"RAY_AIR_NEW_OUTPUT": "0"}} if config.run.address else None)
    return ray


def check_resources(config: SweepConfig, cluster: dict[str, float]) -> None:
    """Refuse trials the cluster can never place, instead of letting Tune wait for ever."""
    cpus, gpus = cluster.get("CPU", 0), cluster.get("GPU", 0)
    if config.resources.cpus_per_trial > cpus:
        raise ConfigError("resources.cpus_per_trial", f"{config.resources.cpus_per_trial} but the cluster has {cpus:g} CPUs")
    if config.resources.gpus_per_trial > gpus:
        raise ConfigError("resources.gpus_per_trial", f"{config.resources.gpus_per_trial} but the cluster has {gpus:g} GPUs")


def trial_base(config: SweepConfig, teacher) -> dict[str, Any]:
    """The fixed part of every trial; with a logit cache, the trials' views repeat as the cache's do."""
    base = config.trial_base()
    if isinstance(teacher, TeacherLogitCache):
        base["view_epochs"] = teacher.view_epochs
    return base


def build_tuner(config: SweepConfig, data, teacher, tracker: SweepTracker, tracking: TrackingContext) -> tune.Tuner:
    """`teacher` is what trials read logits from: the module (online), the logit cache, or None."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator

    primary = config.objectives[0]
    trainable = tune.with_resources(
        tune.with_parameters(tune_trial, base=trial_base(config, teacher), data=data, teacher=teacher, tracking=tracking),
        {"cpu": config.resources.cpus_per_trial, "gpu": config.resources.gpus_per_trial},
    )
    if config.scheduler.name == "asha":
        scheduler = ASHAScheduler(
            metric=primary.metric, mode=primary.mode, max_t=config.budget.epochs,
            grace_period=config.scheduler.grace_period, reduction_factor=config.scheduler.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    if config.searcher.name == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        metrics = [o.metric for o in config.objectives]
        modes = [o.mode for o in config.objectives]
        searcher = OptunaSearch(
            space=OptunaSpace(config),
            metric=metrics if len(metrics) > 1 else metrics[0],
            mode=modes if len(modes) > 1 else modes[0],
            seed=config.searcher.seed,
        )
        if config.searcher.max_concurrent:
            searcher = ConcurrencyLimiter(searcher, max_concurrent=config.searcher.max_concurrent)
        param_space: dict[str, Any] = {}
    else:
        searcher = BasicVariantGenerator(max_concurrent=config.searcher.max_concurrent or 0, random_state=config.searcher.seed)
        param_space = tune_param_space(config)
    from ray.tune import CheckpointConfig, CLIReporter, FailureConfig, RunConfig

    reporter = CLIReporter(
        # Conditional parameters are absent from some trials' configs, which the table cannot show.
        parameter_columns=[name for name, param in config.search.items() if not param.when],
        metric_columns={"training_iteration": "epoch", "val_accuracy": "val_acc", "val_macro_f1": "f1", "latency_ms": "ms"},
        max_report_frequency=15,
        sort_by_metric=True,
        metric=primary.metric,
        mode=primary.mode,
    )
    run_config = RunConfig(
        name=config.experiment_name,
        storage_path=storage_path(config),
        failure_config=FailureConfig(max_failures=config.resources.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=1),
        progress_reporter=reporter,
        callbacks=[CloseRuns(tracker, config.budget.epochs)],
        verbose=1,
    )
    tune_config = tune.TuneConfig(num_samples=config.budget.num_samples, scheduler=scheduler, search_alg=searcher)
    if config.run.resume:
        return tune.Tuner.restore(experiment_path(config), trainable=trainable, resume_unfinished=True, resume_errored=True, param_space=param_space)
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)


# ---------------------------------------------------------------- the command


def prepare(config: SweepConfig):
    """Everything that can fail on bad input, before a single trial starts and before MLflow is written."""
    if not config.run.address:  # an embedded runtime gets this machine: check before starting it
        check_resources(config, {"CPU": os.cpu_count() or 1, "GPU": torch.cuda.device_count()})
    if config.run.resume and not tune.Tuner.can_restore(experiment_path(config)):
        raise ConfigError("--resume", f"no sweep named '{config.experiment_name}' to resume under {storage_path(config)}")
    uri = resolve_tracking_uri(config.run.tracking_uri)
    use_store(uri)
    ray = start_ray(config)
    check_resources(config, ray.cluster_resources())
    data = load_dataset(config.data)
    teacher = prepare_teacher(config.teacher, data) if any_trial_needs_teacher(config) else None
    return data, teacher, uri


def run_sweep(config: SweepConfig) -> int:
    data, teacher, store = prepare(config)
    with tracking_service(store) as uri:
        return track_and_tune(config, data, teacher, uri)


def track_and_tune(config: SweepConfig, data, teacher, uri: str) -> int:
    tracker = SweepTracker(uri, config.experiment_name)
    tracking = tracker.start_parent(config, resume=config.run.resume)
    if teacher is not None:
        tracker.link_teacher(*log_teacher(uri, teacher, data))
    print(f"sweep '{config.experiment_name}': {config.budget.num_samples} samples on {data.name}, "
          f"storage {storage_path(config)}, MLflow {display_uri(uri)} (parent run {tracking.parent_run_id})", flush=True)
    tuner = build_tuner(config, data, teacher_for_trials(config.teacher, teacher, data, config.budget.epochs), tracker, tracking)
    results = tuner.fit()
    rows = leaderboard_rows(results, config)
    print_leaderboard(rows, config)
    succeeded = any(row["status"] in ("FINISHED", "STOPPED") for row in rows)
    tracker.finish("FINISHED" if succeeded else "FAILED")
    if succeeded and config.run.select:
        primary = config.objectives[0]
        champion = select_champion(uri, config.experiment_name, tracking.parent_run_id, Constraints(),
                                   register=config.run.register_name, metric=primary.metric, mode=primary.mode, show_table=False)
        if champion is not None:
            print(f"champion: {champion.run_name} -> {champion.model_uri}")
            for row in rows:
                row["champion"] = row.get("mlflow_run_id") == champion.run_id
    if config.run.output_json:
        write_json(rows, config.run.output_json)
    return 0 if succeeded else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = config_from_args(args)
        return run_sweep(config)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
