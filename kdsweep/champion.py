"""A sweep's MLflow runs (read by kdsweep.sweep_record) -> the champion in the Model Registry.

Trials are compared on the validation split; the test split is read once, for the champion only
(a second selection reuses its logged test metrics). The alias `champion` lets serving code load
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

from kdsweep.data import load_dataset
from kdsweep.errors import ConfigError
from kdsweep.leaderboard import leaderboard_of
from kdsweep.plots import PARETO_PLOT, pareto_figure
from kdsweep.selection import (
    FRONT_METRICS,
    FRONT_SENSES,
    Constraints,
    TrialRun,
    check_selection_metric,
    front_of,
    rank,
    satisfies,
)
from kdsweep.sweep_record import find_parent, sweep_config, sweep_runs
from kdsweep.tracking.models import load_logged_model
from kdsweep.trial import evaluate

ALIAS = "champion"
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
    include_baselines: bool = False,
) -> Champion | None:
    """Rank the sweep's students, pick the best that meets `constraints`, test it once, register it.

    Scratch baselines compete only when `include_baselines`. Returns None when no student qualifies.
    Sets MLflow's global tracking URI: `models:/` URIs resolve through it when loading and registering.
    """
    constraints = constraints or Constraints()
    check_selection_metric(metric)
    if mode not in ("max", "min"):
        raise ConfigError("--mode", f"'{mode}' is not 'max' or 'min'")
    client = MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    parent = find_parent(client, experiment_name, parent_run_id)
    runs = sweep_runs(client, parent)
    candidates = [run for run in runs if run.is_candidate and (include_baselines or not run.baseline)]
    if candidates and not any(metric in run.metrics for run in candidates):
        known = ", ".join(sorted({k for run in candidates for k in run.metrics}))
        raise ConfigError("--metric", f"no candidate logged '{metric}' (logged: {known})")
    front = front_of(candidates)
    log(
        f"sweep {parent.info.run_name} ({parent.info.run_id}) in '{experiment_name}': {len(runs)} trials, "
        f"{len(candidates)} finished with a model{'' if include_baselines else ' (scratch baselines aside)'}; "
        f"ranked by {metric} ({mode})"
    )
    if show_table:  # the sweep has just printed its own
        log(leaderboard_of(rank(runs, metric, mode)))
    log(
        f"Pareto front ({', '.join(f'{m} {s}' for m, s in zip(FRONT_METRICS, FRONT_SENSES, strict=True))}): "
        f"{', '.join(run.name for run in front) or '-'}"
    )
    feasible = [run for run in candidates if satisfies(run.metrics, constraints) and metric in run.metrics]
    chosen = rank(feasible, metric, mode)[0] if feasible else None
    client.log_figure(parent.info.run_id, pareto_figure(candidates, front, chosen, constraints), PARETO_PLOT)
    if chosen is None:
        log(f"no champion: none of {len(candidates)} finished trials with a model meets {constraints.describe()}")
        return None
    log(f"champion: {chosen.name} ({metric} {chosen.metrics[metric]:.4f}; {constraints.describe()})")
    tested = evaluate_on_test(client, chosen, parent, log)
    name = register or experiment_name
    tags = {
        "kdsweep.run_id": chosen.run_id,
        "kdsweep.parent_run_id": parent.info.run_id,
        "kdsweep.constraints": json.dumps(asdict(constraints)),
        "kdsweep.metric": f"{metric} {mode}",
    }
    version = register_champion(client, chosen, name, tags, log)
    return Champion(
        parent.info.experiment_id,
        parent.info.run_id,
        chosen.run_id,
        chosen.name,
        f"models:/{name}@{ALIAS}",
        version,
        {**chosen.metrics, **tested},
    )
