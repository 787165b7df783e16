"""Scratch baselines in the sweep's own Tune run: every distinct student it trains is also trained once
without the teacher, so that each distillation trial can say what the teacher bought it.

Random and grid search are not adaptive: their trials are drawn up front (as Tune's generator would
draw them, from `searcher.seed`), and each new student's baseline goes in front of its first trial.
Optuna draws as it learns: `BaselinesFirst` holds back a trial whose student has no baseline yet, runs
the baseline under that trial id, and hands the held-back config to the next one; Optuna never sees a
baseline's result (it is not a point of the space). A scheduler that stops trials early (ASHA,
HyperBand: `kdsweep.schedulers`) never stops or pauses a baseline (`BaselinesRunOut`): an early-stopped
trial is compared with its baseline at the epoch where it stopped, so the baseline must report every
epoch, and its results must not move the scheduler's cutoffs for the distillation trials.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.variant_generator import generate_variants

from kdsweep.gain import versus_baseline
from kdsweep.space import TrialTemplate, baseline_key, is_baseline


def drawn_points(param_space: dict[str, Any], num_samples: int, seed: int | None) -> list[dict[str, Any]]:
    """The Tune configs random/grid search draws: `num_samples` times the grid's variants."""
    rng = np.random.RandomState(seed)
    return [
        spec["config"]
        for _ in range(num_samples)
        for _, spec in generate_variants({"config": param_space}, random_state=rng)
    ]


def with_baselines(
    points: list[dict[str, Any]], template: TrialTemplate, digest: str, done: set[str]
) -> list[dict[str, Any]]:
    """`points` with the baseline of each new student in front of its first trial; `done`: the keys of
    baselines already trained (reused, not scheduled)."""
    scheduled, out = set(done), []
    for point in points:
        baseline = template.baseline_point(point)
        key = baseline_key(template.baseline_of(point), digest)
        if key not in scheduled:
            scheduled.add(key)
            out.append(baseline)
        out.append(point)
    return out


class BaselinesFirst(Searcher):
    """An adaptive searcher with a baseline in front of each new student; FINISHED after `num_samples`
    of the inner searcher's trials (Tune's own sample count would also count the baselines)."""

    def __init__(self, inner: Searcher, template: TrialTemplate, digest: str, done: set[str], num_samples: int):
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner, self.template, self.digest = inner, template, digest
        self.scheduled = set(done)
        self.num_samples, self.drawn = num_samples, 0
        self.held: list[tuple[str, dict[str, Any]]] = []  # (the inner searcher's trial id, its config)
        self.alias: dict[str, str] = {}  # Tune's trial id -> the inner searcher's
        self.baselines: set[str] = set()  # Tune's trial ids of baselines

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str):
        if self.held:
            inner_id, config = self.held.pop(0)
            self.alias[trial_id] = inner_id
            return config
        if self.drawn >= self.num_samples:
            return Searcher.FINISHED
        config = self.inner.suggest(trial_id)
        if config is None or config == Searcher.FINISHED:
            return config
        self.drawn += 1
        baseline = self.template.baseline_point(config)
        key = baseline_key(self.template.baseline_of(config), self.digest)
        if key in self.scheduled:
            return config
        self.scheduled.add(key)
        self.held.append((trial_id, config))
        self.baselines.add(trial_id)
        return baseline

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self.baselines:
            self.inner.on_trial_result(self.alias.get(trial_id, trial_id), result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.baselines:
            self.inner.on_trial_complete(self.alias.get(trial_id, trial_id), result, error)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__dict__, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))


