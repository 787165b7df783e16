"""Choosing among finished students, as pure functions: constraints, the Pareto front, the ranking.

Trials are compared on the validation split only; nothing here reads data or MLflow.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

from kdsweep.errors import ConfigError
from kdsweep.outcome import Outcome

FRONT_METRICS = ("val_accuracy", "latency_ms", "params")
FRONT_SENSES = ("max", "min", "min")


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


def satisfies(metrics: dict[str, float], constraints: Constraints) -> bool:
    """A missing metric fails its limit: a run whose latency was never measured cannot prove it is fast."""
    return all(
        _LIMITS[n][0] in metrics and _LIMITS[n][1](metrics[_LIMITS[n][0]], v) for n, v in constraints.limits().items()
    )


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


def front_of(candidates: list[TrialRun]) -> list[TrialRun]:
    """The Pareto front of accuracy, latency and size, among candidates that logged all three."""
    placed = [run for run in candidates if all(m in run.metrics for m in FRONT_METRICS)]
    points = [tuple(run.metrics[m] for m in FRONT_METRICS) for run in placed]
    return [placed[i] for i in pareto_front(points, FRONT_SENSES)]
