"""Scratch baselines: which trials share one, how they enter the Tune run, and the gain arithmetic.

The sweep-level behaviour (one baseline per distinct student, in the rows and in MLflow, reused by a
later sweep of the experiment, --no-baselines) is in test_sweep.py.
"""

from __future__ import annotations

import pandas as pd
import pytest
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch
from test_sweep import TINY_SPACE, write_space

from kdsweep.config import load_config
from kdsweep.gain import gain, versus_baseline
from kdsweep.leaderboard import Row, VsScratch
from kdsweep.outcome import Outcome
from kdsweep.schedulers import SchedulerSettings, list_schedulers, scheduler_entry
from kdsweep.space import OptunaSpace, trial_template, tune_param_space
from kdsweep.sweep.baselines import (
    BASELINE,
    CONFIRM,
    Baselines,
    BaselinesFirst,
    BaselinesRunOut,
    baseline_key,
    baseline_of,
    baseline_point,
    compare_with_baselines,
    drawn_points,
    is_baseline,
    trial_config,
    with_baselines,
)
from kdsweep.trial import TrialConfig

SPACE = {
    **TINY_SPACE,
    "budget": {"epochs": 3, "num_samples": 8},
    "fixed": {"batch_size": 32},
    "search": {
        **TINY_SPACE["search"],
        "lr": {"loguniform": [0.01, 0.1]},
        "standardize": {"choice": [False, True]},
    },
}


@pytest.fixture
def config(tmp_path):
    return load_config(write_space(tmp_path, SPACE))


# ---------------------------------------------------------------- the arithmetic


def test_gain_and_gap_closed_by_hand():
    g = gain(accuracy=0.80, baseline=0.60, teacher_accuracy=0.90, resolution=0.01, epoch=3)
    assert g.kd_gain == pytest.approx(0.20)
    assert g.gap_closed == pytest.approx(0.20 / 0.30)
    assert g.note is None
    worse = gain(accuracy=0.55, baseline=0.60, teacher_accuracy=0.70, resolution=0.01, epoch=3)
    assert worse.kd_gain == pytest.approx(-0.05)
    assert worse.gap_closed == pytest.approx(-0.5)
    assert gain(accuracy=0.9, baseline=0.6, teacher_accuracy=0.9, resolution=0.01, epoch=3).gap_closed == pytest.approx(
        1.0
    )


def test_a_teacher_no_better_than_scratch_closes_no_gap():
    # Within one validation sample (0.01) of the baseline: not a gap worth dividing by.
    for teacher_accuracy in (0.605, 0.60, 0.50):
        g = gain(accuracy=0.62, baseline=0.60, teacher_accuracy=teacher_accuracy, resolution=0.01, epoch=2)
        assert g.kd_gain == pytest.approx(0.02)
        assert g.gap_closed is None
        assert "no better than scratch" in g.note
    assert gain(accuracy=0.62, baseline=0.60, teacher_accuracy=0.611, resolution=0.01, epoch=2).gap_closed is not None


def test_a_trial_is_compared_with_its_baseline_at_its_own_epoch():
    history = {1: 0.30, 2: 0.50, 3: 0.60}
    stopped = versus_baseline(history, accuracy=0.45, epoch=1, teacher_accuracy=0.90, resolution=0.01)
    assert stopped.epoch == 1
    assert stopped.baseline == 0.30
    assert stopped.kd_gain == pytest.approx(0.15)
    assert stopped.gap_closed == pytest.approx(0.15 / 0.60)
    assert versus_baseline({1: 0.3}, 0.5, 3, 0.9, 0.01) == "its baseline reached epoch 1, not 3"


# ---------------------------------------------------------------- which trials share a baseline


def test_scratch_keeps_the_student_and_its_training_and_drops_the_teacher():
    config = TrialConfig(
        student="small_cnn", width=8, lr=0.02, loss="dkd", temperature=6.0, alpha=1.0, beta=4.0, standardize=True
    )
    scratch = config.scratch()
    assert (scratch.student, scratch.width, scratch.lr) == ("small_cnn", 8, 0.02)
    assert scratch.alpha == 0.0
    assert scratch.loss == "kd"
    assert not scratch.needs_teacher
    assert (scratch.temperature, scratch.beta, scratch.standardize) == (4.0, 8.0, False)  # the defaults
    assert scratch.scratch() == scratch


