"""Seeds and the champion rule, by hand: intervals against hand-computed values, and the rule on hand-built
runs (a scratch winner, a lucky single seed that loses once confirmed, the rule switched)."""

from __future__ import annotations

import math

import pytest

from kdsweep.confidence import binomial_se, estimate, paid
from kdsweep.configurations import (
    DISTILLED,
    SCRATCH,
    configuration_key,
    configurations,
    rank_configurations,
    scratch_won,
    verdict,
)
from kdsweep.outcome import Outcome
from kdsweep.selection import TrialRun

# Student's t, 97.5th percentile (two-sided 95 %), from any printed t table.
T_2, T_4 = 4.3027, 2.7764  # 2 and 4 degrees of freedom


# ---------------------------------------------------------------- the intervals, by hand


def test_a_mean_over_three_seeds_has_the_student_t_interval():
    # mean 0.92; deviations -0.02, 0, +0.02: s^2 = 0.0008 / 2 = 0.0004, s = 0.02;
    # half width = t(0.975, 2) * s / sqrt(3) = 4.3027 * 0.02 / 1.7321 = 0.04968
    value = estimate([0.90, 0.92, 0.94])
    assert value.n == 3
    assert value.mean == pytest.approx(0.92)
    assert value.half_width == pytest.approx(T_2 * 0.02 / math.sqrt(3), rel=1e-4)
    assert value.half_width == pytest.approx(0.04968, abs=1e-5)
    assert (value.low, value.high) == pytest.approx((0.87032, 0.96968), abs=1e-5)


def test_five_seeds_narrow_the_interval_and_one_seed_has_none():
    # 0.80, 0.82, 0.84, 0.86, 0.88: mean 0.84, s^2 = (4+1+0+1+4) * 0.0004 / 4 = 0.001, s = 0.031623;
    # half width = 2.7764 * 0.031623 / sqrt(5) = 0.039265
    value = estimate([0.80, 0.82, 0.84, 0.86, 0.88])
    assert value.half_width == pytest.approx(T_4 * math.sqrt(0.001) / math.sqrt(5), rel=1e-4)
    single = estimate([0.91])
    assert (single.mean, single.n, single.half_width, single.low) == (0.91, 1, None, None)
    with pytest.raises(ValueError, match="at least one value"):
        estimate([])


def test_distillation_paid_only_when_the_whole_paired_interval_is_above_zero():
    # Paired differences (distilled seed s minus scratch seed s) 0.03, 0.04, 0.05: mean 0.04, s = 0.01,
    # half width 4.3027 * 0.01 / sqrt(3) = 0.02484, interval [0.01516, 0.06484]: paid.
    gain = estimate([0.95 - 0.92, 0.96 - 0.92, 0.97 - 0.92])
    assert gain.low == pytest.approx(0.01516, abs=1e-5)
    assert paid(gain)
    # 0.02, 0.01, 0.04: mean 0.02333, s^2 = (0.0000111 + 0.0001778 + 0.0002778) / 2 = 0.00023333,
    # half width 4.3027 * 0.015275 / sqrt(3) = 0.03795: the interval [-0.01461, 0.06128] holds 0.
    unsure = estimate([0.02, 0.01, 0.04])
    assert unsure.low == pytest.approx(-0.01461, abs=1e-5)
    assert not paid(unsure)
    assert not paid(estimate([0.05])), "one seed proves nothing"


def test_the_binomial_standard_error_of_an_accuracy():
    # sqrt(0.9 * 0.1 / 144) = 0.3 / 12 = 0.025; digits' 144 validation images: one image = 1/144 = 0.0069
    assert binomial_se(0.9, 144) == pytest.approx(0.025)
    assert binomial_se(0.5, 100) == pytest.approx(0.05)
    assert binomial_se(1.0, 144) == 0.0
    with pytest.raises(ValueError, match="at least one image"):
        binomial_se(0.9, 0)


# ---------------------------------------------------------------- configurations and the rule, on hand-built runs


