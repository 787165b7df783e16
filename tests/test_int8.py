"""Int8 in the loop and the front: the hypervolume by hand, selection on int8 figures (a sweep whose fp32
winner is not its int8 winner, built by hand in MLflow), and a real int8 stage on tiny students."""

from __future__ import annotations

import mlflow
import numpy as np
import onnxruntime as ort
import pytest
import torch
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

# The hand-made sweeps of test_select: real students logged as trials, metrics set by hand; its
# fixtures come along (`students`, and the autouse `quick_mlflow`).
from test_select import make_sweep, quick_mlflow, students  # noqa: F401

from kdsweep.champion import select_champion
from kdsweep.data.batches import split_images
from kdsweep.errors import ConfigError
from kdsweep.leaderboard import Row, format_leaderboard
from kdsweep.select import main
from kdsweep.selection import (
    Constraints,
    TrialRun,
    at_precision,
    front_of,
    hypervolume,
    satisfies,
    summarise_front,
)
from kdsweep.sweep.int8_stage import int8_stage, to_quantize
from kdsweep.sweep_record import find_parent, sweep_runs
from kdsweep.tracking.models import INT8_DIR, INT8_FILE
from kdsweep.trial import predict

# ---------------------------------------------------------------- the hypervolume, by hand


@pytest.mark.parametrize(
    ("points", "senses", "reference", "volume"),
    [
        ([(0.5, 1.0, 100.0)], ("max", "min", "min"), (0.0, 3.0, 300.0), 0.5 * 2 * 200),
        # two boxes 0.8*1*200 = 160 and 0.6*2*100 = 120, overlapping in 0.6*1*100 = 60
        ([(0.8, 2.0, 100.0), (0.6, 1.0, 200.0)], ("max", "min", "min"), (0.0, 3.0, 300.0), 220.0),
        # 0.8*1 + 0.6*1.5 - 0.6*1 (the overlap)
        ([(0.8, 1.0), (0.6, 0.5)], ("max", "min"), (0.0, 2.0), 1.1),
        ([(0.8, 1.0), (0.7, 1.5)], ("max", "min"), (0.0, 2.0), 0.8),  # a dominated point adds nothing
        ([(0.8, 1.0), (0.9, 2.5)], ("max", "min"), (0.0, 2.0), 0.8),  # nor one beyond the reference
        ([(0.8, 2.0)], ("max", "min"), (0.0, 2.0), 0.0),  # nor one on it
        ([(1, 2), (2, 1)], ("min", "min"), (3, 3), 3.0),  # 2 + 2 - 1
        ([], ("max", "min", "min"), (0.0, 1.0, 1.0), 0.0),
    ],
)
def test_hypervolume_matches_hand_computed_volumes(points, senses, reference, volume):
    assert hypervolume(points, senses, reference) == pytest.approx(volume)


def test_hypervolume_refuses_a_reference_without_one_value_per_objective():
    with pytest.raises(ValueError, match="one value per sense"):
        hypervolume([(0.5, 1.0)], ("max", "min"), (0.0,))


def trial(name: str, metrics: dict[str, float]) -> TrialRun:
    return TrialRun(name, name, "FINISHED", {}, metrics, f"models:/{name}")


def test_the_front_is_summarised_against_the_budget_else_the_worst_student():
    slow = trial("slow", {"val_accuracy": 0.9, "latency_ms": 5.0, "params": 3000})
    fast = trial("fast", {"val_accuracy": 0.8, "latency_ms": 1.0, "params": 1000})
    front = front_of([slow, fast])
    assert front == [slow, fast]
    # 10% beyond the worst seen (5.5 ms, 3300): 0.9*0.5*300 + 0.8*4.5*2300 - 0.8*0.5*300, of 1 * 5.5 * 3300
    unbounded = summarise_front(front, [slow, fast], Constraints())
    assert unbounded.size == 2
    assert unbounded.reference == pytest.approx((0.0, 5.5, 3300))
    assert unbounded.hypervolume == pytest.approx((135 + 8280 - 120) / 18150)
    # A budget of 10 ms and 4000 params: 0.9*5*1000 + 0.8*9*3000 - 0.8*5*1000 (the overlap), of 1*10*4000
    budget = summarise_front(front, [slow, fast], Constraints(max_latency_ms=10.0, max_params=4000))
    assert budget.reference == (0.0, 10.0, 4000)
    assert budget.hypervolume == pytest.approx((4500 + 21600 - 4000) / 40000)
    assert summarise_front([], [], Constraints()) is None


