"""Scratch baselines, the one home of the feature: every distinct student a sweep trains is also trained
once without the teacher, in the sweep's own Tune run, so that each distillation trial can say what the
teacher bought it (kdsweep.gain's kd_gain and gap_closed).

A baseline is a Tune config like any other, marked `baseline: true`: its trial is the same student
trained without the teacher (`TrialConfig.scratch`); `trial_config` turns any Tune config of the sweep
into its trial. Trials whose students train alike share one baseline (`baseline_key`), which a later
sweep of the experiment reuses from MLflow (the run's `kdsweep.baseline` tag) instead of training it again.

Random and grid search are not adaptive: their trials are drawn up front (as Tune's generator would
draw them, from `searcher.seed`), and each new student's baseline goes in front of its first trial.
Optuna draws as it learns: `BaselinesFirst` holds back a trial whose student has no baseline yet, runs
the baseline under that trial id, and hands the held-back config to the next one; Optuna never sees a
baseline's result (it is not a point of the space). A scheduler that stops trials early (ASHA,
HyperBand: `kdsweep.schedulers`) never stops or pauses a baseline (`BaselinesRunOut`): an early-stopped
trial is compared with its baseline at the epoch where it stopped, so the baseline must report every
epoch, and its results must not move the scheduler's cutoffs for the distillation trials. The same holds
for the confirmation trials (kdsweep.sweep.confirm, marked `confirm: true`): a seed cut short measures
nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.variant_generator import generate_variants

from kdsweep.feasibility import Draws, feasible_draws
from kdsweep.gain import versus_baseline
from kdsweep.leaderboard import Row, VsScratch
from kdsweep.space import TrialTemplate
from kdsweep.sweep.wrapping import WrappingSearcher
from kdsweep.tracking.runs import TAG_BASELINE, TAG_CONFIRMATION, SweepTracker
from kdsweep.trial import DISTILLATION_FIELDS, NOT_TRAINING, TrialConfig

BASELINE = "baseline"  # the Tune config key that marks a scratch baseline
CONFIRM = "confirm"  # the Tune config key that marks a confirmation trial (kdsweep.sweep.confirm): another seed


def is_baseline(sampled: Mapping[str, Any]) -> bool:
    return bool(sampled.get(BASELINE))


def is_confirmation(sampled: Mapping[str, Any]) -> bool:
    return bool(sampled.get(CONFIRM))


def runs_out(sampled: Mapping[str, Any]) -> bool:
    """A trial that runs its whole budget, outside a scheduler's rungs: a baseline or a confirmation trial."""
    return is_baseline(sampled) or is_confirmation(sampled)


def trial_config(template: TrialTemplate, sampled: dict[str, Any], **extra: Any) -> TrialConfig:
    """The validated trial a Tune config of the sweep stands for: a baseline's is its student without the teacher."""
    point = {k: v for k, v in sampled.items() if k not in (BASELINE, CONFIRM)}
    if is_baseline(sampled):
        return template.trial(point, **extra).scratch()
    return template.trial(point, **extra)


def baseline_point(template: TrialTemplate, sampled: dict[str, Any]) -> dict[str, Any]:
    """The Tune config of the baseline of a sampled trial: the same student and training, no teacher.

    Every searched key is set (a searcher would otherwise sample, or expand a grid over, a missing
    one): the distillation ones to the scratch values, a training setting searched over a
    continuous range (lr, weight decay) to the middle of that range (geometric for loguniform), so
    that trials differing only in it share one baseline.
    """
    scratch = TrialConfig(alpha=0.0)
    point = dict(sampled)
    for name, param in template.search.items():
        if name in DISTILLATION_FIELDS:
            point[name] = getattr(scratch, name)
        elif param.domain == "uniform":
            point[name] = (param.values[0] + param.values[1]) / 2
        elif param.domain == "loguniform":
            point[name] = math.sqrt(param.values[0] * param.values[1])
    return {**point, BASELINE: True}


