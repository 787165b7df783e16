"""Ray Tune's trial schedulers by name (`scheduler.name`): one decorator, one dict, `list_schedulers()`.

An entry builds the Tune object, as Tune ships it, and declares what the sweep must know about it:
whether it stops or pauses trials (then `sweep/baselines.BaselinesRunOut` keeps the scratch baselines
out of it), whether it reads `scheduler.grace_period` (then the config checks it against
`budget.epochs`), and whether it is synchronous: Tune's HyperBand puts into a bracket the trials that
exist when it is being filled, and a finished trial leaves it, so every trial must be created at
once (a searcher that draws up front, no `searcher.max_concurrent`; the resources bound how many run).
The config validates names and needs here without starting Ray: the builders import it when they run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kdsweep.registry import Registry

if TYPE_CHECKING:
    from ray.tune.schedulers import TrialScheduler


@dataclass(frozen=True)
class SchedulerSettings:
    """What a scheduler is built from: the primary objective, the epoch budget and the `scheduler:` section."""

    metric: str
    mode: str  # "max" or "min"
    max_t: int  # budget.epochs: no trial runs longer
    grace_period: int  # epochs before a trial can be stopped (for entries with grace_period=True)
    reduction_factor: float  # eta: 1/eta of the trials at a rung go on to the next


SchedulerFn = Callable[[SchedulerSettings], "TrialScheduler"]


@dataclass(frozen=True)
class SchedulerEntry:
    build: SchedulerFn
    stops_early: bool  # stops or pauses trials before budget.epochs: baselines are kept out of it
    grace_period: bool  # reads scheduler.grace_period, which must then fit in budget.epochs
    synchronous: bool  # brackets wait for all their trials: every trial must be created at once


_SCHEDULERS: Registry[SchedulerEntry] = Registry("scheduler")


def register_scheduler(
    name: str, *, stops_early: bool, grace_period: bool = False, synchronous: bool = False
) -> Callable[[SchedulerFn], SchedulerFn]:
    """Decorator: make `build(settings) -> TrialScheduler` selectable as `scheduler.name: <name>`."""
    return _SCHEDULERS.register(name, lambda build: SchedulerEntry(build, stops_early, grace_period, synchronous))


def list_schedulers() -> list[str]:
    return _SCHEDULERS.names()


def scheduler_entry(name: str) -> SchedulerEntry:
    """The registered entry; an unknown name says what exists and what was probably meant."""
    return _SCHEDULERS.get(name)


@register_scheduler("asha", stops_early=True, grace_period=True)
def asha(settings: SchedulerSettings) -> TrialScheduler:
    """Asynchronous successive halving: a trial at a rung goes on if it is in the top 1/eta of the results
    recorded there so far; no trial waits for another."""
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        metric=settings.metric,
        mode=settings.mode,
        max_t=settings.max_t,
        grace_period=settings.grace_period,
        reduction_factor=settings.reduction_factor,
    )


@register_scheduler("hyperband", stops_early=True, synchronous=True)
def hyperband(settings: SchedulerSettings) -> TrialScheduler:
    """Synchronous HyperBand: brackets that start trials at budget.epochs / eta^s epochs; at each
    milestone a bracket's trials wait (paused, from their checkpoint) until all have reached it, and
    the best 1/eta of the bracket's size go on."""
    from ray.tune.schedulers import HyperBandScheduler

    return HyperBandScheduler(
        metric=settings.metric,
        mode=settings.mode,
        max_t=settings.max_t,
        reduction_factor=settings.reduction_factor,
    )


@register_scheduler("none", stops_early=False)
def no_early_stopping(settings: SchedulerSettings) -> TrialScheduler:
    """Every trial runs budget.epochs, in the order the searcher drew them."""
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()