def run(
    name: str,
    accuracy: float,
    seed: int = 0,
    scratch: bool = False,
    kd_gain: float | None = None,
    gap_closed: float | None = None,
    outcome: str = Outcome.FINISHED,
    **params: str,
) -> TrialRun:
    """A run as sweep_record reads it: params as strings, the seed only when set (TrialConfig's default is 0)."""
    logged = {"student": "small_cnn", "width": "32", "epochs": "8", "num_threads": "1"}
    if not scratch:
        logged |= {"teacher": "resnet18", "loss": "kd", "temperature": "4.0", "alpha": "0.9"}
    logged |= params
    if seed:
        logged["seed"] = str(seed)
    metrics = {"val_accuracy": accuracy, "latency_ms": 0.2, "params": 1000.0}
    if kd_gain is not None:
        metrics["kd_gain"] = kd_gain
    if gap_closed is not None:
        metrics["gap_closed"] = gap_closed
    return TrialRun(f"id-{name}", name, outcome, logged, metrics, f"models:/m-{name}", None, scratch)


def test_runs_differing_only_in_seed_and_threads_are_one_configuration_of_their_kind():
    runs = [
        run("kd", 0.9),
        run("kd-s1", 0.8, seed=1, num_threads="2"),
        run("scratch", 0.7, scratch=True),
        run("kd-lr", 0.9, lr="0.1"),
    ]
    configs = configurations(runs)
    assert [(c.kind, [r.name for r in c.runs]) for c in configs] == [
        (DISTILLED, ["kd", "kd-s1"]),
        (SCRATCH, ["scratch"]),
        (DISTILLED, ["kd-lr"]),
    ]
    assert configuration_key({"student": "small_cnn", "alpha": 0.9}, False) == configuration_key(
        {"student": "small_cnn", "alpha": "0.9", "seed": "3"}, False
    ), "typed (from Tune) and logged (strings) parameters name the same configuration"


def test_a_scratch_student_wins_and_the_line_says_by_how_much():
    # The digits story of issue 19: the same student from scratch beats its distilled self.
    runs = [
        run("kd-0", 0.970, kd_gain=-0.020),
        run("kd-1", 0.975, seed=1, kd_gain=-0.010),
        run("kd-2", 0.980, seed=2, kd_gain=-0.015),
        run("scratch-0", 0.990, scratch=True),
        run("scratch-1", 0.985, seed=1, scratch=True),
        run("scratch-2", 0.995, seed=2, scratch=True),
    ]
    ranked = rank_configurations(configurations(runs), "val_accuracy", "max")
    assert [c.kind for c in ranked] == [SCRATCH, DISTILLED]
    assert ranked[0].best_run("val_accuracy", "max").name == "scratch-2", "the best seed of the chosen one"
    # means 0.990 and 0.975: 1.50 points
    assert scratch_won(ranked[0], ranked[1], "val_accuracy") == (
        "distillation did not beat scratch here: small_cnn(w32) from scratch 0.9900 (3 seeds) "
        "vs best distilled kd-0 0.9750 (3 seeds), by 1.50 points"
    )
    # kd_gain -0.02, -0.01, -0.015: mean -0.015, s = 0.005, half width 4.3027 * 0.005 / sqrt(3) = 0.01242:
    # [-2.74, -0.26] points, all below 0
    assert verdict(ranked, "val_accuracy", 144) == (
        "distillation did not pay for small_cnn(w32) (kd-0): kd_gain -1.50 points (95% interval [-2.74, -0.26] "
        "over 3 seeds) over the same student from scratch, paired seed by seed; validation 144 images, "
        "one image = 0.69 points"
    )