def baseline_of(template: TrialTemplate, sampled: dict[str, Any]) -> TrialConfig:
    """The trial that is the sampled trial's baseline (a baseline's is itself)."""
    return trial_config(template, baseline_point(template, sampled))


def baseline_key(config: TrialConfig, data_digest: str) -> str:
    """Names one baseline: its training (threads and latency timing aside; its seed included) on one dataset."""
    training = config.model_dump(exclude=set(NOT_TRAINING))
    return hashlib.sha256(json.dumps([training, data_digest], sort_keys=True).encode()).hexdigest()[:16]


def run_tags(sampled: dict[str, Any], config: TrialConfig, data_digest: str) -> dict[str, str]:
    """A baseline's MLflow run is tagged with its key, by which a later sweep of the experiment finds it; a
    confirmation trial's as one."""
    tags = {TAG_BASELINE: baseline_key(config, data_digest)} if is_baseline(sampled) else {}
    return {**tags, TAG_CONFIRMATION: "true"} if is_confirmation(sampled) else tags


@dataclass(frozen=True)
class Baselines:
    """Scratch baselines to schedule: of the sweep's students on the dataset with this digest, but for those done."""

    template: TrialTemplate  # the sweep's: what its Tune configs stand for
    digest: str
    earlier: dict[str, dict[int, float]]  # baselines already trained in the experiment (reused): key -> history

    @property
    def done(self) -> frozenset[str]:
        return frozenset(self.earlier)


def plan_baselines(enabled: bool, template: TrialTemplate, tracker: SweepTracker, data_digest: str) -> Baselines | None:
    """The sweep's baselines when `enabled` (run.baselines, and a teacher to compare with), reusing the
    experiment's finished ones; None when it has none."""
    return Baselines(template, data_digest, tracker.finished_baselines()) if enabled else None


def drawn_points(
    param_space: dict[str, Any],
    num_samples: int,
    seed: int | None,
    fits: Callable[[dict[str, Any]], bool] | None = None,
) -> Draws:
    """The Tune configs random/grid search draws: `num_samples` times the grid's variants, those that do not
    `fit` the deploy budget skipped (and, without a grid, replaced by further draws: kdsweep.feasibility)."""
    grid = any(isinstance(domain, dict) and "grid_search" in domain for domain in param_space.values())

    def draw(rng: np.random.RandomState) -> list[dict[str, Any]]:
        return [spec["config"] for _, spec in generate_variants({"config": param_space}, random_state=rng)]

    return feasible_draws(draw, num_samples, seed, fits or (lambda _: True), grid=grid)


def with_baselines(
    points: list[dict[str, Any]], template: TrialTemplate, digest: str, done: set[str]
) -> list[dict[str, Any]]:
    """`points` with the baseline of each new student in front of its first trial; `done`: the keys of
    baselines already trained (reused, not scheduled)."""
    scheduled, out = set(done), []
    for point in points:
        baseline = baseline_point(template, point)
        key = baseline_key(trial_config(template, baseline), digest)
        if key not in scheduled:
            scheduled.add(key)
            out.append(baseline)
        out.append(point)
    return out


class BaselinesFirst(WrappingSearcher):
    """An adaptive searcher with a baseline in front of each new student; FINISHED after `num_samples`
    of the inner searcher's trials (Tune's own sample count would also count the baselines)."""

    def __init__(self, inner: Searcher, template: TrialTemplate, digest: str, done: set[str], num_samples: int):
        super().__init__(inner)
        self.template, self.digest = template, digest
        self.scheduled = set(done)
        self.num_samples, self.drawn = num_samples, 0
        self.held: list[tuple[str, dict[str, Any]]] = []  # (the inner searcher's trial id, its config)
        self.alias: dict[str, str] = {}  # Tune's trial id -> the inner searcher's
        self.baselines: set[str] = set()  # Tune's trial ids of baselines

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
        baseline = baseline_point(self.template, config)
        key = baseline_key(trial_config(self.template, baseline), self.digest)
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


