"""Choosing among finished students, as pure functions: constraints, the Pareto front, the ranking.

Trials are compared on the validation split only; nothing here reads data or MLflow.
"""

from __future__ import annotations

import itertools
import math
import operator
from dataclasses import dataclass

from kdsweep.errors import ConfigError
from kdsweep.outcome import Outcome

FRONT_METRICS = ("val_accuracy", "latency_ms", "params")
FRONT_SENSES = ("max", "min", "min")
PRECISIONS = ("fp32", "int8")
# The figures quantization changes, and the names of their int8 measurements (kdsweep.sweep.int8_stage);
# params stay what they are.
INT8_METRICS = {"val_accuracy": "val_accuracy_int8", "latency_ms": "latency_ms_int8"}
REFERENCE_MARGIN = 0.1  # a hypervolume's reference without a budget: 10% beyond the worst student seen


def at_precision(metric: str, precision: str) -> str:
    """The metric that stands for `metric` when students are judged as shipped at `precision`."""
    if precision not in PRECISIONS:
        raise ConfigError("--precision", f"unknown precision '{precision}' (choose from: {', '.join(PRECISIONS)})")
    return INT8_METRICS.get(metric, metric) if precision == "int8" else metric


# constraint field -> (the metric it limits, the comparison that must hold)
_LIMITS = {
    "max_latency_ms": ("latency_ms", operator.le),
    "max_params": ("params", operator.le),
    "min_accuracy": ("val_accuracy", operator.ge),
}


def check_selection_metric(metric: str) -> None:
    """Trials are ranked on validation metrics: ranking on a test_ one would choose by the test split."""
    if metric.startswith("test_"):
        raise ConfigError(
            "--metric",
            f"'{metric}' is measured on the test split, which selection never reads (it is the champion's final "
            "report): rank by a val_ metric",
        )


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
                raise ConfigError(
                    "--" + name.replace("_", "-"),
                    f"must be a finite number {'in [0, 1]' if accuracy else '>= 0'}, got {value}",
                )

    def limits(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in _LIMITS if getattr(self, name) is not None}

    def describe(self) -> str:
        parts = [f"{_LIMITS[n][0]} {'<=' if n.startswith('max') else '>='} {v:g}" for n, v in self.limits().items()]
        return ", ".join(parts) or "no constraints"


@dataclass(frozen=True)
class TrialRun:
    """One trial as selection sees it: its latest value of each metric and its params as logged (strings)."""

    run_id: str
    name: str
    outcome: str  # an Outcome, or the MLflow status of a run still open (RUNNING)
    params: dict[str, str]
    metrics: dict[str, float]
    model_uri: str | None
    error: str | None = None  # why it failed or diverged, as tagged on its run
    baseline: bool = False  # a scratch baseline: the student without the teacher

    @property
    def is_candidate(self) -> bool:
        """Only a trial that ran its whole budget and logged its student can be served."""
        return self.outcome == Outcome.FINISHED and bool(self.model_uri)


def pareto_front(points: list[tuple[float, ...]], senses: tuple[str, ...]) -> list[int]:
    """Indices of the points no other point dominates (as good in every objective, better in one).

    Equal points do not dominate each other, so duplicates on the front are all kept.
    """
    if any(sense not in ("max", "min") for sense in senses) or any(len(p) != len(senses) for p in points):
        raise ValueError(f"every point needs one value per sense, and senses are 'max' or 'min': {senses}")
    signed = [tuple(v if s == "max" else -v for v, s in zip(p, senses, strict=True)) for p in points]

    def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))

    return [i for i, p in enumerate(signed) if not any(dominates(q, p) for q in signed)]


def satisfies(metrics: dict[str, float], constraints: Constraints, precision: str = "fp32") -> bool:
    """A missing metric fails its limit: a run whose latency was never measured cannot prove it is fast.
    At int8, the limits judge the int8 figures (accuracy and latency as shipped)."""

    def meets(name: str, limit: float) -> bool:
        metric, holds = at_precision(_LIMITS[name][0], precision), _LIMITS[name][1]
        return metric in metrics and holds(metrics[metric], limit)

    return all(meets(name, limit) for name, limit in constraints.limits().items())


