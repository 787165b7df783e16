"""A leaderboard row is a dataclass wherever it travels, and the `--output-json` file keeps its format
(benchmarks/*.py read its keys)."""

from __future__ import annotations

import json

from kdsweep.leaderboard import Row, VsScratch, format_leaderboard, write_json
from kdsweep.outcome import Outcome

KEYS = ["trial_id", "role", "status", "error", "config", "metrics", "node_id", "mlflow_run_id", "not_in_mlflow"]
KEYS += ["path", "rank"]  # then vs_scratch, then champion, each only when set


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
    assert list(compared) == [*KEYS, "vs_scratch", "champion"]
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
    assert compared["champion"] is True
    assert note_only["champion"] is False
    assert compared["metrics"] == written[0].metrics
    assert compared["config"] == written[0].config
    assert [row.to_json() for row in written] == json.loads(path.read_text())  # the round trip: nothing lost


def test_the_table_shows_each_rows_run_outcome_and_comparison():
    text = format_leaderboard(rows())
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["rank", "run", "student"]
    assert lines[2].split()[1] == "t1"
    assert "+0.1000" in lines[2]
    assert lines[2].endswith("FINISHED")
    assert lines[3].split()[8] == "-"
    assert "vs scratch: its baseline did not report" in text
    assert "not in MLflow: its final status" in text
    assert "error: RuntimeError: boom" in text
    # Read from MLflow: named by its run, and a finished run without a model says so.
    from_mlflow = Row(run_name="resnet8-T4.0", status=Outcome.FINISHED, config={}, metrics={}, rank=1, no_model=True)
    line = format_leaderboard([from_mlflow]).splitlines()[2]
    assert line.split()[1] == "resnet8-T4.0"
    assert line.endswith("FINISHED (no model)")
