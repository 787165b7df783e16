"""The deployment budget as part of the search: which student architectures a sweep can train at all.

Params and FLOPs depend only on a trial's student architecture (student, width) and the data's input
shape, latency on the same plus the target (runtime, threads, precision): one figure per architecture,
known before any trial, so a configuration over a limit is INFEASIBLE and never takes a trial slot.
Pure functions: the sweep measures (kdsweep.sweep.cost_stage), these decide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from kdsweep.errors import ConfigError
from kdsweep.models import ModelCost
from kdsweep.trial import TrialConfig

# (limit field of deploy:, the figure it bounds, its unit in messages)
LIMITS = (("max_latency_ms", "latency_ms", " ms"), ("max_params", "params", ""), ("max_flops", "flops", ""))


class Limits(Protocol):
    """The deploy budget (kdsweep.config.Deploy): None, no limit."""

    max_latency_ms: float | None
    max_params: int | None
    max_flops: int | None


@dataclass(frozen=True, order=True)
class Architecture:
    """What a student's cost depends on, besides the data's input shape."""

    student: str
    width: int | None = None

    @property
    def name(self) -> str:
        return self.student + (f"-w{self.width}" if self.width else "")


def architecture_of(config: TrialConfig) -> Architecture:
    return Architecture(config.student, config.width)


def violations(cost: ModelCost, deploy: Limits) -> list[str]:
    """Each limit `cost` exceeds, as 'latency_ms 1.92 ms > max_latency_ms 1.5 ms'; empty: feasible."""
    out = []
    for limit, figure, unit in LIMITS:
        bound, value = getattr(deploy, limit), getattr(cost, figure)
        if bound is not None and value > bound:
            out.append(f"{figure} {_show(value)}{unit} > {limit} {_show(bound)}{unit}")
    return out


def constraint_values(cost: ModelCost, deploy: Limits) -> dict[str, float]:
    """Optuna's convention, by limit set: <= 0 within it, > 0 over it (the relative excess)."""
    return {
        limit: getattr(cost, figure) / getattr(deploy, limit) - 1.0
        for limit, figure, _ in LIMITS
        if getattr(deploy, limit) is not None
    }


def check_some_fit(costs: dict[Architecture, ModelCost], deploy: Limits) -> None:
    """Bad input when no architecture of the space meets every limit: the limit named, with the smallest figure."""
    if any(not violations(cost, deploy) for cost in costs.values()):
        return
    for limit, figure, unit in LIMITS:
        bound = getattr(deploy, limit)
        if bound is None:
            continue
        arch, cost = min(costs.items(), key=lambda item: getattr(item[1], figure))
        if getattr(cost, figure) > bound:
            raise ConfigError(
                f"deploy.{limit}",
                f"{_show(bound)}{unit} excludes every student of the space: the smallest {figure} is "
                f"{arch.name}'s {_show(getattr(cost, figure))}{unit}",
            )
    raise ConfigError(
        "deploy",
        "no student of the space meets every limit at once: "
        + "; ".join(f"{arch.name}: {', '.join(violations(cost, deploy))}" for arch, cost in costs.items()),
    )


@dataclass(frozen=True)
class Feasibility:
    """A sampled Tune config -> its architecture's cost and whether it fits; picklable (Tune saves searchers)."""

    to_trial: Callable[[dict[str, Any]], TrialConfig]  # the sweep's TrialTemplate.trial
    costs: dict[Architecture, ModelCost]
    deploy: Limits

    def cost(self, sampled: dict[str, Any]) -> ModelCost:
        return self.costs[architecture_of(self.to_trial(sampled))]

    def violations(self, sampled: dict[str, Any]) -> list[str]:
        return violations(self.cost(sampled), self.deploy)

    def constraints(self, sampled: dict[str, Any]) -> dict[str, float]:
        return constraint_values(self.cost(sampled), self.deploy)


@dataclass(frozen=True)
class Draws:
    """What random/grid search trains, and the infeasible draws it skipped (replaced by further draws)."""

    points: list[dict[str, Any]]
    skipped: list[dict[str, Any]]


def feasible_draws(
    draw: Callable[[np.random.RandomState], Iterable[dict[str, Any]]],
    num_samples: int,
    seed: int | None,
    fits: Callable[[dict[str, Any]], bool],
    grid: bool = False,
    max_tries: int = 1000,
) -> Draws:
    """`num_samples` samples of `draw` (one sample: a point, or a grid's points) from one seeded stream, each
    infeasible point skipped. Without a grid an infeasible draw is replaced by the next draw (so the feasible
    points are the unbudgeted stream's, in order, infeasible ones removed); a grid's infeasible points are
    dropped, not replaced (the grid is what was asked for)."""
    rng = np.random.RandomState(seed)
    points: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    samples = tries = 0
    while samples < num_samples and tries < max_tries:
        tries += 1
        drawn = [(point, fits(point)) for point in draw(rng)]
        kept = [point for point, fit in drawn if fit]
        points += kept
        skipped += [point for point, fit in drawn if not fit]
        samples += 1 if grid or kept else 0
    return Draws(points, skipped)


def describe_skipped(skipped: list[dict[str, Any]], feasibility: Feasibility) -> str:
    """The output's count line: how many draws the budget skipped, by architecture."""
    if not skipped:
        return "deploy budget: every draw was feasible"
    names = [architecture_of(feasibility.to_trial(point)).name for point in skipped]
    counts = ", ".join(f"{name} x{names.count(name)}" for name in sorted(set(names)))
    return f"deploy budget: skipped {len(skipped)} infeasible draw(s), never trained ({counts})"


def _show(value: float) -> str:
    return f"{value:.3g}" if isinstance(value, float) else f"{value:,}"