class BaselinesRunOut(TrialScheduler):
    """A scheduler that stops trials early (ASHA, HyperBand, ...), for the distillation trials only:
    baselines run their whole budget outside its rungs and brackets, and Tune starts them when the
    scheduler has nothing of its own to start (HyperBand picks only from its brackets).

    It also hands the scheduler a controller that saves what it stops while PAUSED (synchronous
    HyperBand pauses a trial at each milestone until its bracket gets there), see `_SavesPausedStops`.
    """

    def __init__(self, inner: TrialScheduler) -> None:
        super().__init__()
        self.inner = inner

    @property
    def metric(self):
        return self.inner.metric

    @property
    def supports_buffered_results(self) -> bool:
        return self.inner.supports_buffered_results

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller, trial) -> None:
        if not is_baseline(trial.config):
            self.inner.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if is_baseline(trial.config):
            return TrialScheduler.CONTINUE
        return self.inner.on_trial_result(_SavesPausedStops(tune_controller), trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if not is_baseline(trial.config):
            self.inner.on_trial_complete(_SavesPausedStops(tune_controller), trial, result)

    def on_trial_error(self, tune_controller, trial) -> None:
        if not is_baseline(trial.config):
            self.inner.on_trial_error(_SavesPausedStops(tune_controller), trial)

    def on_trial_remove(self, tune_controller, trial) -> None:
        if not is_baseline(trial.config):
            self.inner.on_trial_remove(_SavesPausedStops(tune_controller), trial)

    def choose_trial_to_run(self, tune_controller):
        chosen = self.inner.choose_trial_to_run(tune_controller)
        if chosen is not None:
            return chosen
        pending = (t for t in tune_controller.get_trials() if t.status == Trial.PENDING and is_baseline(t.config))
        return next(pending, None)

    def debug_string(self) -> str:
        return self.inner.debug_string()


class _SavesPausedStops:
    """Tune's controller, as a scheduler sees it, but for one repair: Tune (2.60) does not save the new
    status of a trial it stops while PAUSED (the trial has no actor, and `_schedule_trial_stop` returns
    before marking it for the experiment state), so the state keeps PAUSED, which the sweep reads, as
    for a trial left when the sweep was interrupted, as INTERRUPTED. Stopping marks it to be saved."""

    def __init__(self, controller) -> None:
        self._controller = controller

    def stop_trial(self, trial) -> None:
        paused = trial.status == Trial.PAUSED
        self._controller.stop_trial(trial)
        if paused:  # the controller itself, not the restricted view Tune hands schedulers
            getattr(self._controller, "_tune_controller", self._controller)._mark_trial_to_checkpoint(trial)

    def __getattr__(self, name: str):
        return getattr(self._controller, name)


def compare_with_baselines(
    rows: list[dict[str, Any]],
    trials,
    frames: dict[str, Any],
    template: TrialTemplate,
    digest: str,
    earlier: dict[str, dict[int, float]],
    teachers: dict[str, float],
    resolution: float,
) -> None:
    """Each distillation row gets kd_gain and gap_closed (in its metrics) and `vs_scratch` (the epoch,
    the baseline's accuracy there, or why there is no comparison). `frames`: Tune's results per trial
    id; `earlier`: baselines of earlier sweeps of the experiment, by key; `teachers`: each teacher's
    val_accuracy by name. A baseline serves every teacher: gap_closed is per (teacher, student) pair."""
    configs = {trial.trial_id: trial.config or {} for trial in trials}
    histories = dict(earlier)
    for row in rows:
        frame = frames.get(row["trial_id"])
        if row["role"] == "baseline" and frame is not None and "val_accuracy" in frame:
            key = baseline_key(template.baseline_of(configs[row["trial_id"]]), digest)
            histories[key] = dict(zip(frame["epoch"].astype(int), frame["val_accuracy"], strict=True))
    for row in rows:
        metrics = row["metrics"]
        if row["role"] == "baseline" or "val_accuracy" not in metrics:
            continue
        history = histories.get(baseline_key(template.baseline_of(configs[row["trial_id"]]), digest))
        if history is None:
            row["vs_scratch"] = {"note": "its baseline did not report"}
            continue
        teacher = teachers[template.trial(configs[row["trial_id"]]).teacher]
        compared = versus_baseline(history, metrics["val_accuracy"], int(metrics["epoch"]), teacher, resolution)
        if isinstance(compared, str):
            row["vs_scratch"] = {"note": compared}
            continue
        metrics["kd_gain"] = compared.kd_gain
        if compared.gap_closed is not None:
            metrics["gap_closed"] = compared.gap_closed
        row["vs_scratch"] = {
            "epoch": compared.epoch,
            "baseline_val_accuracy": compared.baseline,
            "teacher_val_accuracy": teacher,
            "note": compared.note,
        }
