"""A sweep's MLflow runs (read by kdsweep.sweep_record) -> the champion in the Model Registry.

Trials are compared on the validation split; the test split is read once, for the champion only
(a second selection reuses its logged test metrics). The champion is chosen among configurations (a
trial's parameters but its seed; scratch baselines included unless `distilled_only`) by the rule of
kdsweep.configurations, and the best seed of the chosen one is registered. The alias `champion` lets serving code load
`models:/NAME@champion` without knowing a run id.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import mlflow
from mlflow.entities import Metric, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from kdsweep.confidence import binomial_se
from kdsweep.configurations import (
    DISTILLED,
    SCRATCH,
    SEEDLESS,
    Configuration,
    SeedStats,
    configurations,
    describe_seeds,
    gain_text,
    rank_configurations,
    scratch_won,
    seed_of,
    verdict,
)
from kdsweep.data import load_dataset
from kdsweep.errors import ConfigError
from kdsweep.leaderboard import leaderboard_of
from kdsweep.plots import PARETO_PLOT, pareto_figure
from kdsweep.selection import (
    FRONT_SENSES,
    INT8_METRICS,
    Constraints,
    FrontSummary,
    TrialRun,
    at_precision,
    check_selection_metric,
    front_metrics,
    front_of,
    rank,
    satisfies,
    summarise_front,
)
from kdsweep.sweep_record import find_parent, sweep_config, sweep_runs, validation_size
from kdsweep.tracking.models import INT8_DIR, INT8_FILE, load_logged_model
from kdsweep.trial import evaluate

ALIAS = "champion"
TAG_KIND = "kdsweep.kind"  # on the registered version: distilled or scratch
TAG_TEACHER = "kdsweep.teacher"  # the teacher it was distilled from, "none" for a scratch student
Log = Callable[[str], None]


@dataclass(frozen=True)
class Champion:
    experiment_id: str
    parent_run_id: str  # the sweep's
    run_id: str
    run_name: str
    model_uri: str  # models:/NAME@champion
    version: int
    metrics: dict[str, float]  # the run's latest metrics, test_* included
    kind: str  # distilled or scratch (kdsweep.configurations)
    stats: SeedStats  # its configuration's figures over its seeds
    scratch_note: str | None = None  # the line that says a scratch student won


def evaluate_on_test(client: MlflowClient, run: TrialRun, parent: Run, log: Log) -> dict[str, float]:
    """Evaluate the chosen student on the test split once, and log it on its run (a rerun reuses it)."""
    if "test_accuracy" in run.metrics:
        log(f"{run.name}: test metrics already logged, not evaluating again (selection is idempotent)")
        return {k: v for k, v in run.metrics.items() if k.startswith("test_")}
    data = load_dataset(sweep_config(client, parent).data)
    # On the CPU: the student was saved from a CPU copy, and pt2 (torch.export) weights cannot change device.
    metrics = evaluate(load_logged_model(run.model_uri), data, "test")
    now, step = int(time.time() * 1000), int(run.metrics.get("epoch", 0))
    client.log_batch(run.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])
    log(f"{run.name}: test_accuracy {metrics['test_accuracy']:.4f}, test_macro_f1 {metrics['test_macro_f1']:.4f}")
    return metrics


def register_champion(client: MlflowClient, run: TrialRun, name: str, tags: dict[str, str], log: Log) -> int:
    """A new registry version with the alias `champion`; the current one if it already holds this run."""
    try:
        current = client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:  # no such model or alias yet
        current = None
    if current is not None and current.tags.get("kdsweep.run_id") == run.run_id:
        for key, value in tags.items():
            client.set_model_version_tag(name, current.version, key, value)
        log(f"{name} version {current.version} already holds {run.name} as @{ALIAS}")
        return int(current.version)
    version = mlflow.register_model(run.model_uri, name, tags=tags)
    client.set_registered_model_alias(name, ALIAS, version.version)
    log(f"registered {run.name} as {name} version {version.version}, alias @{ALIAS}")
    return int(version.version)


def select_champion(
    uri: str,
    experiment_name: str,
    parent_run_id: str | None = None,
    constraints: Constraints | None = None,
    register: str | None = None,
    metric: str = "val_accuracy",
    mode: str = "max",
    log: Log = print,
    show_table: bool = True,
    distilled_only: bool = False,
    precision: str | None = None,
) -> Champion | None:
    """Rank the sweep's configurations by the champion rule (kdsweep.configurations), pick the best that
    meets `constraints`, test its best seed once, register it.

    Scratch baselines compete unless `distilled_only`. Returns None when no student qualifies.
    `precision` int8 ranks and constrains on the int8 figures the sweep's int8 stage logged (None: the
    sweep's own deploy.precision); the parent run gets the front's size and hypervolume, and its figure.
    Sets MLflow's global tracking URI: `models:/` URIs resolve through it when loading and registering.

    Example:
        champion = select_champion("sqlite:///mlflow.db", "default", constraints=Constraints(max_latency_ms=1))
        mlflow.pytorch.load_model(champion.model_uri)
    """
    constraints = constraints or Constraints()
    check_selection_metric(metric)
    if mode not in ("max", "min"):
        raise ConfigError("--mode", f"'{mode}' is not 'max' or 'min'")
    client = MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    parent = find_parent(client, experiment_name, parent_run_id)
    precision = precision or sweep_config(client, parent).deploy.precision
    runs = sweep_runs(client, parent)
    metric = int8_metric(runs, parent, metric, log) if precision == "int8" else metric
    competing, candidates = competitors(runs, parent, metric, distilled_only)
    val_size = validation_size(parent)
    log(
        f"sweep {parent.info.run_name} ({parent.info.run_id}) in '{experiment_name}': {len(runs)} trials, "
        f"{len(candidates)} finished with a model{' (scratch baselines aside)' if distilled_only else ''}; "
        f"ranked by {metric} ({mode})"
    )
    if show_table:  # the sweep has just printed its own, and its verdict
        log(leaderboard_of(rank(runs, metric, mode), metric, val_size=val_size))
        log(verdict(rank_configurations(configurations(runs), metric, mode), metric, val_size))
    within = [run for run in candidates if satisfies(run.metrics, constraints, precision)]
    front = front_of(within, precision)
    log(
        f"Pareto front of the students within {constraints.describe()} "
        f"({', '.join(f'{m} {s}' for m, s in zip(front_metrics(precision), FRONT_SENSES, strict=True))}): "
        f"{', '.join(run.name for run in front) or '-'}"
    )
    log_front(client, parent.info.run_id, summarise_front(front, within, constraints, precision), log)
    feasible = feasible_configurations(competing, metric, mode, constraints, precision)
    chosen = feasible[0].best_run(metric, mode) if feasible else None
    figure = pareto_figure(candidates, front, chosen, constraints, precision)
    client.log_figure(parent.info.run_id, figure, PARETO_PLOT)
    if chosen is None:
        log(f"no champion: none of {len(candidates)} finished trials with a model meets {constraints.describe()}")
        return None
    config, stats = feasible[0], feasible[0].stats(metric)
    log(
        f"champion: {chosen.name} ({config.kind}; {metric} {chosen.metrics[metric]:.4f}, "
        f"{describe_seeds(stats.value)}; {constraints.describe()}"
        f"{'; chosen on its int8 figures, as it ships' if precision == 'int8' else ''})"
    )
    scratch_note = None
    if config.kind == SCRATCH:
        scratch_note = scratch_won(config, next((c for c in feasible if c.kind == DISTILLED), None), metric)
        log(scratch_note)
    tested = evaluate_on_test(client, chosen, parent, log)
    name = register or experiment_name
    tags = {
        "kdsweep.run_id": chosen.run_id,
        "kdsweep.parent_run_id": parent.info.run_id,
        "kdsweep.constraints": json.dumps(asdict(constraints)),
        "kdsweep.metric": f"{metric} {mode}",
        **kind_tags(chosen, config, stats),
        **(int8_tags(chosen) if precision == "int8" else {}),
    }
    version = register_champion(client, chosen, name, tags, log)
    if precision == "int8":
        log(
            f"{name} version {version} carries its int8 model ({INT8_DIR}/{INT8_FILE}): same predicted class as "
            f"fp32 on {chosen.metrics['int8_agreement']:.2%} of the validation split"
        )
    about = version_description(chosen, config, stats, tested, val_size, parent, experiment_name, scratch_note)
    client.update_model_version(name, str(version), description=about)
    return Champion(
        parent.info.experiment_id,
        parent.info.run_id,
        chosen.run_id,
        chosen.name,
        f"models:/{name}@{ALIAS}",
        version,
        {**chosen.metrics, **tested},
        config.kind,
        stats,
        scratch_note,
    )


def competitors(
    runs: list[TrialRun], parent: Run, metric: str, distilled_only: bool
) -> tuple[list[TrialRun], list[TrialRun]]:
    """The runs that compete (scratch baselines too, unless `distilled_only`) and those of them that can be
    served; a flag or metric that leaves nothing to choose from is bad input, named."""
    competing = [run for run in runs if not (distilled_only and run.baseline)]
    candidates = [run for run in competing if run.is_candidate]
    if distilled_only and not candidates:
        raise ConfigError(
            "--distilled-only",
            f"sweep {parent.info.run_name} has no distilled student that finished with a model "
            f"({sum(run.baseline for run in runs)} scratch baselines): leave the flag out to let them compete",
        )
    if candidates and not any(metric in run.metrics for run in candidates):
        known = ", ".join(sorted({k for run in candidates for k in run.metrics}))
        raise ConfigError("--metric", f"no candidate logged '{metric}' (logged: {known})")
    return competing, candidates


def feasible_configurations(
    competing: list[TrialRun], metric: str, mode: str, constraints: Constraints, precision: str = "fp32"
) -> list[Configuration]:
    """The configurations with a seed to ship whose seed means meet `constraints`, by the champion rule
    (ties broken by the latency at `precision`)."""
    latency = at_precision("latency_ms", precision)
    return [
        config
        for config in rank_configurations(configurations(competing), metric, mode, latency=latency)
        if config.best_run(metric, mode) and satisfies(config.mean_metrics(metric), constraints, precision)
    ]


def int8_metric(runs: list[TrialRun], parent: Run, metric: str, log: Log) -> str:
    """What ranks students at int8 (`metric`'s int8 measurement); the finished students without one are
    named (they were not among the top configurations quantized), never judged on fp32 instead."""
    if metric not in INT8_METRICS:
        raise ConfigError(
            "--precision", f"int8 measures {', '.join(INT8_METRICS)}, not '{metric}': rank by val_accuracy"
        )
    ranked_by = at_precision(metric, "int8")
    candidates = [run for run in runs if run.is_candidate]
    lacking = [run.name for run in candidates if ranked_by not in run.metrics]
    if candidates and len(lacking) == len(candidates):
        raise ConfigError(
            "--precision",
            f"no student of sweep {parent.info.run_name} was measured at int8 (no '{ranked_by}'): it ran at "
            "fp32; select with --precision fp32, or sweep with --precision int8",
        )
    if lacking:
        log(
            f"at int8: {len(lacking)} finished student(s) have no int8 figures and do not compete: {', '.join(lacking)}"
        )
    return ranked_by


def log_front(client: MlflowClient, parent_run_id: str, front: FrontSummary | None, log: Log) -> None:
    """pareto_size and pareto_hypervolume on the parent run (0 and nothing when no student is placed)."""
    metrics = {"pareto_size": float(front.size if front else 0)}
    if front is not None:
        metrics["pareto_hypervolume"] = front.hypervolume
        accuracy, latency, params = front.reference
        log(
            f"front hypervolume {front.hypervolume:.4f} of the box from (accuracy 1, 0 ms, 0 params) to the "
            f"reference (accuracy {accuracy:g}, {latency:.4g} ms, {params:,.0f} params)"
        )
    now = int(time.time() * 1000)
    client.log_batch(parent_run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])


def int8_tags(run: TrialRun) -> dict[str, str]:
    """What the registered version is at int8: where its file is, and how it compares with fp32."""
    return {
        "kdsweep.precision": "int8",
        "kdsweep.int8_model": f"{INT8_DIR}/{INT8_FILE}",
        "kdsweep.int8_agreement": f"{run.metrics['int8_agreement']:.4f}",
        "kdsweep.val_accuracy_int8": f"{run.metrics['val_accuracy_int8']:.4f}",
        "kdsweep.latency_ms_int8": f"{run.metrics['latency_ms_int8']:.4f}",
    }


def kind_tags(run: TrialRun, config: Configuration, stats: SeedStats) -> dict[str, str]:
    """What the registered version is: distilled (from which teacher) or scratch, over how many seeds."""
    return {
        TAG_KIND: config.kind,
        TAG_TEACHER: run.params.get("teacher", "none") if config.kind == DISTILLED else "none",
        "kdsweep.seeds": str(stats.value.n),
        "kdsweep.confirmed": str(stats.confirmed).lower(),
    }


def version_description(
    run: TrialRun,
    config: Configuration,
    stats: SeedStats,
    tested: dict[str, float],
    val_size: int | None,
    parent: Run,
    experiment_name: str,
    scratch_note: str | None,
) -> str:
    """The registered version's description in the Model Registry: one paragraph saying what it is."""
    params = ", ".join(
        f"{k} {v}" for k, v in sorted(run.params.items()) if k not in SEEDLESS and not k.startswith("data.")
    )
    if config.kind == DISTILLED:
        teacher, loss = run.params.get("teacher", "?"), run.params.get("loss", "kd")
        what = f"`{config.student}` distilled from `{teacher}` with loss `{loss}`"
    else:
        what = f"`{config.student}` trained from scratch (no teacher)"
    accuracy = run.metrics.get("val_accuracy", float("nan"))
    se = f" ± {binomial_se(accuracy, val_size):.4f} (binomial SE on {val_size} images)" if val_size else ""
    if stats.kd_gain is not None:
        gain = f"Gain over the same student from scratch, paired seed by seed: {gain_text(stats.kd_gain)}."
    elif scratch_note:
        gain = scratch_note[0].upper() + scratch_note[1:] + "."
    else:
        gain = "Not compared with a scratch baseline."
    test = f", test_accuracy {tested['test_accuracy']:.4f}" if "test_accuracy" in tested else ""
    return (
        f"{what}; parameters: {params}; seed {seed_of(run)} (run `{run.name}`, {run.run_id}). "
        f"val_accuracy {accuracy:.4f}{se}{test}; its configuration's {stats.metric}: {describe_seeds(stats.value)}"
        f"{' (confirmed)' if stats.confirmed else ''}. {gain} "
        f"From the sweep `{parent.info.run_name}`: parent run {parent.info.run_id} in experiment "
        f"'{experiment_name}' ({parent.info.experiment_id})."
    )
