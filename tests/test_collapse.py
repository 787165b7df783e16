"""A student that learned nothing ends, COLLAPSED, once it has been at chance for two epochs after its warm-up:
visible, not a silent last rank."""

from __future__ import annotations

import math

import pytest
import torch

from kdsweep.outcome import Outcome, ending_reason, trial_outcome
from kdsweep.trial import TrialConfig, run_trial
from kdsweep.trial.collapse import chance_level, has_collapsed, judged_from


def test_chance_level_is_the_majority_rate_plus_three_standard_deviations():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)  # majority 0.5, n = 100
    assert chance_level(labels) == pytest.approx(0.5 + 3 * math.sqrt(0.25 / 100))  # 0.65
    balanced = torch.arange(10).repeat(180)  # ten classes, 1800 samples
    assert chance_level(balanced) == pytest.approx(0.1 + 3 * math.sqrt(0.09 / 1800))  # 0.121


def test_a_trial_is_judged_only_after_its_warm_up_and_never_at_its_first_epoch():
    assert judged_from(TrialConfig()) == 2
    assert judged_from(TrialConfig(loss="dkd", dkd_warmup_epochs=5)) == 6


@pytest.mark.parametrize(
    ("accuracies", "warmup", "collapsed"),
    [
        ({1: 0.1, 2: 0.1}, 0, False),  # epoch 1 does not count: one judged epoch at chance
        ({1: 0.1, 2: 0.1, 3: 0.1}, 0, True),
        ({1: 0.1, 2: 0.1, 3: 0.5}, 0, False),  # a slow start that learns
        ({2: 0.5, 3: 0.1, 4: 0.2}, 0, True),  # 0.2 is chance: at or below counts
        ({2: 0.1, 3: 0.3}, 0, False),
        ({1: 0.1, 2: 0.1, 3: 0.1}, 2, False),  # DKD warm-up of 2: epoch 3 is the first judged
        ({3: 0.1, 4: 0.1}, 2, True),
        ({5: 0.1}, 0, False),  # resumed at epoch 5: the epoch before is not in this run's record
    ],
)
def test_a_collapse_is_two_judged_epochs_in_a_row_at_chance(accuracies, warmup, collapsed):
    config = TrialConfig(loss="dkd", dkd_warmup_epochs=warmup)
    assert has_collapsed(accuracies, config, chance=0.2) is collapsed


def test_a_trial_that_learns_nothing_ends_collapsed_with_its_reason(tiny_data):
    config = TrialConfig(student="small_cnn", width=4, alpha=0.0, lr=1e-9, epochs=5, batch_size=32, num_threads=1)
    reported = []
    result = run_trial(config, tiny_data, report=lambda metrics, state: reported.append(metrics))
    assert [m["epoch"] for m in reported] == [1, 2, 3], "ended at the second judged epoch at chance"
    last = result.metrics
    assert last["collapsed"] == 1.0
    assert last["val_accuracy"] <= last["chance_level"]
    assert last["chance_level"] == pytest.approx(chance_level(tiny_data.val.labels))
    assert trial_outcome(last, errored=False, epochs=5) is Outcome.COLLAPSED
    assert ending_reason(last) == (
        f"val_accuracy {last['val_accuracy']:.4f} at chance level (<= {last['chance_level']:.4f}) "
        "at epochs 2-3, after its warm-up"
    )
    kept = run_trial(config.model_copy(update={"stop_at_chance": False, "epochs": 3}), tiny_data)
    assert kept.metrics["epoch"] == 3
    assert "collapsed" not in kept.metrics
