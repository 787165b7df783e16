"""What a sweep learned: how much each searched parameter moved the primary objective, by Optuna's
fANOVA evaluator over the distillation trials that reached a result (scratch baselines are not
searched: they are left out).

Which trials: the FINISHED ones, all judged at the last epoch, one per configuration (a configuration
confirmed over several seeds counts once, with its mean over them). A trial STOPPED early by ASHA was
judged at an earlier epoch, so its value mixes "worse parameters" with "fewer epochs"; stopped
trials are used only when fewer than MIN_TRIALS finished, and the report says so.

Which parameters, over which trials (each scope's importances sum to 1):
- "all trials": the unconditional searched parameters, over every trial used;
- one scope per condition (`when: {loss: dkd}`): that branch's parameters with the unconditional
  ones (less those the condition fixes), over only the trials that carry them;
- one scope per student family (`student` searched): the other parameters, with the conditional
  ones that every trial of that family carries (`width` for small_cnn: a condition on the student
  alone is reported there, not as a scope of its own), where the family has at least
  MIN_FAMILY_TRIALS trials.
A scope is computed only over >= 2 parameters that can vary, and not when the objective is the
same in all its trials. Pure functions, but for `report_importance` (prints, logs on the parent run).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import optuna
from mlflow.tracking import MlflowClient
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.importance import FanovaImportanceEvaluator, get_param_importances

from kdsweep.config import Param, SweepConfig
from kdsweep.configurations import configuration_key
from kdsweep.errors import one_line
from kdsweep.leaderboard import Row
from kdsweep.outcome import Outcome
from kdsweep.plots import importance_figure

IMPORTANCE_PLOT = "importance.png"  # on the parent run (summary.PLOTS describes it)
IMPORTANCE_JSON = "importance.json"
MIN_TRIALS = 4  # a scope with fewer trials is not computed
MIN_FAMILY_TRIALS = 8  # per student family
MIN_PARAMS = 2  # one parameter alone always gets all of the importance
EVALUATOR = "fANOVA"


@dataclass(frozen=True)
class Scope:
    name: str  # "all trials", "loss=dkd", "student=resnet8"
    trials: int
    importances: dict[str, float]  # highest first, summing to 1
    carrying: list[str] = field(default_factory=list)  # the conditional parameters its trials all carry


@dataclass(frozen=True)
class Report:
    metric: str
    trials: int  # the trials used
    stopped: int  # how many of them were stopped early (0 when enough finished)
    scopes: list[Scope] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # scopes not computed, and why
    reason: str = ""  # why there is no report at all (then scopes is empty)

    def to_dict(self) -> dict[str, Any]:
        return {"evaluator": EVALUATOR, **asdict(self)}


def usable_trials(rows: list[Row], metric: str) -> list[Row]:
    """The distillation trials with a finite value of `metric`: the finished ones when there are
    MIN_TRIALS of them, else the finished and the stopped early."""
    reached = [
        row
        for row in rows
        if row.role == "trial"
        and row.status in (Outcome.FINISHED, Outcome.STOPPED)
        and isinstance(row.metrics.get(metric), (int, float))
        and math.isfinite(row.metrics[metric])
    ]
    finished = [row for row in reached if row.status == Outcome.FINISHED]
    return seed_means(finished if len(finished) >= MIN_TRIALS else reached, metric)


def seed_means(rows: list[Row], metric: str) -> list[Row]:
    """One row per configuration (its first), carrying the mean of `metric` over its finished seeds where it
    has several: a configuration confirmed over seeds is one point of the space, measured more precisely."""
    seen, out = set(), []
    for row in rows:
        key = configuration_key(row.config, row.role == "baseline")
        if key in seen:
            continue
        seen.add(key)
        stats = row.seeds
        if stats is not None and stats.metric == metric and stats.value.n > 1:
            row = replace(row, metrics={**row.metrics, metric: stats.value.mean})
        out.append(row)
    return out


def distribution(param: Param) -> BaseDistribution:
    """The Optuna distribution of a searched parameter's domain (randint's high is excluded, as in Tune)."""
    if param.domain in ("choice", "grid"):
        return CategoricalDistribution(param.values)
    low, high = param.values
    if param.domain == "randint":
        return IntDistribution(int(low), int(high) - 1)
    return FloatDistribution(float(low), float(high), log=param.domain == "loguniform")


def importances(rows: list[Row], params: dict[str, Param], metric: str, seed: int) -> tuple[dict, int]:
    """fANOVA's importances of `params` over the rows that carry all of them, and how many those were."""
    distributions = {name: distribution(param) for name, param in params.items()}
    trials = []
    for row in rows:
        values = {name: _in_domain(row.config.get(name), d) for name, d in distributions.items()}
        if any(value is None for value in values.values()):
            continue
        try:
            trial = optuna.trial.create_trial(params=values, distributions=distributions, value=row.metrics[metric])
        except ValueError:  # a value outside the domain (the space changed on --resume): not this trial
            continue
        trials.append(trial)
    if len({trial.value for trial in trials}) < 2:
        return {}, len(trials)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory" is noise here
    try:
        study = optuna.create_study()
        study.add_trials(trials)
        found = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed), params=list(params))
    finally:
        optuna.logging.set_verbosity(verbosity)
    return {name: float(value) for name, value in found.items()}, len(trials)


