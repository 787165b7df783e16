"""What a sweep learned: parameter importances on hand-built trials whose answer is known, the
figure and the numbers on a real MLflow parent run, and one small sweep end to end."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient
from test_sweep import TINY_SPACE, sweep

from kdsweep.config import SweepConfig
from kdsweep.importance import (
    IMPORTANCE_JSON,
    IMPORTANCE_PLOT,
    MIN_FAMILY_TRIALS,
    format_report,
    importance_report,
    report_importance,
    usable_trials,
)
from kdsweep.leaderboard import Row, add_seed_stats
from kdsweep.outcome import Outcome
from kdsweep.plots import importance_figure
from kdsweep.summary import NOTE_TAG, PLOTS, summarise_sweep

SPACE = {
    "search": {
        "student": {"choice": ["small_cnn", "resnet8"]},
        "width": {"choice": [4, 8], "when": {"student": "small_cnn"}},
        "temperature": {"uniform": [1.0, 8.0]},
        "alpha": {"uniform": [0.5, 1.0]},
        "loss": {"choice": ["kd", "dkd"]},
        "beta": {"uniform": [1.0, 8.0], "when": {"loss": "dkd"}},
    }
}
CONFIG = SweepConfig.model_validate(SPACE)


def trials(n: int, value, seed: int = 0, status=Outcome.FINISHED, students=("small_cnn", "resnet8")) -> list[Row]:
    """n leaderboard rows drawn from SPACE (conditional parameters only where they apply), each
    valued by `value(config)`."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        config = {
            "student": students[i % len(students)],
            "temperature": rng.uniform(1, 8),
            "alpha": rng.uniform(0.5, 1),
            "loss": ["kd", "dkd"][(i // len(students)) % 2],
        }
        if config["student"] == "small_cnn":
            config["width"] = rng.choice([4, 8])
        if config["loss"] == "dkd":
            config["beta"] = rng.uniform(1, 8)
        rows.append(Row(trial_id=f"t{i}", status=status, config=config, metrics={"val_accuracy": value(config)}))
    return rows


def by_name(report) -> dict:
    return {scope.name: scope for scope in report.scopes}


def test_the_parameter_the_objective_depends_on_gets_the_importance():
    report = importance_report(trials(32, lambda c: 0.3 + 0.08 * c["temperature"]), CONFIG)
    overall = by_name(report)["all trials"]
    assert overall.trials == 32
    assert next(iter(overall.importances)) == "temperature"
    assert overall.importances["temperature"] > 0.8
    assert overall.importances["alpha"] < 0.2
    assert sum(overall.importances.values()) == pytest.approx(1)
    assert set(overall.importances) == {"student", "temperature", "alpha", "loss"}  # unconditional only
    assert importance_report(trials(32, lambda c: 0.3 + 0.08 * c["temperature"]), CONFIG) == report  # seeded


def test_a_conditional_parameter_is_judged_only_over_the_trials_that_carry_it():
    def value(config: dict) -> float:  # beta drives the DKD trials; the KD ones are all alike
        return 0.5 + 0.05 * config["beta"] if config["loss"] == "dkd" else 0.6

    rows = trials(32, value)
    dkd = sum(row.config["loss"] == "dkd" for row in rows)
    report = importance_report(rows, CONFIG)
    scopes = by_name(report)
    branch = scopes["loss=dkd"]
    assert branch.trials == dkd == 16
    assert branch.carrying == ["beta"]
    assert next(iter(branch.importances)) == "beta"
    assert branch.importances["beta"] > 0.8
    assert "loss" not in branch.importances  # the condition fixes it
    assert "beta" not in scopes["all trials"].importances
    assert "width" not in scopes["all trials"].importances
    text = format_report(report)
    assert "loss=dkd (16 trials, those carrying beta): beta 0." in text
    assert text.startswith("what mattered for val_accuracy (fANOVA over 32 finished trials")


def test_student_families_with_enough_trials_get_their_own_line_and_carry_their_own_parameters():
    # 12 small_cnn trials, 4 resnet8: width drives the small CNNs
    rows = trials(12, lambda c: 0.4 + 0.05 * c["width"], students=("small_cnn",))
    rows += trials(4, lambda c: 0.5, seed=1, students=("resnet8",))
    report = importance_report(rows, CONFIG)
    scopes = by_name(report)
    family = scopes["student=small_cnn"]
    assert family.trials == 12
    assert family.carrying == ["width"]
    assert next(iter(family.importances)) == "width"
    assert "student" not in family.importances
    assert "student=small_cnn" not in [s.name for s in report.scopes if s is not family]  # width: no scope of its own
    assert f"too few trials (4) for student=resnet8 (needs {MIN_FAMILY_TRIALS})" in format_report(report)


def test_scratch_baselines_and_trials_without_a_result_are_left_out():
    rows = trials(8, lambda c: 0.3 + 0.08 * c["temperature"])
    noise = [
        Row(role="baseline", status=Outcome.FINISHED, config={"student": "resnet8"}, metrics={"val_accuracy": 0.1}),
        replace(rows[0], status=Outcome.ERROR, metrics={}),
        replace(rows[1], status=Outcome.DIVERGED, metrics={"val_accuracy": 0.99}),
    ]
    report = importance_report(rows + noise, CONFIG)
    assert report.trials == 8
    assert by_name(report)["all trials"].trials == 8


def test_a_configuration_confirmed_over_seeds_counts_once_with_its_seed_mean():
    rows = trials(6, lambda c: 0.3 + 0.08 * c["temperature"])
    # Two more seeds of rows[0]'s configuration: its three finished seeds' mean stands for it.
    seeds = [replace(rows[0], trial_id=f"s{s}", config={**rows[0].config, "seed": s}) for s in (1, 2)]
    seeds[0].metrics, seeds[1].metrics = {"val_accuracy": 0.1}, {"val_accuracy": 0.2}
    rows = add_seed_stats([*rows, *seeds], "val_accuracy")
    used = usable_trials(rows, "val_accuracy")
    assert [row.trial_id for row in used] == [f"t{i}" for i in range(6)]
    expected = (0.3 + 0.08 * rows[0].config["temperature"] + 0.1 + 0.2) / 3
    assert used[0].metrics["val_accuracy"] == pytest.approx(expected)
    assert rows[0].metrics["val_accuracy"] != pytest.approx(expected), "the row itself keeps its own value"
    assert importance_report(rows, CONFIG).trials == 6


def test_stopped_trials_count_only_when_too_few_finished_and_the_report_says_so():
    value = lambda c: 0.3 + 0.08 * c["temperature"]  # noqa: E731
    enough = trials(6, value) + trials(6, value, seed=1, status=Outcome.STOPPED)
    assert importance_report(enough, CONFIG).trials == 6  # the finished ones only
    few = trials(3, value) + trials(6, value, seed=1, status=Outcome.STOPPED)
    report = importance_report(few, CONFIG)
    assert report.trials == 9
    assert report.stopped == 6
    assert "over 9 trials, 6 of them stopped early" in format_report(report)


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        (trials(3, lambda c: c["temperature"]), "too few trials (3; needs 4)"),
        (trials(10, lambda c: 0.5), "val_accuracy is the same in all 10 trials"),
    ],
)
def test_too_few_trials_or_a_flat_objective_give_one_line_and_no_plot(rows, reason, tmp_path, capsys):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.create_run(client.create_experiment("flat")).info.run_id
    report = report_importance(rows, CONFIG, client.tracking_uri, parent)
    assert not report.scopes
    assert capsys.readouterr().out.strip() == f"what mattered for val_accuracy (fANOVA): no report, {reason}"
    assert client.list_artifacts(parent) == []


