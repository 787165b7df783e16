"""A leaderboard row is a dataclass wherever it travels, and the `--output-json` file keeps its format
(benchmarks/*.py read its keys)."""

from __future__ import annotations

import json

import pytest

from kdsweep.confidence import estimate
from kdsweep.configurations import SeedStats
from kdsweep.leaderboard import Row, VsScratch, add_seed_stats, format_leaderboard, write_json
from kdsweep.outcome import Outcome

KEYS = ["trial_id", "role", "status", "error", "config", "metrics", "node_id", "mlflow_run_id", "not_in_mlflow"]
KEYS += ["path", "rank"]  # then vs_scratch, seeds and champion, each only when set
# t1's configuration over 3 seeds: 0.78, 0.80, 0.82 (mean 0.80, s 0.02, 95% half width 4.3027 * 0.02 / sqrt(3) = 0.0497)
SEEDS = SeedStats("val_accuracy", estimate([0.78, 0.80, 0.82]), True, estimate([0.08, 0.10, 0.12]), None)


def rows() -> list[Row]:
    config = {"student": "resnet8", "teacher": "small_cnn", "temperature": 4.0, "alpha": 0.5, "epochs": 2}
    common = {"node_id": "n1", "path": "/results/t", "config": config}
    return [
        Row(
            trial_id="t1",
            status=Outcome.FINISHED,
            metrics={"epoch": 2, "val_accuracy": 0.8, "kd_gain": 0.1, "gap_closed": 0.5},
            mlflow_run_id="r1",
            rank=1,
            vs_scratch=VsScratch(2, 0.7, 0.9, None),
            seeds=SEEDS,
            **common,
        ),
        Row(
            trial_id="t2",
            status=Outcome.STOPPED,
            metrics={"epoch": 1, "val_accuracy": 0.6},
            rank=2,
            vs_scratch=VsScratch(note="its baseline did not report"),
            not_in_mlflow="its final status",
            **common,
        ),
        Row(
            trial_id="b1",
            role="baseline",
            status=Outcome.ERROR,
            error="RuntimeError: boom",
            metrics={},
            rank=3,
            **{**common, "config": {"student": "resnet8", "alpha": 0.0}},
        ),
    ]


def test_rows_written_as_json_keep_the_keys_and_values_the_benchmarks_read(tmp_path):
    path = tmp_path / "rows.json"
    written = rows()
    written[0].champion, written[1].champion = True, False
    write_json(written, str(path))
    compared, note_only, baseline = json.loads(path.read_text())
    assert list(compared) == [*KEYS, "vs_scratch", "seeds", "champion"]
    assert list(note_only) == [*KEYS, "vs_scratch", "champion"]
    assert list(baseline) == KEYS  # neither compared nor judged: no vs_scratch, no champion
    assert compared["status"] == "FINISHED"
    assert baseline["status"] == "ERROR"
    assert baseline["role"] == "baseline"
    assert compared["vs_scratch"] == {
        "epoch": 2,
        "baseline_val_accuracy": 0.7,
        "teacher_val_accuracy": 0.9,
        "note": None,
    }
    assert note_only["vs_scratch"] == {"note": "its baseline did not report"}
    seeds = compared["seeds"]
    assert (seeds["metric"], seeds["seeds"], seeds["confirmed"], seeds["confidence"]) == ("val_accuracy", 3, True, 0.95)
    assert seeds["value"]["mean"] == pytest.approx(0.80)
    assert seeds["value"]["high"] - seeds["value"]["mean"] == pytest.approx(0.04968, abs=1e-5)
    assert seeds["kd_gain"]["low"] == pytest.approx(0.10 - 0.04968, abs=1e-5)
    assert seeds["gap_closed"] is None
    assert compared["champion"] is True
    assert note_only["champion"] is False
    assert compared["metrics"] == written[0].metrics
    assert compared["config"] == written[0].config
    assert [row.to_json() for row in written] == json.loads(path.read_text())  # the round trip: nothing lost


def test_the_table_shows_each_rows_run_outcome_and_comparison():
    text = format_leaderboard(rows(), val_size=100)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["rank", "run", "student"]
    assert lines[0].split()[7:10] == ["val_acc±SE", "seeds", "seed_mean±95%"]
    assert lines[2].split()[1] == "t1"
    # sqrt(0.8 * 0.2 / 100) = 0.04; the configuration's 3 seeds: 0.80 +- 0.0497
    assert lines[2].split()[7:11] == ["0.8000±0.0400", "3", "confirmed", "0.8000±0.0497"]
    assert "+0.1000" in lines[2]
    assert lines[2].endswith("FINISHED")
    assert lines[3].split()[7:10] == ["0.6000±0.0490", "-", "-"]  # sqrt(0.24 / 100); no seed figures
    assert lines[3].split()[10] == "-"
    assert "vs scratch: its baseline did not report" in text
    assert "not in MLflow: its final status" in text
    assert "error: RuntimeError: boom" in text
    # Read from MLflow: named by its run, and a finished run without a model says so.
    from_mlflow = Row(run_name="resnet8-T4.0", status=Outcome.FINISHED, config={}, metrics={}, rank=1, no_model=True)
    line = format_leaderboard([from_mlflow]).splitlines()[2]
    assert line.split()[1] == "resnet8-T4.0"
    assert line.endswith("FINISHED (no model)")


def test_rows_from_tune_get_their_configurations_figures_over_seeds():
    config = {"student": "resnet8", "temperature": 4.0, "alpha": 0.5}
    seeds = [
        Row(trial_id=f"s{seed}", status=Outcome.FINISHED, config={**config, "seed": seed}, metrics=metrics)
        for seed, metrics in enumerate([{"val_accuracy": 0.7, "kd_gain": 0.02}, {"val_accuracy": 0.9, "kd_gain": 0.04}])
    ]
    other = Row(trial_id="o", status=Outcome.FINISHED, config={**config, "alpha": 0.9}, metrics={"val_accuracy": 0.5})
    stopped = Row(trial_id="x", status=Outcome.STOPPED, config={**config, "alpha": 0.1}, metrics={"val_accuracy": 0.4})
    add_seed_stats([*seeds, other, stopped], "val_accuracy")
    assert seeds[0].seeds == seeds[1].seeds
    assert (seeds[0].seeds.value.n, seeds[0].seeds.confirmed) == (2, True)
    assert seeds[0].seeds.value.mean == pytest.approx(0.8)
    assert seeds[0].seeds.kd_gain.mean == pytest.approx(0.03)
    assert (other.seeds.value.n, other.seeds.confirmed, other.seeds.value.half_width) == (1, False, None)
    assert stopped.seeds is None, "no seed finished: no figures"