class BaselinesRunOut(TrialScheduler):
    """A scheduler that stops trials early (ASHA, HyperBand, ...), for the search's distillation trials only:
    baselines and confirmation trials (`runs_out`) run their whole budget outside its rungs and brackets,
    and Tune starts them when the scheduler has nothing of its own to start (HyperBand picks only from its
    brackets).

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
        if not runs_out(trial.config):
            self.inner.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if runs_out(trial.config):
            return TrialScheduler.CONTINUE
        return self.inner.on_trial_result(_SavesPausedStops(tune_controller), trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if not runs_out(trial.config):
            self.inner.on_trial_complete(_SavesPausedStops(tune_controller), trial, result)

    def on_trial_error(self, tune_controller, trial) -> None:
        if not runs_out(trial.config):
            self.inner.on_trial_error(_SavesPausedStops(tune_controller), trial)

    def on_trial_remove(self, tune_controller, trial) -> None:
        if not runs_out(trial.config):
            self.inner.on_trial_remove(_SavesPausedStops(tune_controller), trial)

    def choose_trial_to_run(self, tune_controller):
        chosen = self.inner.choose_trial_to_run(tune_controller)
        if chosen is not None:
            return chosen
        pending = (t for t in tune_controller.get_trials() if t.status == Trial.PENDING and runs_out(t.config))
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
    rows: list[Row],
    trials,
    frames: dict[str, Any],
    baselines: Baselines,
    teacher_accuracies: dict[str, float],
    resolution: float,
) -> None:
    """Each distillation row gets kd_gain and gap_closed (in its metrics) and `vs_scratch` (the epoch,
    the baseline's accuracy there, or why there is no comparison). `frames`: Tune's results per trial
    id; `teacher_accuracies`: each teacher's val_accuracy by name. A baseline serves every teacher: gap_closed is
    per (teacher, student) pair."""
    configs = {trial.trial_id: trial.config or {} for trial in trials}
    template, digest = baselines.template, baselines.digest
    histories = dict(baselines.earlier)
    for row in rows:
        frame = frames.get(row.trial_id)
        if row.role == "baseline" and frame is not None and "val_accuracy" in frame:
            key = baseline_key(baseline_of(template, configs[row.trial_id]), digest)
            histories[key] = dict(zip(frame["epoch"].astype(int), frame["val_accuracy"], strict=True))
    for row in rows:
        metrics = row.metrics
        if row.role == "baseline" or "val_accuracy" not in metrics:
            continue
        history = histories.get(baseline_key(baseline_of(template, configs[row.trial_id]), digest))
        if history is None:
            row.vs_scratch = VsScratch(note="its baseline did not report")
            continue
        teacher_accuracy = teacher_accuracies[trial_config(template, configs[row.trial_id]).teacher]
        epoch = int(metrics["epoch"])
        compared = versus_baseline(history, metrics["val_accuracy"], epoch, teacher_accuracy, resolution)
        if isinstance(compared, str):
            row.vs_scratch = VsScratch(note=compared)
            continue
        metrics["kd_gain"] = compared.kd_gain
        if compared.gap_closed is not None:
            metrics["gap_closed"] = compared.gap_closed
        row.vs_scratch = VsScratch(compared.epoch, compared.baseline, teacher_accuracy, compared.note)


def log_gains(tracker: SweepTracker, rows: list[Row]) -> None:
    """kd_gain and gap_closed on each compared trial's MLflow run, at the epoch of the comparison."""
    for row in rows:
        if "kd_gain" in row.metrics and row.mlflow_run_id:
            gap = row.metrics.get("gap_closed")
            tracker.log_gains(row.mlflow_run_id, row.metrics["kd_gain"], gap, row.vs_scratch.epoch)