def test_trials_differing_only_in_distillation_and_a_continuous_setting_share_a_baseline(config):
    template = trial_template(config)
    a = {"student": "small_cnn", "width": 8, "temperature": 2.5, "alpha": 0.6, "loss": "kd", "beta": 3.0, "lr": 0.012}
    b = {**a, "temperature": 5.0, "alpha": 0.9, "loss": "dkd", "beta": 7.0, "lr": 0.08, "standardize": True}
    other_width = {**a, "width": 4}
    resnet = {**a, "student": "resnet8"}  # its width does not apply: dropped
    key = {name: baseline_key(baseline_of(template, p), "d") for name, p in [("a", a), ("b", b)]}
    assert key["a"] == key["b"]
    assert baseline_key(baseline_of(template, other_width), "d") != key["a"]
    assert baseline_key(baseline_of(template, resnet), "d") == baseline_key(
        baseline_of(template, {**resnet, "width": 4}), "d"
    )
    assert baseline_key(baseline_of(template, a), "other data") != key["a"]
    baseline = baseline_of(template, a)
    assert baseline.lr == pytest.approx((0.01 * 0.1) ** 0.5)  # the middle of the loguniform range
    assert baseline.alpha == 0
    assert baseline.batch_size == 32
    point = baseline_point(template, a)
    assert is_baseline(point)
    assert baseline_of(template, point) == baseline


def test_random_search_puts_one_baseline_in_front_of_each_new_student(config):
    template = trial_template(config)
    points = drawn_points(tune_param_space(config), 8, seed=3).points
    assert len(points) == 8
    assert points == drawn_points(tune_param_space(config), 8, seed=3).points
    scheduled = with_baselines(points, template, "d", set())
    trials = [p for p in scheduled if not is_baseline(p)]
    assert trials == points
    keys = [baseline_key(baseline_of(template, p), "d") for p in points]
    baselines = [p for p in scheduled if is_baseline(p)]
    assert len(baselines) == len(set(keys)) >= 2
    for i, point in enumerate(scheduled):  # each in front of the first trial it serves
        if is_baseline(point):
            key = baseline_key(baseline_of(template, point), "d")
            served = [baseline_key(baseline_of(template, p), "d") for p in scheduled if not is_baseline(p)]
            before = [baseline_key(baseline_of(template, p), "d") for p in scheduled[:i] if not is_baseline(p)]
            assert key in served
            assert key not in before
    done = {keys[0]}
    assert len([p for p in with_baselines(points, template, "d", done) if is_baseline(p)]) == len(set(keys)) - 1


def test_optuna_gets_a_baseline_first_for_each_new_student_and_never_sees_its_result(config):
    template = trial_template(config)
    inner = OptunaSearch(space=OptunaSpace(config), metric="val_accuracy", mode="max", seed=0)
    searcher = BaselinesFirst(inner, template, "d", set(), num_samples=5)
    suggested, trial_ids = [], []
    for n in range(40):
        trial_id = f"t{n}"
        config_n = searcher.suggest(trial_id)
        if config_n == Searcher.FINISHED:
            break
        suggested.append(config_n)
        trial_ids.append(trial_id)
        searcher.on_trial_complete(trial_id, {"val_accuracy": 0.5, "training_iteration": 3})
    trials = [c for c in suggested if not is_baseline(c)]
    baselines = [c for c in suggested if is_baseline(c)]
    assert len(trials) == 5, "num_samples counts the searcher's own trials, not the baselines"
    students = {baseline_key(baseline_of(template, c), "d") for c in trials}
    assert len(baselines) == len(students)
    assert {baseline_key(trial_config(template, b), "d") for b in baselines} == students
    # Optuna saw exactly its five trials completed, none of them a baseline (alpha 0 is outside its space).
    completed = [t for t in inner._ot_study.trials if t.state.name == "COMPLETE"]
    assert len(completed) == 5
    assert all(t.params["alpha"] >= 0.5 for t in completed)
    assert all(BASELINE not in c or c[BASELINE] for c in suggested)


class StubTrial:
    """What a Tune scheduler reads of a trial; `marker`: a baseline's or a confirmation trial's Tune config key."""

    def __init__(self, trial_id: str, marker: str | None = None):
        self.trial_id, self.config = trial_id, {"student": "resnet8", **({marker: True} if marker else {})}
        self.status, self.is_saving = "PENDING", False


class StubController:
    def __init__(self, trials):
        self.trials, self.stopped = trials, []

    def get_trials(self):
        return self.trials

    def stop_trial(self, trial):
        self.stopped.append(trial.trial_id)