def test_the_figure_has_one_panel_per_scope():
    report = importance_report(trials(32, lambda c: 0.5 + 0.05 * c.get("beta", 2)), CONFIG)
    figure = importance_figure([(s.name, s.importances) for s in report.scopes], "val_accuracy")
    assert isinstance(figure, Figure)
    assert len(figure.axes) == len(report.scopes) >= 2
    assert [a.get_title(loc="left") for a in figure.axes] == [s.name for s in report.scopes]


def test_the_report_is_logged_on_the_parent_and_listed_by_its_summary(tmp_path, capsys):
    assert IMPORTANCE_PLOT in PLOTS
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    parent = client.create_run(client.create_experiment("logged")).info.run_id
    report = report_importance(trials(16, lambda c: 0.3 + 0.08 * c["temperature"]), CONFIG, uri, parent)
    assert "all trials (16 trials): temperature" in capsys.readouterr().out
    assert {a.path for a in client.list_artifacts(parent)} == {IMPORTANCE_PLOT, IMPORTANCE_JSON}
    stored = json.loads(Path(client.download_artifacts(parent, IMPORTANCE_JSON, str(tmp_path))).read_text())
    assert stored["evaluator"] == "fANOVA"
    assert stored["scopes"][0]["importances"] == report.scopes[0].importances
    summarise_sweep(uri, parent, "val_accuracy", "max", None)
    assert f"`{IMPORTANCE_PLOT}`" in client.get_run(parent).data.tags[NOTE_TAG]


def test_a_small_sweep_reports_what_mattered_after_its_leaderboard(ray_session, mlflow_server, tmp_path, capsys):
    space = {
        **TINY_SPACE,
        "budget": {"epochs": 1, "num_samples": 6},
        "scheduler": {"name": "none"},
        "objective": {"metric": "val_loss", "mode": "min"},  # after one epoch, accuracy may tie everywhere
        "fixed": {**TINY_SPACE["fixed"], "measure_latency": False},
    }
    code, rows, uri = sweep(tmp_path, space, "--no-select", name="learned", uri=mlflow_server)
    out = capsys.readouterr().out
    assert code == 0
    assert len(rows) == 6
    assert 0 < out.index("leaderboard (val_loss") < out.index("what mattered for val_loss (fANOVA over 6")
    client = MlflowClient(uri)
    parent = client.get_run(client.get_run(rows[0]["mlflow_run_id"]).data.tags["mlflow.parentRunId"])
    assert {IMPORTANCE_PLOT, IMPORTANCE_JSON} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert f"`{IMPORTANCE_PLOT}`" in parent.data.tags[NOTE_TAG]
    assert IMPORTANCE_JSON in parent.data.tags[NOTE_TAG]