def test_int8_judges_the_int8_figures_and_a_missing_one_fails_its_limit():
    assert at_precision("val_accuracy", "int8") == "val_accuracy_int8"
    assert at_precision("latency_ms", "int8") == "latency_ms_int8"
    assert at_precision("params", "int8") == "params"
    assert at_precision("latency_ms", "fp32") == "latency_ms"
    metrics = {"val_accuracy": 0.9, "latency_ms": 2.0, "val_accuracy_int8": 0.85, "latency_ms_int8": 0.5}
    assert not satisfies(metrics, Constraints(max_latency_ms=1.0))
    assert satisfies(metrics, Constraints(max_latency_ms=1.0), "int8")
    assert not satisfies(metrics, Constraints(min_accuracy=0.86), "int8")
    assert not satisfies({"latency_ms": 0.1}, Constraints(max_latency_ms=1.0), "int8")
    with pytest.raises(ConfigError, match="--precision: unknown precision 'int4'"):
        at_precision("val_accuracy", "int4")
    slow = trial("slow", {**metrics, "params": 3000})
    fast = trial("fast", {"val_accuracy": 0.8, "latency_ms": 1.0, "val_accuracy_int8": 0.86, "latency_ms_int8": 0.4})
    assert front_of([slow, trial("fast", {**fast.metrics, "params": 1000})], "int8")[0].name == "fast"


def test_the_leaderboard_shows_int8_beside_fp32_only_when_measured():
    row = Row(status="FINISHED", config={"student": "small_cnn"}, metrics={"val_accuracy": 0.9, "latency_ms": 2.0})
    assert "acc_int8" not in format_leaderboard([row])
    row.metrics |= {"val_accuracy_int8": 0.875, "latency_ms_int8": 0.5, "int8_agreement": 0.96}
    header, _, line = format_leaderboard([row]).splitlines()
    assert header.split()[-4:] == ["acc_int8", "ms_int8", "agree", "status"]
    assert line.split()[-4:] == ["0.8750", "0.50", "96.00%", "FINISHED"]


# ---------------------------------------------------------------- selection on int8, built by hand

# run name -> (val_accuracy_int8, latency_ms_int8, int8_agreement): fp32, accurate-slow wins (0.90 vs 0.80);
# at int8 it loses more to quantization and `fast` wins (0.78 vs 0.70), and is faster on every axis.
INT8 = {"accurate-slow": (0.70, 2.0, 0.75), "fast": (0.78, 0.4, 0.97)}


def int8_sweep(directory, data, students, name: str, figures=INT8):  # noqa: F811
    sweep = make_sweep(directory.as_uri() + "/mlruns", name, directory, data, students, ("accurate-slow", "fast"))
    client = MlflowClient(sweep.uri)
    for run, (accuracy, latency, agreement) in figures.items():
        logged = {"val_accuracy_int8": accuracy, "latency_ms_int8": latency, "int8_agreement": agreement}
        client.log_batch(sweep.run_ids[run], metrics=[Metric(k, v, 0, 1) for k, v in logged.items()])
    return sweep