def rank(runs: list[TrialRun], metric: str, mode: str) -> list[TrialRun]:
    """Best first: candidates before the rest, then `metric`, then lower latency, then fewer params."""
    sign = -1.0 if mode == "max" else 1.0

    def key(run: TrialRun) -> tuple:
        value = run.metrics.get(metric, math.nan)
        return (
            not run.is_candidate,
            math.isnan(value),
            0.0 if math.isnan(value) else sign * value,
            run.metrics.get("latency_ms", math.inf),
            run.metrics.get("params", math.inf),
        )

    return sorted(runs, key=key)


def front_metrics(precision: str = "fp32") -> tuple[str, ...]:
    return tuple(at_precision(metric, precision) for metric in FRONT_METRICS)


def front_of(candidates: list[TrialRun], precision: str = "fp32") -> list[TrialRun]:
    """The Pareto front of accuracy, latency and size (at `precision`), among candidates that logged all three."""
    metrics = front_metrics(precision)
    placed = [run for run in candidates if all(m in run.metrics for m in metrics)]
    points = [tuple(run.metrics[m] for m in metrics) for run in placed]
    return [placed[i] for i in pareto_front(points, FRONT_SENSES)]


def hypervolume(points: list[tuple[float, ...]], senses: tuple[str, ...], reference: tuple[float, ...]) -> float:
    """The volume that `points` dominate up to `reference` (the worst acceptable value of each objective).

    Exact, by slicing along the first objective (O(n^d), n points of d objectives: a sweep's front has tens).
    A point no better than the reference in some objective adds nothing.
    """
    if any(sense not in ("max", "min") for sense in senses) or len(reference) != len(senses):
        raise ValueError(f"the reference needs one value per sense, and senses are 'max' or 'min': {senses}")
    pareto_front(points, senses)  # the same checks on the points

    def minimised(values: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(-v if s == "max" else v for v, s in zip(values, senses, strict=True))

    ref = minimised(reference)
    inside = [p for p in map(minimised, points) if all(x < r for x, r in zip(p, ref, strict=True))]
    return _dominated(inside, ref)


def _dominated(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """The volume of the union of the boxes [p, ref] (every objective minimised, every p below ref)."""
    if not points:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in points)
    cuts = [*sorted({p[0] for p in points}), ref[0]]
    return math.fsum(
        (upper - lower) * _dominated([p[1:] for p in points if p[0] <= lower], ref[1:])
        for lower, upper in itertools.pairwise(cuts)
    )


@dataclass(frozen=True)
class FrontSummary:
    """A front as the parent run logs it: its size and the share of the reference box it dominates."""

    size: int
    hypervolume: float  # in [0, 1]: of the box accuracy [0, 1] x latency [0, ref] x params [0, ref]
    reference: tuple[float, float, float]  # (accuracy, latency_ms, params): 0 and the limits or the worst seen


def summarise_front(
    front: list[TrialRun], feasible: list[TrialRun], constraints: Constraints, precision: str = "fp32"
) -> FrontSummary | None:
    """The front's hypervolume against the budget's limits where given, else the worst values among the
    `feasible` students, REFERENCE_MARGIN beyond (at the worst value itself, the student there would add
    nothing, and a front of one would have none); accuracy against 0. Normalised by the box from the ideal
    student (accuracy 1, no latency, no params) to the reference, so sweeps of one budget compare. None
    without a placed student."""
    accuracy, latency, params = front_metrics(precision)
    placed = [run.metrics for run in feasible if all(m in run.metrics for m in (accuracy, latency, params))]
    if not front or not placed:
        return None

    def limit(given: float | None, metric: str) -> float:
        return given if given is not None else (1 + REFERENCE_MARGIN) * max(m[metric] for m in placed)

    reference = (0.0, limit(constraints.max_latency_ms, latency), limit(constraints.max_params, params))
    points = [(run.metrics[accuracy], run.metrics[latency], run.metrics[params]) for run in front]
    box = 1.0 * reference[1] * reference[2]
    volume = hypervolume(points, FRONT_SENSES, reference) / box if box > 0 else 0.0
    return FrontSummary(len(front), volume, reference)