@pytest.mark.parametrize("marker", [BASELINE, CONFIRM])
@pytest.mark.parametrize("name", [n for n in list_schedulers() if scheduler_entry(n).stops_early])
def test_an_early_stopping_scheduler_never_brackets_stops_or_pauses_a_baseline_or_a_confirmation(name, marker):
    settings = SchedulerSettings(metric="val_accuracy", mode="max", max_t=4, grace_period=1, reduction_factor=2)
    inner = scheduler_entry(name).build(settings)
    scheduler = BaselinesRunOut(inner)
    baseline, trials = StubTrial("b", marker), [StubTrial(f"t{i}") for i in range(4)]
    controller = StubController([baseline, *trials])
    for trial in controller.trials:
        scheduler.on_trial_add(controller, trial)

    def bracketed(trial) -> bool:  # ASHA files its trials by id, HyperBand by trial
        return trial in inner._trial_info or trial.trial_id in inner._trial_info

    assert not bracketed(baseline), "in no rung or bracket"
    assert all(bracketed(t) for t in trials), "in no rung or bracket"
    for trial in trials:
        trial.status = "RUNNING"
    assert scheduler.choose_trial_to_run(controller) is baseline, "started when the scheduler has nothing to start"
    baseline.status = "RUNNING"
    for epoch in range(1, 5):  # the worst accuracy at every rung and milestone, to its last epoch
        result = {"training_iteration": epoch, "val_accuracy": 0.0, "time_total_s": epoch}
        assert scheduler.on_trial_result(controller, baseline, result) == "CONTINUE"
    scheduler.on_trial_complete(controller, baseline, result)
    assert not controller.stopped
    assert not bracketed(baseline)
    assert scheduler.metric == "val_accuracy"


def test_early_stopped_trials_are_compared_at_their_epoch_with_the_right_baseline(config):
    """Rows as the sweep builds them: a baseline per student, trials stopped at different epochs."""
    template = trial_template(config)
    small = {"student": "small_cnn", "width": 4, "temperature": 3.0, "alpha": 0.7, "loss": "kd", "lr": 0.02}
    resnet = {**small, "student": "resnet8"}
    configs = {
        "b-small": baseline_point(template, small),
        "b-resnet": baseline_point(template, resnet),
        "stopped": small,
        "finished": {**resnet, "temperature": 5.0},
        "reused": {**small, "width": 8},
        "orphan": {**resnet, "width": 99, "student": "small_cnn"},
    }
    trials = [type("Trial", (), {"trial_id": k, "config": v}) for k, v in configs.items()]
    frame = {  # val_accuracy by epoch
        "b-small": [0.30, 0.40, 0.50],
        "b-resnet": [0.20, 0.60, 0.70],
    }
    frames = {k: pd.DataFrame({"epoch": [1, 2, 3], "val_accuracy": v}) for k, v in frame.items()}

    def row(trial_id: str, epoch: int, accuracy: float) -> Row:
        role = "baseline" if trial_id.startswith("b-") else "trial"
        metrics = {"epoch": epoch, "val_accuracy": accuracy}
        return Row(trial_id=trial_id, role=role, status=Outcome.FINISHED, config={}, metrics=metrics)

    rows = [row("b-small", 3, 0.5), row("b-resnet", 3, 0.7), row("stopped", 1, 0.45), row("finished", 3, 0.75)]
    rows += [row("reused", 2, 0.55), row("orphan", 2, 0.5)]
    earlier = {baseline_key(baseline_of(template, configs["reused"]), "d"): {1: 0.1, 2: 0.35}}
    compare_with_baselines(
        rows, trials, frames, Baselines(template, "d", earlier), {"small_cnn": 0.90}, resolution=0.01
    )
    by_id = {r.trial_id: r for r in rows}
    stopped = by_id["stopped"]  # ASHA stopped it at epoch 1: the small CNN's baseline at epoch 1
    assert stopped.vs_scratch.epoch == 1
    assert stopped.vs_scratch.baseline_val_accuracy == 0.30
    assert stopped.metrics["kd_gain"] == pytest.approx(0.15)
    assert stopped.metrics["gap_closed"] == pytest.approx(0.15 / 0.60)
    finished = by_id["finished"]
    assert finished.metrics["kd_gain"] == pytest.approx(0.05)
    assert finished.metrics["gap_closed"] == pytest.approx(0.05 / 0.20)
    reused = by_id["reused"]  # an earlier sweep's baseline of the same student
    assert reused.vs_scratch.baseline_val_accuracy == 0.35
    assert reused.metrics["kd_gain"] == pytest.approx(0.2)
    assert by_id["orphan"].vs_scratch == VsScratch(note="its baseline did not report")
    assert "kd_gain" not in by_id["orphan"].metrics
    assert all("kd_gain" not in by_id[b].metrics and by_id[b].vs_scratch is None for b in ("b-small", "b-resnet"))