def test_the_fp32_winner_is_not_the_int8_winner(tmp_path, tiny_data, students):  # noqa: F811
    sweep = int8_sweep(tmp_path, tiny_data, students, "hand")
    client = MlflowClient(sweep.uri)
    assert select_champion(sweep.uri, "hand", log=lambda line: None).run_name == "accurate-slow"  # the sweep's fp32
    fp32 = client.get_run(sweep.parent_run_id).data.metrics
    assert (fp32["pareto_size"], fp32["pareto_hypervolume"]) == (2, pytest.approx((135 + 8280 - 120) / 18150))

    lines: list[str] = []
    champion = select_champion(sweep.uri, "hand", precision="int8", log=lines.append)
    assert champion.run_name == "fast"
    assert any(line.startswith("sweep ") and "ranked by val_accuracy_int8 (max)" in line for line in lines)
    assert any("chosen on its int8 figures" in line for line in lines)
    assert any("same predicted class as fp32 on 97.00% of the validation split" in line for line in lines)
    # `fast` dominates at int8: a front of one, 0.78 * (2.2 - 0.4) * (3300 - 1000) of 1 * 2.2 * 3300
    int8 = client.get_run(sweep.parent_run_id).data.metrics
    assert (int8["pareto_size"], int8["pareto_hypervolume"]) == (1, pytest.approx(0.78 * 1.8 * 2300 / 7260))
    version = client.get_model_version_by_alias("hand", "champion")
    assert version.tags["kdsweep.precision"] == "int8"
    assert version.tags["kdsweep.int8_agreement"] == "0.9700"
    assert version.tags["kdsweep.run_id"] == sweep.run_ids["fast"]


def test_select_reselects_on_int8_under_a_tighter_budget_without_training(tmp_path, tiny_data, students, capsys):  # noqa: F811
    sweep = int8_sweep(tmp_path, tiny_data, students, "tight")
    args = ["--tracking-uri", sweep.uri, "--experiment", "tight", "--precision", "int8"]
    assert main([*args, "--max-latency-ms", "1"]) == 0
    out = capsys.readouterr().out
    assert "champion: fast" in out
    assert main([*args, "--max-latency-ms", "0.3"]) == 1  # `fast` takes 0.4 ms at int8
    assert "no champion: none of 2 finished trials with a model meets latency_ms <= 0.3" in capsys.readouterr().out


def test_int8_selection_names_the_students_without_int8_figures(tmp_path, tiny_data, students):  # noqa: F811
    sweep = int8_sweep(tmp_path, tiny_data, students, "partial", {"fast": INT8["fast"]})
    lines: list[str] = []
    assert select_champion(sweep.uri, "partial", precision="int8", log=lines.append).run_name == "fast"
    assert "at int8: 1 finished student(s) have no int8 figures and do not compete: accurate-slow" in lines


