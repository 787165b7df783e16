"""Confirmation over seeds: which configurations, which trials confirm them, how an adaptive search makes
them, the flags; and one small sweep (real Ray, the session's MLflow server) that confirms its top
configurations. Interrupted and resumed during confirmation: test_interruption.py."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from mlflow.tracking import MlflowClient
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch
from test_sweep import TINY_SPACE, child_runs, refused, sweep, write_space

from kdsweep.config import Objective, load_config
from kdsweep.space import OptunaSpace, trial_template
from kdsweep.sweep.baselines import (
    CONFIRM,
    Baselines,
    BaselinesFirst,
    baseline_key,
    baseline_of,
    baseline_point,
    is_baseline,
    is_confirmation,
    run_tags,
    trial_config,
)
from kdsweep.sweep.confirm import Confirmation, ConfirmLast, confirmation_points, top_configurations
from kdsweep.sweep.trainable import run_name
from kdsweep.tracking.runs import TAG_BASELINE, TAG_CONFIRMATION

RESNET = {"student": "resnet8", "temperature": 3.0, "alpha": 0.7, "loss": "kd"}
SMALL = {"student": "small_cnn", "width": 4, "temperature": 3.0, "alpha": 0.7, "loss": "kd"}


@pytest.fixture
def template(tmp_path):
    return trial_template(load_config(write_space(tmp_path, TINY_SPACE)))


# ---------------------------------------------------------------- which configurations, which trials


def test_the_top_configurations_finished_one_per_configuration_seed_aside_ties_to_the_first_made(template):
    points = [
        RESNET,  # 0
        baseline_point(template, SMALL),  # 1: scratch competes
        {**RESNET, "temperature": 5.0},  # 2: ties with 1, made later
        RESNET,  # 3: the configuration of 0 again
        {**SMALL, "alpha": 0.9},  # 4: stopped early: no result, however good
        {**SMALL, "width": 8},  # 5
        {**RESNET, "seed": 4},  # 6: the configuration of 0 and 3, another seed
    ]
    results = [0.80, 0.85, 0.85, 0.90, None, 0.60, 0.70]
    assert top_configurations(points, results, template, 3, "max") == [3, 1, 2]
    assert top_configurations(points, results, template, 10, "max") == [3, 1, 2, 5], "what finished, no more"
    assert top_configurations(points, results, template, 2, "min") == [5, 6]
    assert top_configurations(points, [None] * len(points), template, 3, "max") == []


def test_each_configuration_gets_the_next_seeds_and_their_new_baselines_once(template):
    distilled, other = RESNET, {**RESNET, "temperature": 5.0}  # one student: they share each seed's baseline
    scratch = baseline_point(template, SMALL)

    def key(point: dict) -> str:
        return baseline_key(trial_config(template, point), "d")

    resnet_scratch = baseline_point(template, distilled)
    # The search's own baselines (seed 0), and resnet8's with seed 2 from an earlier sweep of the experiment.
    done = {key(resnet_scratch), key(scratch), key({**resnet_scratch, "seed": 2})}
    points = confirmation_points([distilled, scratch, other], template, 3, Baselines(template, "d", {}), done)
    assert points == [
        {**resnet_scratch, "seed": 1, CONFIRM: True},
        {**distilled, "seed": 1, CONFIRM: True},
        {**scratch, "seed": 1, CONFIRM: True},
        {**other, "seed": 1, CONFIRM: True},  # its baseline with seed 1 is distilled's
        {**distilled, "seed": 2, CONFIRM: True},  # its baseline with seed 2 was trained before
        {**scratch, "seed": 2, CONFIRM: True},
        {**other, "seed": 2, CONFIRM: True},
    ]
    assert len(points) == 3 * (3 - 1) + 1, "k configurations x (N - 1) seeds + the one missing baseline"
    assert confirmation_points([{**distilled, "seed": 5}], template, 3, None, set()) == [
        {**distilled, "seed": 6, CONFIRM: True},
        {**distilled, "seed": 7, CONFIRM: True},
    ], "seeds count on from the search trial's own; no baselines in a sweep without them"
    assert confirmation_points([distilled], template, 1, None, set()) == []


def test_a_confirmation_trial_is_its_configuration_with_another_seed_tagged_as_such(template):
    again = {**RESNET, "seed": 2, CONFIRM: True}
    assert is_confirmation(again)
    assert not is_confirmation(RESNET)
    config = trial_config(template, again)
    assert config == trial_config(template, {**RESNET, "seed": 2})
    assert config.seed == 2
    assert run_tags(again, config, "d") == {TAG_CONFIRMATION: "true"}
    assert run_tags(RESNET, trial_config(template, RESNET), "d") == {}
    assert run_name(config, "ab12c_00007", confirmation=True) == "resnet8-T3.0-a0.70-kd-seed2-0007"
    scratch = trial_config(template, baseline_point(template, again))
    assert (scratch.seed, scratch.alpha) == (2, 0.0)
    assert run_tags(baseline_point(template, again), scratch, "d") == {
        TAG_BASELINE: baseline_key(scratch, "d"),
        TAG_CONFIRMATION: "true",
    }
    assert baseline_key(scratch, "d") != baseline_key(baseline_of(template, RESNET), "d"), "a key per seed"
    assert run_name(scratch, "ab12c_00008", baseline=True, confirmation=True) == "resnet8-scratch-seed2-0008"


def test_a_top_larger_than_what_finished_confirms_what_did_and_says_so_in_one_line(template):
    confirmation = Confirmation(template, top=5, seeds=2, epochs=2, objective=Objective(), baselines=None)
    for trial_id, point in [("t0", RESNET), ("t1", SMALL), ("t2", {**SMALL, "width": 8})]:
        confirmation.trial_made(trial_id, point)
    confirmation.trial_ended("t0", {"epoch": 2, "val_accuracy": 0.5}, error=False)
    confirmation.trial_ended("t1", {"epoch": 1, "val_accuracy": 0.9}, error=False)  # stopped early
    assert not confirmation.search_over
    confirmation.trial_ended("t2", None, error=True)
    assert confirmation.search_over
    said: list[str] = []
    assert confirmation.points(log=said.append) == [{**RESNET, "seed": 1, CONFIRM: True}]
    assert said == [
        "confirmation: the top 1 configurations (confirm.top is 5, but only 1 FINISHED) with 1 more seed(s) each, "
        "1 trials (0 of them scratch): resnet8-T3.0-a0.70-kd-t0 (val_accuracy 0.5000)"
    ]


def test_an_adaptive_search_is_confirmed_once_its_trials_have_ended_and_optuna_never_sees_it(tmp_path):
    config = load_config(write_space(tmp_path, TINY_SPACE))
    template = trial_template(config)
    inner = OptunaSearch(space=OptunaSpace(config), metric="val_accuracy", mode="max", seed=0)
    confirmation = Confirmation(template, 2, 3, 2, Objective(), Baselines(template, "d", {}))
    searcher = ConfirmLast(BaselinesFirst(inner, template, "d", set(), num_samples=4), confirmation, num_samples=4)
    made = []
    while (point := searcher.suggest(f"t{len(made)}")) is not None:
        made.append((f"t{len(made)}", point))
    trials = [(trial_id, point) for trial_id, point in made if not is_baseline(point)]
    assert len(trials) == 4, "num_samples counts the searcher's own trials"
    value = {trial_id: 0.1 * i if not is_baseline(point) else 0.0 for i, (trial_id, point) in enumerate(made)}
    for trial_id, _ in made[:-1]:
        searcher.on_trial_complete(trial_id, {"epoch": 2, "val_accuracy": value[trial_id]})
    assert searcher.suggest("waiting") is None, "one search trial is still running"
    searcher.on_trial_complete(made[-1][0], {"epoch": 2, "val_accuracy": value[made[-1][0]]})
    confirmed = []
    while (point := searcher.suggest(f"c{len(confirmed)}")) != Searcher.FINISHED:
        confirmed.append(point)
    best = [point for _, point in sorted(trials, key=lambda item: -value[item[0]])[:2]]
    assert [p for p in confirmed if not is_baseline(p)] == [
        {**point, "seed": seed, CONFIRM: True} for seed in (1, 2) for point in best
    ]
    students = {(p["student"], p.get("width")) for p in best}
    assert sorted((p["student"], p.get("width"), p["seed"]) for p in confirmed if is_baseline(p)) == sorted(
        (*student, seed) for seed in (1, 2) for student in students
    )
    for i, _ in enumerate(confirmed):
        searcher.on_trial_complete(f"c{i}", {"epoch": 2, "val_accuracy": 1.0})
    assert len([t for t in inner._ot_study.trials if t.state.name == "COMPLETE"]) == 4, "Optuna saw its own only"


# ---------------------------------------------------------------- the flags


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--confirm-top", "-1"], "error: --confirm-top: must be a whole number, 0 or more (got '-1')"),
        (["--confirm-seeds", "2.5"], "error: --confirm-seeds: must be a whole number, 0 or more (got '2.5')"),
        (["--confirm-top=three"], "error: --confirm-top: must be a whole number, 0 or more (got 'three')"),
        (["--set", "confirm.seeds=-2"], "error: confirm.seeds: Input should be greater than or equal to 0"),
        (["--set", "confirm.top=1.5"], "error: confirm.top: Input should be a valid integer, got a number with a"),
    ],
)
def test_bad_confirmation_flags_exit_2_with_one_line_before_anything_runs(tmp_path, capsys, flags, message):
    assert refused(tmp_path, capsys, *flags).startswith(message)


def test_the_flags_set_the_confirm_section():
    from kdsweep.search import build_parser, config_from_args

    args = build_parser().parse_args(["--confirm-top", "0", "--confirm-seeds", "5"])
    assert config_from_args(args).confirm.model_dump() == {"top": 0, "seeds": 5}
    assert config_from_args(build_parser().parse_args([])).confirm.model_dump() == {"top": 3, "seeds": 3}


# ---------------------------------------------------------------- one sweep, confirmed

TOP, SEEDS, EPOCHS = 2, 2, TINY_SPACE["budget"]["epochs"]


@pytest.fixture(scope="module")
def confirmed(ray_session, mlflow_server, tmp_path_factory):
    """An ASHA sweep (random search, scratch baselines) that confirms its top 2 configurations with a second seed:
    (exit code, rows, its MLflow runs, what it printed)."""
    tmp_path = tmp_path_factory.mktemp("confirmed")
    space = {**TINY_SPACE, "confirm": {"top": TOP, "seeds": SEEDS}}
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        # Tune's generators made in one instant share a trial id prefix (from uuid1's clock): force it.
        patch.setenv("_TEST_TUNE_TRIAL_UUID", "same")
        code, rows, uri = sweep(tmp_path, space, name="confirmed", uri=mlflow_server, baselines=True)
    return code, rows, child_runs(uri, "confirmed"), printed.getvalue()


def configuration(row: dict) -> tuple:
    """What a row trains, its seed aside: a baseline by its student, a distillation trial by all it sets."""
    config = {k: v for k, v in row["config"].items() if k != "seed"}
    if row["role"] == "baseline":
        return ("scratch", config["student"], config.get("width"))
    return ("distilled", json.dumps(config, sort_keys=True))


def test_the_top_configurations_and_their_baselines_run_again_with_the_next_seed(confirmed):
    code, rows, _, printed = confirmed
    assert code == 0
    search = sorted((row for row in rows if "seed" not in row["config"]), key=lambda row: row["trial_id"])
    confirming = [row for row in rows if "seed" in row["config"]]
    # The best FINISHED search trials (in the order Tune made them, which breaks ties), one per configuration.
    finished = [row for row in search if row["status"] == "FINISHED"]
    best, seen = [], set()
    for row in sorted(finished, key=lambda row: -row["metrics"]["val_accuracy"]):  # stable: ties to the first made
        if configuration(row) not in seen:
            seen.add(configuration(row))
            best.append(row)
    best = best[:TOP]
    assert len(best) == TOP
    students = {("scratch", row["config"]["student"], row["config"].get("width")) for row in best}
    expected = {configuration(row) for row in best} | students
    assert sorted(configuration(row) for row in confirming) == sorted(expected), "each once"
    assert len(confirming) == TOP * (SEEDS - 1) + len(expected) - TOP, "k x (N-1) + the missing baselines"
    assert all(row["config"]["seed"] == 1 for row in confirming)
    line = f"confirmation: the top {TOP} configurations with {SEEDS - 1} more seed(s) each, {len(confirming)} trials"
    assert line in printed
    assert len([row for row in search if row["role"] == "trial"]) == TINY_SPACE["budget"]["num_samples"]
    ids = [row["trial_id"] for row in search + sorted(confirming, key=lambda row: row["trial_id"])]
    assert ids == [f"same_{n:05d}" for n in range(len(rows))], "numbered on from the search's trials"


def test_confirmation_trials_are_never_stopped_early_and_are_tagged_in_mlflow(confirmed):
    _, rows, runs, _ = confirmed
    confirming = {row["mlflow_run_id"]: row for row in rows if "seed" in row["config"]}
    assert all(row["status"] == "FINISHED" and row["metrics"]["epoch"] == EPOCHS for row in confirming.values())
    tagged = {run.info.run_id: run for run in runs if run.data.tags.get(TAG_CONFIRMATION) == "true"}
    assert set(tagged) == set(confirming)
    parents = {run.data.tags["mlflow.parentRunId"] for run in runs}
    assert len(parents) == 1, "the same MLflow parent as the search"
    for run_id, run in tagged.items():
        assert run.data.params["seed"] == "1"
        assert "-seed1-" in run.info.run_name
        assert (TAG_BASELINE in run.data.tags) == (confirming[run_id]["role"] == "baseline")
        assert run.data.tags["kdsweep.outcome"] == "FINISHED"


def test_each_confirmed_seed_is_compared_with_its_own_seeds_baseline(confirmed):
    _, rows, _, _ = confirmed
    scratch = {
        (row["config"]["student"], row["config"].get("width"), row["config"].get("seed", 0)): row
        for row in rows
        if row["role"] == "baseline"
    }
    distilled = [row for row in rows if row["role"] == "trial" and "seed" in row["config"]]
    for row in distilled:
        config = row["config"]
        baseline = scratch[(config["student"], config.get("width"), config["seed"])]
        assert row["vs_scratch"]["baseline_val_accuracy"] == pytest.approx(baseline["metrics"]["val_accuracy"])
        assert row["metrics"]["kd_gain"] == pytest.approx(
            row["metrics"]["val_accuracy"] - baseline["metrics"]["val_accuracy"]
        )


def test_the_champion_is_a_confirmed_configuration_and_its_rows_carry_their_seeds(confirmed, mlflow_server):
    """Selection (kdsweep.configurations) reads the confirmation trials: the confirmed configurations rank
    ahead of single-seed ones, so the registered version is one of them, tagged with its 2 seeds."""
    _, rows, _, _ = confirmed
    confirming = {configuration(row) for row in rows if "seed" in row["config"]}
    for row in rows:
        seeds = row.get("seeds")
        if seeds is None:  # no seed of its configuration finished
            continue
        both = configuration(row) in confirming and row["status"] == "FINISHED"
        assert (seeds["seeds"], seeds["confirmed"]) == ((SEEDS, True) if both else (1, False)), row
    version = MlflowClient(mlflow_server).get_model_version_by_alias("confirmed", "champion")
    assert (version.tags["kdsweep.seeds"], version.tags["kdsweep.confirmed"]) == (str(SEEDS), "true")
    (champion,) = [row for row in rows if row.get("champion")]
    assert configuration(champion) in confirming