def test_a_lucky_single_seed_ranks_first_until_confirmation_shows_it_was_luck():
    lucky = run("lucky", 0.990, temperature="8.0")
    steady = run("steady", 0.960, temperature="2.0")
    before = rank_configurations(configurations([lucky, steady]), "val_accuracy", "max")
    assert [c.name for c in before] == ["lucky", "steady"], "one seed each: the higher value leads"

    confirmed = [
        lucky,
        run("lucky-1", 0.930, seed=1, temperature="8.0"),
        run("lucky-2", 0.920, seed=2, temperature="8.0"),  # mean 0.9467
        steady,
        run("steady-1", 0.970, seed=1, temperature="2.0"),
        run("steady-2", 0.950, seed=2, temperature="2.0"),  # mean 0.9600
        run("unconfirmed", 0.999, temperature="6.0"),  # one seed: behind every confirmed configuration
    ]
    ranked = rank_configurations(configurations(confirmed), "val_accuracy", "max")
    assert [c.name for c in ranked] == ["steady", "lucky", "unconfirmed"]
    stats = ranked[0].stats("val_accuracy")
    assert (stats.confirmed, stats.value.n) == (True, 3)
    assert stats.value.mean == pytest.approx(0.96)
    assert stats.value.half_width == pytest.approx(T_2 * 0.01 / math.sqrt(3), rel=1e-4)  # s = 0.01
    assert ranked[0].best_run("val_accuracy", "max").name == "steady-1"


def test_the_lower_bound_rule_prefers_the_steadier_of_two_confirmed_configurations():
    # wide: 0.95, 0.96, 0.97: mean 0.96, low 0.96 - 0.02484 = 0.93516; steady: 0.955 three times: low 0.955
    runs = [run(f"wide-{s}", 0.95 + s / 100, seed=s, alpha="0.5") for s in range(3)]
    runs += [run(f"steady-{s}", 0.955, seed=s, alpha="0.7") for s in range(3)]
    configs = configurations(runs)
    assert [c.name for c in rank_configurations(configs, "val_accuracy", "max", rule="mean")] == ["wide-0", "steady-0"]
    assert [c.name for c in rank_configurations(configs, "val_accuracy", "max", rule="lower_bound")] == [
        "steady-0",
        "wide-0",
    ]


def test_a_seed_that_did_not_finish_is_not_counted_and_a_repeated_seed_counts_once():
    runs = [
        run("a", 0.90),
        run("a-again", 0.91),  # the same configuration drawn twice with the same seed: one measurement
        run("a-1", 0.95, seed=1, outcome=Outcome.STOPPED),
    ]
    [config] = configurations(runs)
    stats = config.stats("val_accuracy")
    assert (stats.value.n, stats.confirmed, stats.value.mean) == (1, False, 0.90)
    assert config.best_run("val_accuracy", "max").name == "a-again", "either finished run can be shipped"


def test_the_verdict_on_single_seed_sweeps_says_there_is_no_interval():
    runs = [run("kd", 0.97, kd_gain=0.0069), run("scratch", 0.9631, scratch=True)]
    line = verdict(rank_configurations(configurations(runs), "val_accuracy", "max"), "val_accuracy", None)
    assert line == (
        "distillation on one seed, not confirmed: small_cnn(w32) (kd): kd_gain +0.69 points (one seed, no interval) "
        "over the same student from scratch, paired seed by seed"
    )
    assert verdict([], "val_accuracy", 100) == (
        "distillation: no distilled student was compared with its scratch baseline; validation 100 images, "
        "one image = 1.00 points"
    )


def test_the_verdict_says_distillation_paid_when_the_paired_interval_is_above_zero():
    # kd_gain 0.03, 0.04, 0.05 (each seed minus the scratch run of the same seed): mean 4.00 points,
    # half width 4.3027 * 1 / sqrt(3) = 2.48 points; gap_closed 0.4, 0.5, 0.6: 50 % +- 24.8 %
    runs = [
        run(f"kd-{seed}", 0.9, seed=seed, kd_gain=0.03 + seed / 100, gap_closed=0.4 + seed / 10) for seed in range(3)
    ]
    runs.append(run("scratch", 0.86, scratch=True))
    ranked = rank_configurations(configurations(runs), "val_accuracy", "max")
    assert verdict(ranked, "val_accuracy", 400) == (
        "distillation paid for small_cnn(w32) (kd-0): kd_gain +4.00 points (95% interval [+1.52, +6.48] over 3 seeds) "
        "over the same student from scratch, paired seed by seed, closing 50% [25%, 75%] of the teacher-scratch gap; "
        "validation 400 images, one image = 0.25 points"
    )