def test_int8_selection_of_a_sweep_never_quantized_is_one_line_and_exit_2(tmp_path, tiny_data, students, capsys):  # noqa: F811
    sweep = int8_sweep(tmp_path, tiny_data, students, "fp32only", {})
    assert main(["--tracking-uri", sweep.uri, "--experiment", "fp32only", "--precision", "int8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --precision: no student of sweep "), err
    assert "was measured at int8" in err
    assert err.count("\n") == 1
    assert not MlflowClient(sweep.uri).search_registered_models()


# ---------------------------------------------------------------- a real int8 stage


@pytest.fixture(scope="module")
def staged(tmp_path_factory, tiny_data, students):  # noqa: F811
    """The int8 stage on a hand-made sweep of real tiny students, then selection on its figures."""
    directory = tmp_path_factory.mktemp("staged")
    sweep = make_sweep(directory.as_uri() + "/mlruns", "staged", directory, tiny_data, students)
    client = MlflowClient(sweep.uri)
    runs = sweep_runs(client, find_parent(client, "staged", sweep.parent_run_id))
    lines: list[str] = []
    figures = int8_stage(client, runs, tiny_data, threads=1, log=lines.append)
    champion = select_champion(sweep.uri, "staged", precision="int8", log=lines.append)
    return sweep, figures, champion, lines


def test_the_stage_quantizes_the_top_finished_students_only(staged, tiny_data):
    sweep, figures, _, lines = staged
    # the stopped and the model-less runs cannot ship: only the two finished with a model
    assert {f.name for f in figures.values()} == {"accurate-slow", "fast"}
    assert set(figures) == {sweep.run_ids["accurate-slow"], sweep.run_ids["fast"]}
    assert lines[0].startswith("\nint8: 2 top student(s) exported to ONNX, statically quantized (calibrated on 256")
    for run_id, measured in figures.items():
        logged = MlflowClient(sweep.uri).get_run(run_id).data.metrics
        assert logged["val_accuracy_int8"] == measured.val_accuracy_int8
        assert logged["latency_ms_int8"] == measured.latency_ms_int8 > 0
        assert logged["int8_agreement"] == measured.agreement
        assert measured.images == len(tiny_data.val)


def test_the_logged_int8_figures_are_what_the_int8_file_computes(staged, tiny_data, students, tmp_path):  # noqa: F811
    """The registered version carries the int8 file; run again here, it gives the logged accuracy and agreement."""
    sweep, figures, champion, _ = staged
    assert champion is not None
    assert champion.run_id in figures
    mlflow.set_tracking_uri(sweep.uri)
    folder = mlflow.artifacts.download_artifacts(artifact_uri=champion.model_uri, dst_path=str(tmp_path))
    session = ort.InferenceSession(f"{folder}/{INT8_DIR}/{INT8_FILE}", providers=["CPUExecutionProvider"])
    images, labels = split_images(tiny_data, tiny_data.val), tiny_data.val.labels  # normalised, as the model sees them
    int8 = torch.from_numpy(session.run(None, {"input": np.ascontiguousarray(images.numpy())})[0]).argmax(1)
    fp32 = predict(students[champion.run_name].student, tiny_data, "val")[0].argmax(1)
    measured = figures[champion.run_id]
    assert measured.val_accuracy_int8 == pytest.approx(float((int8 == labels).float().mean()))
    assert measured.agreement == pytest.approx(float((int8 == fp32).float().mean()))
    assert measured.val_accuracy == pytest.approx(float((fp32 == labels).float().mean()))
    ranked = sorted(figures.values(), key=lambda f: (-f.val_accuracy_int8, f.latency_ms_int8))
    assert champion.run_id == ranked[0].run_id  # the best at int8 (one seed each, no constraint)


def test_to_quantize_takes_the_confirmed_configurations_else_the_top_three():
    def run(name: str, accuracy: float, seed: int, lr: str) -> TrialRun:
        return TrialRun(name, name, "FINISHED", {"seed": str(seed), "lr": lr}, {"val_accuracy": accuracy}, "m")

    single = [run(f"c{i}", 0.5 + i / 10, 0, str(i)) for i in range(5)]
    assert [r.name for r in to_quantize(single, "val_accuracy", "max", False)] == ["c4", "c3", "c2"]
    confirmed = [*single, run("c0-s1", 0.5, 1, "0")]  # c0 has two seeds: it alone is confirmed, both seeds go
    assert [r.name for r in to_quantize(confirmed, "val_accuracy", "max", False)] == ["c0", "c0-s1"]


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_a_sweep_at_int8_ranks_and_registers_on_its_int8_figures(ray_session, mlflow_server, tmp_path):
    from test_sweep import TINY_SPACE, sweep

    space = {
        **TINY_SPACE,
        "budget": {"epochs": 1, "num_samples": 1},
        "scheduler": {"name": "none"},
        "fixed": {**TINY_SPACE["fixed"], "alpha": 0.0, "measure_latency": True},  # no teacher: int8 is the point
        "search": {"student": {"choice": ["small_cnn"]}, "width": {"grid": [4, 8]}},  # two configurations
    }
    code, rows, uri = sweep(tmp_path, space, "--precision", "int8", name="int8-e2e", uri=mlflow_server)
    assert code == 0
    assert all({"val_accuracy_int8", "latency_ms_int8", "int8_agreement"} <= set(row["metrics"]) for row in rows)
    [champion] = [row for row in rows if row["champion"]]
    best = max(rows, key=lambda row: (row["metrics"]["val_accuracy_int8"], -row["metrics"]["latency_ms_int8"]))
    assert champion["mlflow_run_id"] == best["mlflow_run_id"]
    client = MlflowClient(uri)
    version = client.get_model_version_by_alias("int8-e2e", "champion")
    assert version.tags["kdsweep.precision"] == "int8"
    parent = client.get_run(version.tags["kdsweep.parent_run_id"]).data.metrics
    assert parent["champion_val_accuracy_int8"] == champion["metrics"]["val_accuracy_int8"]
    assert 1 <= parent["pareto_size"] <= 2
    assert 0 < parent["pareto_hypervolume"] < 1
