"""Confirmation over seeds, the one home of the feature: once the search is over, its best configurations
run again with other seeds, and so do the scratch baselines of their students, as trials of the same Tune
run (the same MLflow parent), so that a ranking and a `kd_gain` rest on more than one seed's luck.

Which configurations: the `confirm.top` best trials by the primary objective among those that FINISHED,
distilled or scratch, one per configuration (a trial's settings, its seed aside); ties go to the trial
made first. A confirmation trial is the Tune config of the trial it confirms with `seed` set and the
marker `confirm: true` (kdsweep.sweep.baselines.CONFIRM); the seeds of a configuration are its search
trial's s0, then s0+1, ..., s0+N-1 (N = `confirm.seeds`, the search trial counting as one). A distilled
configuration's scratch baseline gets the same new seeds, so each seed's `kd_gain` compares a pair; a
baseline already trained with a seed (in this sweep, or reused from the experiment) is not run again.

Only the results can tell which configurations, so the confirmation trials are made once every search
trial has ended, by the sweep's search algorithm: for trials drawn up front (random, grid) by
`ConfirmedVariants`, Tune's own generator of them; for an adaptive searcher (Optuna) by `ConfirmLast`.
Tune's `num_samples` never counts them, a scheduler never stops or pauses them (`BaselinesRunOut`), and
what has been confirmed is in Tune's experiment state: `--resume` runs only the missing ones.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from ray.tune.search import SearchAlgorithm, Searcher
from ray.tune.search.basic_variant import BasicVariantGenerator

from kdsweep import configurations
from kdsweep.config import Objective, SweepConfig
from kdsweep.outcome import Outcome, trial_outcome
from kdsweep.space import TrialTemplate
from kdsweep.sweep.baselines import (
    CONFIRM,
    Baselines,
    baseline_key,
    baseline_point,
    is_baseline,
    trial_config,
)
from kdsweep.sweep.trainable import run_name
from kdsweep.sweep.wrapping import WrappingSearcher

# The Tune config keys a confirmation trial sets beyond what the searcher draws.
CONFIRMATION_KEYS = ("seed", CONFIRM)


def configuration_key(template: TrialTemplate, point: dict[str, Any]) -> str:
    """Names the configuration a Tune config of the sweep trains, as selection names it
    (kdsweep.configurations: its kind and settings, its seed, threads and latency timing aside)."""
    return configurations.configuration_key(trial_config(template, point).model_dump(), is_baseline(point))


def top_configurations(
    points: list[dict[str, Any]], results: list[float | None], template: TrialTemplate, top: int, mode: str
) -> list[int]:
    """The indices of the best `top` of `points` (Tune configs, in the order their trials were made), one per
    configuration, best first. `results`: each one's primary objective if it FINISHED, else None; ties go to
    the trial made first."""
    sign = -1 if mode == "max" else 1
    finished = sorted((i for i, value in enumerate(results) if value is not None), key=lambda i: (sign * results[i], i))
    chosen, seen = [], set()
    for i in finished:
        key = configuration_key(template, points[i])
        if key not in seen:
            seen.add(key)
            chosen.append(i)
    return chosen[:top]


def confirmation_points(
    chosen: list[dict[str, Any]], template: TrialTemplate, seeds: int, baselines: Baselines | None, done: set[str]
) -> list[dict[str, Any]]:
    """The Tune configs that confirm the `chosen` configurations (best first): each again with the seeds
    s0+1 .. s0+seeds-1 (s0: its own), seed by seed, a distilled one's scratch baseline with the same seed in
    front of it when the sweep has `baselines`. `done`: keys of the baselines already trained (in this sweep
    or reused from the experiment), which, like a baseline two configurations share, are not scheduled again."""
    scheduled, points = set(done), []
    for offset in range(1, seeds):
        for point in chosen:
            again = {**point, "seed": trial_config(template, point).seed + offset, CONFIRM: True}
            baseline = [baseline_point(template, again)] if baselines and not is_baseline(point) else []
            for candidate in [*baseline, again]:
                if baselines and is_baseline(candidate):
                    key = baseline_key(trial_config(template, candidate), baselines.digest)
                    if key in scheduled:
                        continue
                    scheduled.add(key)
                points.append(candidate)
    return points


@dataclass
class Confirmation:
    """What to confirm and the search trials it is chosen from: every search trial's Tune config, in the
    order they were made, and, once it ended, its primary objective if it FINISHED (None otherwise)."""

    template: TrialTemplate
    top: int
    seeds: int
    epochs: int  # the epoch budget: a trial that reached it FINISHED
    objective: Objective  # the primary one
    baselines: Baselines | None  # the sweep's scratch baselines: confirmed students get theirs with each seed
    made: dict[str, dict[str, Any]] = field(default_factory=dict)  # search trial id -> its Tune config
    results: dict[str, float | None] = field(default_factory=dict)  # ended search trial id -> objective

    def trial_made(self, trial_id: str, point: dict[str, Any]) -> None:
        self.made[trial_id] = dict(point)

    def trial_ended(self, trial_id: str, result: dict | None, error: bool) -> None:
        last = result or {}
        value = last.get(self.objective.metric)
        finished = trial_outcome(last, error, self.epochs) is Outcome.FINISHED
        usable = finished and isinstance(value, (int, float)) and math.isfinite(value)
        self.results[trial_id] = float(value) if usable else None

    def pass_result(self, inner, trial_id: str, result: dict) -> None:
        """A search trial's result goes to `inner`, the search algorithm that made it; a confirmation trial's,
        not a new point of its space, nowhere."""
        if trial_id in self.made:
            inner.on_trial_result(trial_id, result)

    def pass_end(self, inner, trial_id: str, result: dict | None, error: bool) -> bool:
        """A search trial's end is recorded and goes to `inner`; False for a confirmation trial."""
        if trial_id not in self.made:
            return False
        self.trial_ended(trial_id, result, error)
        inner.on_trial_complete(trial_id, result=result, error=error)
        return True

    @property
    def search_over(self) -> bool:
        """Every search trial made so far has ended (a trial HyperBand paused has not)."""
        return self.made.keys() <= self.results.keys()

    def points(self, log=print) -> list[dict[str, Any]]:
        """The confirmation trials' Tune configs, said in one line (which configurations, how many trials)."""
        ids = list(self.made)
        made = [self.made[trial_id] for trial_id in ids]
        results = [self.results.get(trial_id) for trial_id in ids]
        chosen = top_configurations(made, results, self.template, self.top, self.objective.mode)
        done: set[str] = set()
        if self.baselines:  # the experiment's, and the search's own whatever became of them (none is retried here)
            digest = self.baselines.digest
            done = set(self.baselines.done) | {
                baseline_key(trial_config(self.template, p), digest) for p in made if is_baseline(p)
            }
        points = confirmation_points([made[i] for i in chosen], self.template, self.seeds, self.baselines, done)
        log(self._describe(chosen, ids, made, results, points))
        return points

    def _describe(self, chosen: list[int], ids: list[str], made: list[dict], results: list, points: list) -> str:
        if not chosen:
            return "confirmation: no trial FINISHED, nothing to confirm"
        names = ", ".join(
            f"{run_name(trial_config(self.template, made[i]), ids[i], is_baseline(made[i]))} "
            f"({self.objective.metric} {results[i]:.4f})"
            for i in chosen
        )
        fewer = f" (confirm.top is {self.top}, but only {len(chosen)} FINISHED)" if len(chosen) < self.top else ""
        scratch = sum(is_baseline(point) for point in points)
        return (
            f"confirmation: the top {len(chosen)} configurations{fewer} with {self.seeds - 1} more seed(s) each, "
            f"{len(points)} trials ({scratch} of them scratch): {names}"
        )


