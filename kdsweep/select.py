"""`python -m kdsweep.select`: a sweep's MLflow runs -> Pareto front -> the champion in the Model Registry.

Trials are compared on the validation split; the test split is read once, for the champion only
(a second selection reuses its logged test metrics). The alias `champion` lets serving code load
`models:/NAME@champion` without knowing a run id.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import operator
import sys
import time
from dataclasses import asdict, dataclass, fields
from typing import Callable, get_args, get_type_hints

import mlflow
import torch
from mlflow.entities import Metric, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from kdsweep.data import DataSpec, load_dataset
from kdsweep.distill import evaluate
from kdsweep.errors import ConfigError
from kdsweep.leaderboard import format_table, table_row
from kdsweep.tracking import (
    TAG_MODEL_URI,
    TAG_PARENT,
    TAG_ROLE,
    TAG_STOPPED_EARLY,
    check_reachable,
    latest_parent,
    load_logged_model,
    resolve_tracking_uri,
)

ALIAS = "champion"
FRONT_METRICS = ("val_accuracy", "latency_ms", "params")
FRONT_SENSES = ("max", "min", "min")
Log = Callable[[str], None]


# constraint field -> (the metric it limits, the comparison that must hold)
_LIMITS = {"max_latency_ms": ("latency_ms", operator.le), "max_params": ("params", operator.le),
           "min_accuracy": ("val_accuracy", operator.ge)}


@dataclass(frozen=True)
class Constraints:
    """Hard limits the champion must meet (None: no limit), checked where they enter, named by flag."""

    max_latency_ms: float | None = None
    max_params: float | None = None
    min_accuracy: float | None = None  # on val_accuracy

    def __post_init__(self) -> None:
        for name, value in self.limits().items():
            accuracy = name == "min_accuracy"  # a fraction
            if not math.isfinite(value) or value < 0 or (accuracy and value > 1):
                raise ConfigError("--" + name.replace("_", "-"), f"must be a finite number {'in [0, 1]' if accuracy else '>= 0'}, got {value}")

    def limits(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in _LIMITS if getattr(self, name) is not None}

    def describe(self) -> str:
        parts = [f"{_LIMITS[n][0]} {'<=' if n.startswith('max') else '>='} {v:g}" for n, v in self.limits().items()]
        return ", ".join(parts) or "no constraints"


@dataclass(frozen=True)
class TrialRun:
    """One child run as selection sees it: latest value of each metric, params as logged (strings)."""

    run_id: str
    name: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    model_uri: str | None
    stopped_early: bool

    @property
    def is_candidate(self) -> bool:
        """Only a run that completed and logged its student can be served (ASHA's stopped runs cannot)."""
        return self.status == "FINISHED" and bool(self.model_uri) and not self.stopped_early

    @classmethod
    def from_run(cls, run: Run) -> "TrialRun":
        tags = run.data.tags
        return cls(run.info.run_id, run.info.run_name or run.info.run_id, run.info.status, dict(run.data.params),
                   dict(run.data.metrics), tags.get(TAG_MODEL_URI), tags.get(TAG_STOPPED_EARLY) == "true")


@dataclass(frozen=True)
class Champion:
    run_id: str
    run_name: str
    model_uri: str  # models:/NAME@champion
    version: int
    metrics: dict[str, float]  # the run's latest metrics, test_* included


# ---------------------------------------------------------------- pure selection


def pareto_front(points: list[tuple[float, ...]], senses: tuple[str, ...]) -> list[int]:
    """Indices of the points no other point dominates (as good in every objective, better in one).

    Equal points do not dominate each other, so duplicates on the front are all kept.
    """
    if any(sense not in ("max", "min") for sense in senses) or any(len(p) != len(senses) for p in points):
        raise ValueError(f"every point needs one value per sense, and senses are 'max' or 'min': {senses}")
    signed = [tuple(v if s == "max" else -v for v, s in zip(p, senses)) for p in points]

    def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [i for i, p in enumerate(signed) if not any(dominates(q, p) for q in signed)]


def satisfies(metrics: dict[str, float], constraints: Constraints) -> bool:
    """A missing metric fails its limit: a run whose latency was never measured cannot prove it is fast."""
    return all(_LIMITS[n][0] in metrics and _LIMITS[n][1](metrics[_LIMITS[n][0]], v) for n, v in constraints.limits().items())


def rank(runs: list[TrialRun], metric: str, mode: str) -> list[TrialRun]:
    """Best first: candidates before the rest, then `metric`, then lower latency, then fewer params."""
    sign = -1.0 if mode == "max" else 1.0

    def key(run: TrialRun) -> tuple:
        value = run.metrics.get(metric, math.nan)
        return (not run.is_candidate, math.isnan(value), 0.0 if math.isnan(value) else sign * value,
                run.metrics.get("latency_ms", math.inf), run.metrics.get("params", math.inf))

    return sorted(runs, key=key)


def front_of(candidates: list[TrialRun]) -> list[TrialRun]:
    """The Pareto front of accuracy, latency and size, among candidates that logged all three."""
    placed = [run for run in candidates if all(m in run.metrics for m in FRONT_METRICS)]
    points = [tuple(run.metrics[m] for m in FRONT_METRICS) for run in placed]
    return [placed[i] for i in pareto_front(points, FRONT_SENSES)]


def data_spec_from_params(params: dict[str, str]) -> DataSpec:
    """The parent's `data.*` params (logged as strings) back into the DataSpec the sweep trained on."""
    hints = get_type_hints(DataSpec)
    values = {f.name: _parse(params[f"data.{f.name}"], hints[f.name], f"data.{f.name}")
              for f in fields(DataSpec) if f"data.{f.name}" in params}
    if "name" not in values:
        raise ConfigError("data.name", "not among the parent run's params: cannot rebuild the test split")
    return DataSpec(**values)


def _parse(text: str, hint: type, field: str) -> object:
    options = get_args(hint) or (hint,)
    if text == "None" and type(None) in options:
        return None
    kind = next(option for option in options if option is not type(None))
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(field, f"cannot read '{text}' as {kind.__name__}") from None


def format_leaderboard(ranked: list[TrialRun]) -> str:
    lines = []
    for position, run in enumerate(ranked, 1):
        status = "STOPPED" if run.stopped_early else run.status + (" (no model)" if run.status == "FINISHED" and not run.model_uri else "")
        lines.append(table_row(position, run.name, run.params, run.metrics, status))
    return format_table(lines)


# ---------------------------------------------------------------- MLflow


def _every(fetch: Callable) -> list:
    """All pages of an MLflow search (each page holds at most 1000)."""
    items, token = [], None
    while True:
        page = fetch(page_token=token)
        items.extend(page)
        token = page.token
        if not token:
            return items


def _get_run(client: MlflowClient, run_id: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException:
        raise ConfigError("--parent-run-id", f"no run '{run_id}' in this store") from None


def _latest_parent(client: MlflowClient, experiment_ids: list[str], where: str) -> Run:
    found = latest_parent(client, experiment_ids)
    if found is None:
        raise ConfigError("--experiment", f"no sweep in {where} (no run tagged {TAG_ROLE}=parent)")
    return found


def default_experiment(client: MlflowClient, parent_run_id: str | None = None) -> str:
    """The experiment of `parent_run_id`, else of the most recent sweep in the store."""
    if parent_run_id:
        return client.get_experiment(_get_run(client, parent_run_id).info.experiment_id).name
    ids = [e.experiment_id for e in _every(lambda page_token: client.search_experiments(page_token=page_token))]
    return client.get_experiment(_latest_parent(client, ids, f"the store {client.tracking_uri}").info.experiment_id).name


def find_parent(client: MlflowClient, experiment_name: str, parent_run_id: str | None) -> Run:
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        names = [e.name for e in _every(lambda page_token: client.search_experiments(page_token=page_token))]
        hint = "".join(f"; did you mean '{name}'?" for name in difflib.get_close_matches(experiment_name, names, n=1))
        raise ConfigError("--experiment", f"no experiment named '{experiment_name}' in {client.tracking_uri}{hint}")
    if not parent_run_id:
        return _latest_parent(client, [experiment.experiment_id], f"'{experiment_name}'")
    run = _get_run(client, parent_run_id)
    if run.info.experiment_id != experiment.experiment_id or run.data.tags.get(TAG_ROLE) != "parent":
        raise ConfigError("--parent-run-id", f"run '{parent_run_id}' is not a sweep's parent run in '{experiment_name}'")
    return run


def evaluate_on_test(client: MlflowClient, run: TrialRun, parent: Run, log: Log) -> dict[str, float]:
    """Evaluate the chosen student on the test split once, and log it on its run (a rerun reuses it)."""
    if "test_accuracy" in run.metrics:
        log(f"{run.name}: test metrics already logged, not evaluating again (selection is idempotent)")
        return {k: v for k, v in run.metrics.items() if k.startswith("test_")}
    data = load_dataset(data_spec_from_params(parent.data.params))
    # The student was saved from a CPU copy, and pt2 (torch.export) weights cannot change device.
    metrics = evaluate(load_logged_model(run.model_uri), data, "test", torch.device("cpu"))
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


def pareto_figure(candidates: list[TrialRun], front: list[TrialRun], champion: TrialRun | None, constraints: Constraints):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def xy(runs: list[TrialRun]) -> tuple[list[float], list[float]]:
        placed = [r.metrics for r in runs if "latency_ms" in r.metrics and "val_accuracy" in r.metrics]
        return [m["latency_ms"] for m in placed], [m["val_accuracy"] for m in placed]

    figure, axes = plt.subplots(figsize=(6, 4.5))
    axes.scatter(*xy(candidates), c="lightgray", edgecolors="gray", label="finished trials")
    axes.scatter(*xy(front), c="tab:red", label="Pareto front (accuracy, latency, params)")
    for run in front:  # every run on the front has both metrics
        axes.annotate(run.name, (run.metrics["latency_ms"], run.metrics["val_accuracy"]), fontsize=7,
                      xytext=(4, 4), textcoords="offset points")
    if champion is not None:
        axes.scatter(*xy([champion]), marker="*", s=300, c="gold", edgecolors="black", label=f"champion: {champion.name}")
    if constraints.max_latency_ms is not None:
        axes.axvline(constraints.max_latency_ms, ls="--", c="gray")
    if constraints.min_accuracy is not None:
        axes.axhline(constraints.min_accuracy, ls="--", c="gray")
    axes.set(xlabel="latency_ms (lower is better)", ylabel="val_accuracy", title=constraints.describe())
    axes.margins(0.15)
    axes.legend(fontsize=8)
    plt.close(figure)
    return figure


# ---------------------------------------------------------------- the command


def select_champion(uri: str, experiment_name: str, parent_run_id: str | None = None, constraints: Constraints = Constraints(),
                    register: str | None = None, metric: str = "val_accuracy", mode: str = "max", log: Log = print,
                    show_table: bool = True) -> Champion | None:
    """Rank the sweep's students, pick the best that meets `constraints`, test it once, register it.

    Returns None when no student qualifies. Sets MLflow's global tracking URI: `models:/` URIs
    resolve through it when loading and registering.
    """
    if mode not in ("max", "min"):
        raise ConfigError("--mode", f"'{mode}' is not 'max' or 'min'")
    client = MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    parent = find_parent(client, experiment_name, parent_run_id)
    children = _every(lambda page_token: client.search_runs(
        [parent.info.experiment_id], f"tags.`{TAG_PARENT}` = '{parent.info.run_id}'", page_token=page_token))
    runs = [TrialRun.from_run(run) for run in children]
    candidates = [run for run in runs if run.is_candidate]
    if candidates and not any(metric in run.metrics for run in candidates):
        known = ", ".join(sorted({k for run in candidates for k in run.metrics}))
        raise ConfigError("--metric", f"no candidate logged '{metric}' (logged: {known})")
    front = front_of(candidates)
    log(f"sweep {parent.info.run_name} ({parent.info.run_id}) in '{experiment_name}': {len(runs)} trials, "
        f"{len(candidates)} finished with a model; ranked by {metric} ({mode})")
    if show_table:  # the sweep has just printed its own
        log(format_leaderboard(rank(runs, metric, mode)))
    log(f"Pareto front ({', '.join(f'{m} {s}' for m, s in zip(FRONT_METRICS, FRONT_SENSES))}): "
        f"{', '.join(run.name for run in front) or '-'}")
    feasible = [run for run in candidates if satisfies(run.metrics, constraints) and metric in run.metrics]
    chosen = rank(feasible, metric, mode)[0] if feasible else None
    client.log_figure(parent.info.run_id, pareto_figure(candidates, front, chosen, constraints), "pareto_front.png")
    if chosen is None:
        log(f"no champion: none of {len(candidates)} finished trials with a model meets {constraints.describe()}")
        return None
    log(f"champion: {chosen.name} ({metric} {chosen.metrics[metric]:.4f}; {constraints.describe()})")
    tested = evaluate_on_test(client, chosen, parent, log)
    name = register or experiment_name
    tags = {"kdsweep.run_id": chosen.run_id, "kdsweep.parent_run_id": parent.info.run_id,
            "kdsweep.constraints": json.dumps(asdict(constraints)), "kdsweep.metric": f"{metric} {mode}"}
    version = register_champion(client, chosen, name, tags, log)
    return Champion(chosen.run_id, chosen.name, f"models:/{name}@{ALIAS}", version, {**chosen.metrics, **tested})


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line naming the flag, like every kdsweep error
        field, _, problem = message.removeprefix("argument ").partition(": ")
        raise ConfigError(field, problem)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(prog="python -m kdsweep.select", description="Pick a sweep's champion student and register it as NAME@champion.")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    p.add_argument("--experiment", default=None, help="experiment name (default: that of the most recent sweep)")
    p.add_argument("--parent-run-id", default=None, help="the sweep's parent run (default: the experiment's latest)")
    p.add_argument("--max-latency-ms", type=float, default=None, help="only students at most this slow (latency_ms)")
    p.add_argument("--max-params", type=float, default=None, help="only students with at most this many parameters")
    p.add_argument("--min-accuracy", type=float, default=None, help="only students with at least this val_accuracy")
    p.add_argument("--metric", default="val_accuracy", help="what makes the best student (default: val_accuracy)")
    p.add_argument("--mode", default="max", choices=["max", "min"], help="maximise or minimise --metric")
    p.add_argument("--register", default=None, metavar="NAME", help="registered model name (default: the experiment's)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        uri = resolve_tracking_uri(args.tracking_uri)
        check_reachable(uri)
        constraints = Constraints(args.max_latency_ms, args.max_params, args.min_accuracy)
        experiment = args.experiment or default_experiment(MlflowClient(uri), args.parent_run_id)
        champion = select_champion(uri, experiment, args.parent_run_id, constraints, args.register, args.metric, args.mode)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if champion is None:
        return 1
    print(champion.model_uri)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
