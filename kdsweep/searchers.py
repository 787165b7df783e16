"""Ray Tune's search algorithms by name (`searcher.name`): one decorator, one dict, `list_searchers()`.

An entry builds the Tune object, as Tune ships it, and declares what it supports: `grid:` domains,
several objectives, and whether it is adaptive. The sweep hands a searcher its space in the form it
takes and adds the scratch baselines around it (`sweep/tuner.py`): the trials of one that draws up
front (adaptive=False) are drawn before any runs, each new student's baseline in front of its first
trial; an adaptive one, which draws as it learns, is wrapped in `sweep/baselines.BaselinesFirst` and
never sees a baseline. The config validates names and needs here without starting Ray: the builders
import it when they run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kdsweep.registry import Registry

if TYPE_CHECKING:
    from ray.tune.search import SearchAlgorithm, Searcher

    from kdsweep.feasibility import Feasibility


@dataclass(frozen=True)
class SearchSettings:
    """What a searcher is built from: the objectives, the `searcher:` section and the space."""

    metrics: list[str]  # one per objective, the primary first
    modes: list[str]
    seed: int | None
    max_concurrent: int  # 0: as many trials at once as resources allow
    # adaptive=False: every trial's Tune config, drawn up front (grids expanded), baselines among them
    points: list[dict[str, Any]] | None = None
    # adaptive=True: the space as a define-by-run function of an Optuna trial (kdsweep.space.OptunaSpace)
    define_by_run: Callable[[Any], None] | None = None
    # adaptive=True, with a deploy budget: each draw's cost against it, for the searcher to learn where
    # the feasible region is (random/grid get only feasible `points`)
    feasibility: Feasibility | None = None


SearcherFn = Callable[[SearchSettings], "Searcher | SearchAlgorithm"]


@dataclass(frozen=True)
class SearcherEntry:
    build: SearcherFn
    adaptive: bool  # draws as it learns from results (define-by-run); else every trial is drawn up front
    grid: bool  # can search a `grid:` domain
    multi_objective: bool  # can optimise several objectives (a Pareto front)


_SEARCHERS: Registry[SearcherEntry] = Registry("searcher")


def register_searcher(
    name: str, *, adaptive: bool, grid: bool = False, multi_objective: bool = False
) -> Callable[[SearcherFn], SearcherFn]:
    """Decorator: make `build(settings) -> Searcher` selectable as `searcher.name: <name>`."""
    return _SEARCHERS.register(name, lambda build: SearcherEntry(build, adaptive, grid, multi_objective))


def list_searchers(**supports: bool) -> list[str]:
    """Names of the registered searchers, sorted; e.g. `list_searchers(multi_objective=True)` for those
    that support that."""
    return _SEARCHERS.names(lambda entry: all(getattr(entry, k) == v for k, v in supports.items()))


def searcher_entry(name: str) -> SearcherEntry:
    """The registered entry; an unknown name says what exists and what was probably meant."""
    return _SEARCHERS.get(name)


@register_searcher("random", adaptive=False, grid=True)
def random_search(settings: SearchSettings) -> SearchAlgorithm:
    """Tune's variant generator: random draws from every domain, seeded by searcher.seed, times the grid's
    variants when there is a `grid:` domain."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(points_to_evaluate=settings.points, max_concurrent=settings.max_concurrent)


@register_searcher("optuna", adaptive=True, multi_objective=True)
def optuna_tpe(settings: SearchSettings) -> Searcher:
    """Optuna's TPE through Tune's OptunaSearch, define-by-run (conditional parameters only on their
    branch); several objectives make it one multi-objective study. With a deploy budget, TPE gets it as
    Optuna constraints, and infeasible draws are told to the study without training (kdsweep.constrained_optuna)."""
    from ray.tune.search.optuna import OptunaSearch

    several = len(settings.metrics) > 1
    objectives = {
        "space": settings.define_by_run,
        "metric": settings.metrics if several else settings.metrics[0],
        "mode": settings.modes if several else settings.modes[0],
    }
    if settings.feasibility is None:
        return OptunaSearch(**objectives, seed=settings.seed)
    from kdsweep.constrained_optuna import ConstrainedOptunaSearch

    return ConstrainedOptunaSearch(settings.feasibility, settings.seed, **objectives)