def plan_confirmation(config: SweepConfig, template: TrialTemplate, baselines: Baselines | None) -> Confirmation | None:
    """The sweep's confirmation (`confirm:`), or None when it has none (top 0, or a single seed)."""
    if config.confirm.top == 0 or config.confirm.seeds <= 1:
        return None
    return Confirmation(
        template, config.confirm.top, config.confirm.seeds, config.budget.epochs, config.objectives[0], baselines
    )


class ConfirmLast(WrappingSearcher):
    """An adaptive searcher's `num_samples` trials (and any baselines it puts in front of them), then, once
    every one has ended, the confirmation trials; FINISHED after those. The inner searcher never sees a
    confirmation trial (it is not a new point of its space)."""

    def __init__(self, inner: Searcher, confirmation: Confirmation, num_samples: int) -> None:
        super().__init__(inner)
        self.confirmation, self.num_samples, self.drawn = confirmation, num_samples, 0
        self.queue: list[dict[str, Any]] | None = None  # the confirmation trials not yet suggested, once planned

    def suggest(self, trial_id: str):
        if self.queue is None and self.drawn < self.num_samples:
            point = self.inner.suggest(trial_id)
            if point is None:
                return None
            if point != Searcher.FINISHED:
                self.confirmation.trial_made(trial_id, point)
                self.drawn += not is_baseline(point)  # num_samples counts the searcher's own trials
                return point
            self.drawn = self.num_samples
        if self.queue is None:
            if not self.confirmation.search_over:
                return None
            self.queue = self.confirmation.points()
        return self.queue.pop(0) if self.queue else Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.confirmation.pass_result(self.inner, trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.confirmation.pass_end(self.inner, trial_id, result, error)


class ConfirmedVariants(BasicVariantGenerator):
    """The trials drawn up front (`inner`: Tune's generator for random and grid search), then, once every
    one has ended, the confirmation trials, made by this generator itself. A BasicVariantGenerator so that
    Tune makes trials as eagerly as for `inner` (HyperBand needs them all at once); its state and the
    inner one's are saved side by side in Tune's experiment state."""

    CKPT_FILE_TMPL = "confirmed-variants-state-{}.json"  # not the inner generator's file

    def __init__(self, inner: SearchAlgorithm, confirmation: Confirmation, max_concurrent: int) -> None:
        super().__init__(max_concurrent=max_concurrent)
        self.inner, self.confirmation = inner, confirmation
        self.experiments = None  # as Tune gave them: what the confirmation trials are made from
        self.confirming = False

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def add_configurations(self, experiments) -> None:
        self.experiments = experiments
        self.inner.add_configurations(experiments)

    def next_trial(self):
        if not self.confirming:
            trial = self.inner.next_trial()
            if trial is not None:
                self.confirmation.trial_made(trial.trial_id, trial.config)
                return trial
            if not (self.inner.is_finished() and self.confirmation.search_over):
                return None
            self.confirming = True
            points = self.confirmation.points()
            if not points:
                self.set_finished()
                return None
            self._points_to_evaluate = points  # what add_configurations makes trials of, in order
            # Numbered on from the search's trials: a generator made in the same instant as `inner` has its
            # trial id prefix (uuid1's clock), and Tune hangs on a trial id it already has.
            self._total_samples = self.inner.total_samples
            super().add_configurations(self._experiment(len(points)))
        return super().next_trial()

    def _experiment(self, num_samples: int):
        """Tune's experiment with as many samples as confirmation trials: beyond its points, the generator
        would draw from the (keys-only) space."""
        [experiment] = self.experiments if isinstance(self.experiments, list) else [self.experiments]
        again = copy.copy(experiment)
        again.spec = {**experiment.spec, "num_samples": num_samples}
        return again

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.confirmation.pass_result(self.inner, trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if not self.confirmation.pass_end(self.inner, trial_id, result, error):
            super().on_trial_complete(trial_id, result, error)  # a confirmation trial: this generator's own

    def is_finished(self) -> bool:
        return self.confirming and super().is_finished()

    def get_state(self) -> dict:
        state = super().get_state()
        del state["inner"]  # saved in its own file
        return state

    def save_to_dir(self, dirpath: str, session_str: str) -> None:
        self.inner.save_to_dir(dirpath, session_str)
        super().save_to_dir(dirpath, session_str)

    def restore_from_dir(self, dirpath: str) -> None:
        self.inner.restore_from_dir(dirpath)
        super().restore_from_dir(dirpath)