def _in_domain(value: Any, dist: BaseDistribution) -> Any:
    """The row's value as the distribution knows it (a choice matched by value, else by its text)."""
    if value is None:
        return None
    if isinstance(dist, CategoricalDistribution):
        for choice in dist.choices:
            if choice == value or str(choice) == str(value):
                return choice
        return None
    return value


def importance_report(rows: list[Row], config: SweepConfig) -> Report:
    """Which searched parameters mattered for the primary objective (see the module's docstring)."""
    metric = config.objectives[0].metric
    seed = config.searcher.seed or 0
    trials = usable_trials(rows, metric)
    stopped = sum(row.status == Outcome.STOPPED for row in trials)
    searched = {n: p for n, p in config.search.items() if p.domain not in ("choice", "grid") or len(p.values) > 1}
    plain = {name: p for name, p in searched.items() if not p.when}
    if len(trials) < MIN_TRIALS:
        return Report(metric, len(trials), stopped, reason=f"too few trials ({len(trials)}; needs {MIN_TRIALS})")
    if len({row.metrics[metric] for row in trials}) < 2:
        return Report(metric, len(trials), stopped, reason=f"{metric} is the same in all {len(trials)} trials")
    if len(searched) < MIN_PARAMS:
        return Report(metric, len(trials), stopped, reason=f"fewer than {MIN_PARAMS} searched parameters vary")
    scopes: list[Scope] = []
    skipped: list[str] = []

    def scope(name: str, subset: list[Row], params: dict[str, Param], least: int, carrying=()) -> None:
        if len(params) < MIN_PARAMS:
            skipped.append(f"{name}: only {', '.join(params) or 'no parameter'} varies there")
        elif len(subset) < least:
            skipped.append(f"too few trials ({len(subset)}) for {name} (needs {least})")
        else:
            found, carried = importances(subset, params, metric, seed)
            if found:
                scopes.append(Scope(name, carried, found, list(carrying)))
            else:
                skipped.append(f"{name}: {metric} is the same in all {carried} trials")

    scope("all trials", trials, plain, MIN_TRIALS)
    families = "student" in plain
    for when, branch in _branches(searched).items():
        conditions = json.loads(when)
        if families and set(conditions) == {"student"}:
            continue  # a student's own parameters (width): in that student's family, below
        fixed_by_it = set(conditions)
        subset = [row for row in trials if all(name in row.config for name in branch)]
        params = {**{n: p for n, p in plain.items() if n not in fixed_by_it}, **branch}
        scope(_describe(conditions), subset, params, MIN_TRIALS, carrying=branch)
    if families:
        for family in dict.fromkeys(str(row.config.get("student")) for row in trials):
            subset = [row for row in trials if str(row.config.get("student")) == family]
            params = {n: p for n, p in plain.items() if n != "student"}
            own = {
                n: p
                for n, p in searched.items()
                if p.when and set(p.when) == {"student"} and all(n in row.config for row in subset)
            }
            scope(f"student={family}", subset, params | own, MIN_FAMILY_TRIALS, carrying=own)
    return Report(metric, len(trials), stopped, scopes, skipped)


def _branches(searched: dict[str, Param]) -> dict[str, dict[str, Param]]:
    """The conditional parameters, grouped by their condition (as sorted JSON, to be a key)."""
    branches: dict[str, dict[str, Param]] = {}
    for name, param in searched.items():
        if param.when:
            branches.setdefault(json.dumps(param.when, sort_keys=True), {})[name] = param
    return branches


def _describe(conditions: dict[str, Any]) -> str:
    return ", ".join(
        f"{key}={'|'.join(map(str, value)) if isinstance(value, list) else value}" for key, value in conditions.items()
    )


def format_report(report: Report) -> str:
    """The block printed after the leaderboard: one line per scope, its trials named."""
    head = f"what mattered for {report.metric} ({EVALUATOR}"
    if report.reason:
        return f"{head}): no report, {report.reason}"
    over = (
        f"{report.trials} trials, {report.stopped} of them stopped early and judged at that epoch (too few finished)"
        if report.stopped
        else f"{report.trials} finished trials"
    )
    lines = [f"{head} over {over}; the importances on each line sum to 1)"]
    for scope in report.scopes:
        shown = ", ".join(f"{name} {value:.2f}" for name, value in scope.importances.items())
        which = f", those carrying {', '.join(scope.carrying)}" if scope.carrying else ""
        lines.append(f"  {scope.name} ({scope.trials} trials{which}): {shown}")
    lines += [f"  {line}" for line in report.skipped]
    return "\n".join(lines)


def report_importance(rows: list[Row], config: SweepConfig, uri: str, parent_run_id: str) -> Report:
    """Print the report and log it on the parent run: the figure (IMPORTANCE_PLOT) and the numbers
    (IMPORTANCE_JSON), when there is one. MLflow failing is named on one line, not raised."""
    report = importance_report(rows, config)
    print(f"\n{format_report(report)}", flush=True)
    if report.scopes:
        try:
            client = MlflowClient(uri)
            figure = importance_figure(
                [(f"{s.name} ({s.trials})", s.importances) for s in report.scopes], report.metric
            )
            client.log_figure(parent_run_id, figure, IMPORTANCE_PLOT)
            client.log_dict(parent_run_id, report.to_dict(), IMPORTANCE_JSON)
        except Exception as error:
            print(f"MLflow: could not log the importance report ({one_line(error)})")
    return report
