"""Selection: the Pareto front, constraints, ranking, and a real sweep in MLflow -> registry alias `champion`."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.models
import pytest
import torch
from mlflow.tracking import MlflowClient

from kdsweep.champion import select_champion
from kdsweep.confidence import binomial_se
from kdsweep.config import load_config
from kdsweep.data import DataSpec, split_images
from kdsweep.errors import ConfigError
from kdsweep.outcome import Outcome
from kdsweep.plots import confusion_figure
from kdsweep.search import main as search_main
from kdsweep.select import main
from kdsweep.selection import Constraints, TrialRun, pareto_front, rank, satisfies
from kdsweep.sweep_record import sweep_config
from kdsweep.tracking.runs import TAG_BASELINE, TAG_MODEL_URI, SweepTracker, TrialTracker
from kdsweep.trial import TrialConfig, evaluate, predict, run_trial

SPEC = DataSpec(name="synthetic", channels=1, image_size=8, num_classes=4, num_samples=160)  # = conftest's tiny_data
SPACE = """
data: {name: synthetic, channels: 1, image_size: 8, num_classes: 4, num_samples: 160}
budget: {epochs: 1, num_samples: 4}
scheduler: {name: none}
fixed: {alpha: 0.0, width: 4}
search:
  student: {choice: [small_cnn]}
"""
TRIAL = {"student": "small_cnn", "width": 4, "alpha": 0.0, "epochs": 1, "measure_latency": False, "num_threads": 1}
# run name -> (val_accuracy, latency_ms, params, outcome, logs its student): the logged values set the ranking
TRIALS = {
    "accurate-slow": (0.90, 5.0, 3000, Outcome.FINISHED, True),
    "fast": (0.80, 1.0, 1000, Outcome.FINISHED, True),
    "stopped": (0.95, 0.5, 500, Outcome.STOPPED, True),  # ASHA stopped it: never a champion, even with a model
    "no-model": (0.99, 0.5, 500, Outcome.FINISHED, False),  # its upload never happened
}


@pytest.fixture(scope="module", autouse=True)
def quick_mlflow():
    """This MLflow refuses file stores unless asked, and infers a model's pip requirements in a fresh
    Python that imports torch (~6 s a model on these cores); the registry needs neither."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        patch.setattr(
            mlflow.models, "infer_pip_requirements", lambda model_uri, flavor, fallback=None, **kwargs: fallback
        )
        torch.set_num_threads(1)
        yield


@pytest.fixture(scope="module")
def students(tiny_data):
    return {name: run_trial(TrialConfig(**TRIAL, seed=seed), tiny_data) for seed, name in enumerate(TRIALS)}


@dataclass(frozen=True)
class Sweep:
    uri: str
    experiment: str
    parent_run_id: str
    run_ids: dict[str, str]  # run name -> run id


def make_sweep(uri: str, experiment: str, directory, data, students, trials: tuple[str, ...] = tuple(TRIALS)) -> Sweep:
    """A finished sweep as the driver and its trials record it, without Ray in between."""
    (directory / "tiny.yaml").write_text(SPACE)
    tracker = SweepTracker(uri, experiment)
    context = tracker.start_parent(load_config(directory / "tiny.yaml"), data, resume=False)
    run_ids = {}
    for index, name in enumerate(trials):
        accuracy, latency, params, status, has_model = TRIALS[name]
        # Each its own configuration, as distinct sampled trials are (runs alike but for the seed are one).
        logged = {**TRIAL, "lr": 0.01 * (index + 1), "data": SPEC.model_dump()}
        trial = TrialTracker(context, f"trial_{index:05d}", name, logged, data)
        result = students[name]
        trial.log_epoch({**result.metrics, "val_accuracy": accuracy, "latency_ms": latency, "params": params})
        if has_model:
            logits, labels = predict(result.student, data, "val")
            trial.log_student(result.student, data, confusion_figure(labels.numpy(), logits.argmax(1).numpy(), 4))
        tracker.close_trial(trial.run_id, status)
        run_ids[name] = trial.run_id
    tracker.finish()
    return Sweep(uri, experiment, context.parent_run_id, run_ids)


@pytest.fixture
def sweep(tmp_path, tiny_data, students) -> Sweep:
    return make_sweep(tmp_path.as_uri() + "/mlruns", "tiny", tmp_path, tiny_data, students)


@pytest.fixture(scope="module")
def selected(tmp_path_factory, tiny_data, students):
    """One sweep selected once with no constraints; tests that only read the outcome share it."""
    directory = tmp_path_factory.mktemp("selected")
    sweep = make_sweep(directory.as_uri() + "/mlruns", "tiny", directory, tiny_data, students)
    lines: list[str] = []
    champion = select_champion(sweep.uri, "tiny", log=lines.append)
    return sweep, champion, lines


# ---------------------------------------------------------------- pure parts, by hand


@pytest.mark.parametrize(
    ("points", "senses", "front"),
    [
        # (0.7, 2) loses to (0.8, 1) on both; (0.8, 3) ties it on accuracy and is slower
        ([(0.9, 5.0), (0.8, 1.0), (0.7, 2.0), (0.8, 3.0)], ("max", "min"), [0, 1]),
        ([(0.8, 1.0), (0.8, 1.0), (0.5, 2.0)], ("max", "min"), [0, 1]),  # equal points are both on it
        # (0.8, 1, 1000) loses to (0.8, 1, 500) on size alone; (0.85, 6, 100) is the smallest
        ([(0.9, 5, 3000), (0.8, 1, 1000), (0.8, 1, 500), (0.85, 6, 100)], ("max", "min", "min"), [0, 2, 3]),
        ([(1, 2), (2, 1), (2, 2)], ("min", "min"), [0, 1]),
        ([(3.0,)], ("max",), [0]),
        ([], ("max", "min"), []),
    ],
)
def test_pareto_front_keeps_exactly_the_non_dominated_points(points, senses, front):
    assert pareto_front(points, senses) == front


@pytest.mark.parametrize(("points", "senses"), [([(1.0, 2.0)], ("max", "up")), ([(1.0, 2.0, 3.0)], ("max", "min"))])
def test_pareto_front_refuses_unknown_senses_and_ragged_points(points, senses):
    with pytest.raises(ValueError, match="every point needs one value per sense"):
        pareto_front(points, senses)


def trial_run(name: str, accuracy: float, latency: float, params: float, outcome: str = Outcome.FINISHED) -> TrialRun:
    metrics = {"val_accuracy": accuracy, "latency_ms": latency, "params": params}
    return TrialRun(name, name, outcome, {}, metrics, f"models:/m-{name}")


def test_rank_breaks_metric_ties_by_latency_then_params_and_puts_non_candidates_last():
    runs = [
        trial_run("slow", 0.8, 2.0, 100),
        trial_run("big", 0.8, 1.0, 900),
        trial_run("small", 0.8, 1.0, 500),
        trial_run("killed", 0.99, 0.1, 10, outcome=Outcome.STOPPED),
        trial_run("worse", 0.7, 0.1, 10),
    ]
    assert [r.name for r in rank(runs, "val_accuracy", "max")] == ["small", "big", "slow", "worse", "killed"]
    assert [r.name for r in rank(runs, "latency_ms", "min")] == ["worse", "small", "big", "slow", "killed"]


def test_constraints_are_inclusive_and_a_missing_metric_fails_its_limit():
    metrics = {"val_accuracy": 0.8, "latency_ms": 2.0, "params": 1000}
    assert satisfies(metrics, Constraints(max_latency_ms=2.0, max_params=1000, min_accuracy=0.8))
    assert not satisfies(metrics, Constraints(max_latency_ms=1.9))
    assert not satisfies(metrics, Constraints(max_params=999))
    assert not satisfies(metrics, Constraints(min_accuracy=0.81))
    assert not satisfies({"val_accuracy": 0.8}, Constraints(max_latency_ms=100.0))
    assert satisfies({}, Constraints())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_latency_ms": -1.0}, "--max-latency-ms"),
        ({"max_params": math.nan}, "--max-params"),
        ({"min_accuracy": 1.5}, "--min-accuracy"),
    ],
)
def test_constraints_refuse_impossible_limits_naming_the_flag(kwargs, field):
    with pytest.raises(ConfigError) as error:
        Constraints(**kwargs)
    assert error.value.field == field


def test_selection_reads_back_the_exact_config_the_sweep_logged(selected):
    sweep, _, _ = selected
    client = MlflowClient(sweep.uri)
    config = sweep_config(client, client.get_run(sweep.parent_run_id))
    assert config.data == SPEC
    assert config.budget.epochs == 1
    assert config.fixed == {"alpha": 0.0, "width": 4}
    child = client.get_run(sweep.run_ids["fast"])
    with pytest.raises(ConfigError, match=r"--parent-run-id: run .* has no search_space/resolved.json"):
        sweep_config(client, child)


# ---------------------------------------------------------------- a real sweep in a file store


def test_most_accurate_finished_run_wins_and_stopped_or_model_less_runs_never_do(selected):
    sweep, champion, lines = selected
    assert champion.run_name == "accurate-slow"
    assert champion.run_id == sweep.run_ids["accurate-slow"]
    assert champion.model_uri == "models:/tiny@champion"
    assert champion.version == 1
    front_line = next(line for line in lines if line.startswith("Pareto front"))
    assert sorted(front_line.split(": ", 1)[1].split(", ")) == ["accurate-slow", "fast"]
    board = "\n".join(lines)
    assert "STOPPED" in board
    assert "FINISHED (no model)" in board


def test_latency_limit_passes_over_the_most_accurate_run(sweep):
    champion = select_champion(
        sweep.uri, "tiny", sweep.parent_run_id, Constraints(max_latency_ms=2.0), log=lambda line: None
    )
    assert champion.run_name == "fast"
    version = MlflowClient(sweep.uri).get_model_version_by_alias("tiny", "champion")
    assert version.tags["kdsweep.run_id"] == sweep.run_ids["fast"]
    assert json.loads(version.tags["kdsweep.constraints"]) == {
        "max_latency_ms": 2.0,
        "max_params": None,
        "min_accuracy": None,
    }


def test_champion_alias_loads_the_logged_student(selected, tiny_data, students):
    sweep, champion, _ = selected
    mlflow.set_tracking_uri(sweep.uri)
    registered = mlflow.pytorch.load_model("models:/tiny@champion")
    logged = mlflow.pytorch.load_model(MlflowClient(sweep.uri).get_run(champion.run_id).data.tags[TAG_MODEL_URI])
    images = split_images(tiny_data, tiny_data.test)
    with torch.no_grad():
        expected = students["accurate-slow"].student.eval()(images)
        assert torch.equal(registered(images), logged(images))
        assert torch.allclose(registered(images), expected, atol=1e-5)


def test_test_metrics_are_logged_once_and_on_the_champion_only(selected, tiny_data, students):
    sweep, champion, _ = selected
    client = MlflowClient(sweep.uri)
    expected = evaluate(students["accurate-slow"].student, tiny_data, "test")
    for name, run_id in sweep.run_ids.items():
        logged = {k: v for k, v in client.get_run(run_id).data.metrics.items() if k.startswith("test_")}
        assert logged == (pytest.approx(expected) if name == "accurate-slow" else {}), name
    assert {k: champion.metrics[k] for k in expected} == pytest.approx(expected)

    lines: list[str] = []
    again = select_champion(sweep.uri, "tiny", log=lines.append)
    assert any("not evaluating again" in line for line in lines)
    assert len(client.get_metric_history(champion.run_id, "test_accuracy")) == 1
    assert again.version == champion.version  # the alias already holds this run: no second version


def test_pareto_plot_is_logged_on_the_parent(selected, tmp_path):
    sweep, _, _ = selected
    client = MlflowClient(sweep.uri)
    assert "pareto_front.png" in [a.path for a in client.list_artifacts(sweep.parent_run_id)]
    path = client.download_artifacts(sweep.parent_run_id, "pareto_front.png", str(tmp_path))
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_main_prints_the_champion_uri_of_the_most_recent_sweep(selected, monkeypatch, capsys):
    sweep, _, _ = selected
    MlflowClient(sweep.uri).create_experiment("newer-but-no-sweep")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sweep.uri)
    assert main([]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "models:/tiny@champion"


def test_no_feasible_candidate_exits_1_and_changes_no_model(selected, capsys):
    sweep, _, _ = selected
    client = MlflowClient(sweep.uri)
    before = [(v.version, v.aliases) for v in client.search_model_versions("name = 'tiny'")]
    # only the stopped (0.95) and the model-less (0.99) runs reach 0.93
    assert main(["--tracking-uri", sweep.uri, "--experiment", "tiny", "--min-accuracy", "0.93"]) == 1
    assert "no champion: none of 2 finished trials with a model meets val_accuracy >= 0.93" in capsys.readouterr().out
    assert [(v.version, v.aliases) for v in client.search_model_versions("name = 'tiny'")] == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--experiment", "tinny"], "error: --experiment: no experiment named 'tinny' in "),
        (["--experiment", "tiny", "--max-latency-ms", "fast"], "error: --max-latency-ms: invalid float value: 'fast'"),
        (["--experiment", "tiny", "--max-params", "-5"], "error: --max-params: must be a finite number >= 0, got -5.0"),
        (["--experiment", "tiny", "--metric", "val_acc"], "error: --metric: no candidate logged 'val_acc'"),
        (["--metric", "test_accuracy"], "error: --metric: 'test_accuracy' is measured on the test split"),
        (["--parent-run-id", "0123456789abcdef"], "error: --parent-run-id: no run '0123456789abcdef'"),
    ],
)
def test_bad_input_is_one_line_naming_the_flag_and_exits_2(selected, capsys, argv, message):
    sweep, _, _ = selected
    assert main(["--tracking-uri", sweep.uri, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert err.count("\n") == 1, err


def test_selection_never_ranks_by_a_test_metric(selected):
    sweep, _, _ = selected
    with pytest.raises(ConfigError, match="'test_macro_f1' is measured on the test split") as caught:
        select_champion(sweep.uri, "tiny", metric="test_macro_f1", log=lambda line: None)
    assert caught.value.field == "--metric"


def test_a_refused_file_store_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")  # this MLflow's default: file stores are opt-in
    assert main(["--tracking-uri", tmp_path.as_uri() + "/mlruns"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --tracking-uri: cannot open the MLflow store")
    assert "MLFLOW_ALLOW_FILE_STORE" in err


# ---------------------------------------------------------------- a real MLflow server


def test_select_on_a_real_mlflow_server(mlflow_server, tmp_path, tiny_data, students):
    sweep = make_sweep(
        mlflow_server, "tiny-server", tmp_path, tiny_data, students, ("accurate-slow", "fast", "stopped")
    )
    champion = select_champion(
        mlflow_server, "tiny-server", constraints=Constraints(max_params=2000), log=lambda line: None
    )
    assert champion.run_name == "fast"
    assert champion.model_uri == "models:/tiny-server@champion"
    assert "test_accuracy" in champion.metrics
    mlflow.set_tracking_uri(mlflow_server)
    served = mlflow.pytorch.load_model(champion.model_uri)
    with torch.no_grad():
        assert torch.allclose(
            served(split_images(tiny_data, tiny_data.test)),
            students["fast"].student.eval()(split_images(tiny_data, tiny_data.test)),
            atol=1e-5,
        )
    client = MlflowClient(mlflow_server)
    assert "pareto_front.png" in [a.path for a in client.list_artifacts(sweep.parent_run_id)]


# ---------------------------------------------------------------- the parent run's summary


def test_the_parent_run_summarises_the_sweep_as_metrics_and_a_markdown_leaderboard(sweep, tiny_data):
    from kdsweep.summary import NOTE_TAG, summarise_sweep

    champion = select_champion(sweep.uri, "tiny", log=lambda line: None)
    summarise_sweep(sweep.uri, sweep.parent_run_id, "val_accuracy", "max", champion)
    parent = MlflowClient(sweep.uri).get_run(sweep.parent_run_id)
    metrics = parent.data.metrics
    assert {k: metrics[k] for k in ("trials", "trials_finished", "trials_stopped", "trials_error")} == {
        "trials": 4,
        "trials_finished": 3,
        "trials_stopped": 1,
        "trials_error": 0,
    }
    assert metrics["best_val_accuracy"] == 0.99  # the best any trial that finished or was stopped reached
    assert metrics["champion_val_accuracy"] == 0.90
    assert "champion_test_accuracy" in metrics
    note = parent.data.tags[NOTE_TAG]
    assert "3 finished, 1 stopped early" in note
    assert "`models:/tiny@champion`" in note
    assert f"on **synthetic** (digest `{tiny_data.digest}`)" in note
    table = [line for line in note.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| rank | run |")
    assert len(table) == 2 + len(TRIALS)
    assert table[2].startswith("| 1 | accurate-slow |")
    assert "| STOPPED |" in table[-1]
    assert "`pareto_front.png`" in note
    assert "importance.png" not in note


def test_a_large_sweeps_description_is_cut_to_fit_mlflows_tag_limit():
    from types import SimpleNamespace

    from kdsweep.summary import NOTE_LIMIT, summary_note

    runs = [trial_run(f"trial-{i:04d}", 0.5 + i / 1e4, 1.0, 1000) for i in range(500)]
    parent = SimpleNamespace(inputs=None, data=SimpleNamespace(tags={}), info=SimpleNamespace(run_name="sweep-x"))
    note = summary_note(parent, rank(runs, "val_accuracy", "max"), "val_accuracy", "max", None, "--no-select", [])
    assert len(note) <= NOTE_LIMIT
    assert "| 1 | trial-0499 |" in note
    assert note.rstrip().endswith("more trials: see the runs table.")
    assert "**No champion**: --no-select." in note


# ---------------------------------------------------------------- scratch competes; seeds; what the version says

# (run name, val_accuracy, seed, scratch, kd_gain): one student from scratch and distilled, 2 seeds each
SEEDED = (
    ("scratch-s0", 0.95, 0, True, None),
    ("scratch-s1", 0.93, 1, True, None),
    ("kd-s0", 0.92, 0, False, -0.03),  # kd_gain: its seed's difference from scratch-s0, as the sweep logs it
    ("kd-s1", 0.91, 1, False, -0.02),
)


def make_seeded_sweep(uri: str, experiment: str, directory, data, student, runs=SEEDED) -> Sweep:
    """A finished sweep with scratch baselines and confirmation seeds, as the driver and trials record it."""
    (directory / "tiny.yaml").write_text(SPACE)
    tracker = SweepTracker(uri, experiment)
    context = tracker.start_parent(load_config(directory / "tiny.yaml"), data, resume=False)
    logits, labels = predict(student.student, data, "val")
    run_ids = {}
    for index, (name, accuracy, seed, scratch, kd_gain) in enumerate(runs):
        params = {**TRIAL, "seed": seed, "data": SPEC.model_dump()}
        if not scratch:
            params |= {"alpha": 0.9, "teacher": "resnet18", "temperature": 4.0}
        tags = {TAG_BASELINE: f"key-{seed}"} if scratch else {}
        trial = TrialTracker(context, f"trial_{index:05d}", name, params, data, tags=tags)
        trial.log_epoch({**student.metrics, "epoch": 1, "val_accuracy": accuracy})
        trial.log_student(student.student, data, confusion_figure(labels.numpy(), logits.argmax(1).numpy(), 4))
        if kd_gain is not None:
            tracker.log_gains(trial.run_id, kd_gain, None, 1)
        tracker.close_trial(trial.run_id, Outcome.FINISHED)
        run_ids[name] = trial.run_id
    tracker.finish()
    return Sweep(uri, experiment, context.parent_run_id, run_ids)


def test_a_scratch_student_wins_and_its_registered_version_says_what_it_is(
    mlflow_server, tmp_path, tiny_data, students
):
    sweep = make_seeded_sweep(mlflow_server, "seeded", tmp_path, tiny_data, students["fast"])
    lines: list[str] = []
    champion = select_champion(mlflow_server, "seeded", log=lines.append)
    assert (champion.kind, champion.run_id) == ("scratch", sweep.run_ids["scratch-s0"]), "the best seed of the best"
    assert (champion.stats.value.n, champion.stats.confirmed) == (2, True)
    # means 0.94 (scratch) and 0.915 (distilled)
    assert (
        "distillation did not beat scratch here: small_cnn(w4) from scratch 0.9400 (2 seeds) "
        "vs best distilled kd-s0 0.9150 (2 seeds), by 2.50 points"
    ) in lines
    # kd_gain -0.03, -0.02: mean -0.025, s 0.00707, half width t(0.975, 1) 12.706 * 0.00707 / sqrt(2) = 0.0635
    assert any(
        line.startswith(
            "distillation is not shown (the interval holds 0) for small_cnn(w4) (kd-s0): kd_gain "
            "-2.50 points (95% interval [-8.85, +3.85] over 2 seeds)"
        )
        for line in lines
    )
    client = MlflowClient(mlflow_server)
    version = client.get_model_version_by_alias("seeded", "champion")
    assert {k: version.tags[k] for k in ("kdsweep.kind", "kdsweep.teacher", "kdsweep.seeds", "kdsweep.confirmed")} == {
        "kdsweep.kind": "scratch",
        "kdsweep.teacher": "none",
        "kdsweep.seeds": "2",
        "kdsweep.confirmed": "true",
    }
    text, images = version.description, len(tiny_data.val)
    assert text.startswith("`small_cnn(w4)` trained from scratch (no teacher); parameters: ")
    assert f"val_accuracy 0.9500 ± {binomial_se(0.95, images):.4f} (binomial SE on {images} images)" in text
    assert f"test_accuracy {champion.metrics['test_accuracy']:.4f}" in text
    # 0.95, 0.93: mean 0.94, s 0.01414, half width 12.706 * 0.01414 / sqrt(2) = 0.1271
    assert "mean over 2 seeds 0.9400, 95% interval [0.8129, 1.0671] (confirmed)" in text
    assert "Distillation did not beat scratch here" in text
    assert sweep.parent_run_id in text

    distilled = select_champion(mlflow_server, "seeded", distilled_only=True, log=lambda line: None)
    assert (distilled.kind, distilled.run_id) == ("distilled", sweep.run_ids["kd-s0"])
    version = client.get_model_version_by_alias("seeded", "champion")
    assert (version.tags["kdsweep.kind"], version.tags["kdsweep.teacher"]) == ("distilled", "resnet18")
    assert version.description.startswith("`small_cnn(w4)` distilled from `resnet18` with loss `kd`; parameters: ")
    assert (
        "Gain over the same student from scratch, paired seed by seed: kd_gain -2.50 points "
        "(95% interval [-8.85, +3.85] over 2 seeds)."
    ) in version.description


def test_the_parent_summary_says_the_scratch_champion_and_how_sure(tmp_path, tiny_data, students):
    from kdsweep.summary import NOTE_TAG, summarise_sweep

    sweep = make_seeded_sweep(tmp_path.as_uri() + "/mlruns", "seeded", tmp_path, tiny_data, students["fast"])
    champion = select_champion(sweep.uri, "seeded", log=lambda line: None)
    summarise_sweep(sweep.uri, sweep.parent_run_id, "val_accuracy", "max", champion)
    parent = MlflowClient(sweep.uri).get_run(sweep.parent_run_id)
    metrics = parent.data.metrics
    assert (metrics["champion_scratch"], metrics["champion_seeds"], metrics["champion_confirmed"]) == (1, 2, 1)
    assert metrics["champion_val_accuracy_mean"] == pytest.approx(0.94)
    assert metrics["champion_val_accuracy_low"] == pytest.approx(0.94 - 0.12706, abs=1e-5)
    assert (metrics["configurations"], metrics["confirmed_configurations"]) == (2, 2)
    assert metrics["kd_gain_mean"] == pytest.approx(-0.025)
    assert metrics["kd_gain_high"] == pytest.approx(-0.025 + 0.06353, abs=1e-5)
    assert metrics["distillation_paid"] == 0
    note = parent.data.tags[NOTE_TAG]
    assert "**Does distillation pay?** Distillation is not shown (the interval holds 0) for small_cnn(w4)" in note
    assert "**Champion** (scratch, mean over 2 seeds 0.9400, 95% interval [0.8129, 1.0671])" in note
    assert "Distillation did not beat scratch here: small_cnn(w4) from scratch 0.9400" in note
    header = next(line for line in note.splitlines() if line.startswith("| rank |"))
    assert "| val_acc±SE | seeds | seed_mean±95% |" in header


def test_distilled_only_on_a_sweep_without_distilled_students_exits_2_and_registers_nothing(
    tmp_path, tiny_data, students, capsys
):
    sweep = make_seeded_sweep(
        tmp_path.as_uri() + "/mlruns", "scratch-only", tmp_path, tiny_data, students["fast"], SEEDED[:2]
    )
    assert main(["--tracking-uri", sweep.uri, "--experiment", "scratch-only", "--distilled-only"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --distilled-only: sweep sweep-"), err
    assert "has no distilled student that finished with a model (2 scratch baselines)" in err
    assert err.count("\n") == 1, err
    assert MlflowClient(sweep.uri).search_registered_models() == []


def test_distilled_only_on_a_space_that_never_distils_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # where the default store (./mlflow.db) would be made
    (tmp_path / "scratch.yaml").write_text(SPACE)  # fixed alpha 0: no trial distils
    assert search_main(["--space", "scratch.yaml", "--distilled-only"]) == 2
    err = capsys.readouterr().err
    assert err == "error: run.distilled_only: --distilled-only, but no trial of this space distils (alpha is 0)\n"
    assert not (tmp_path / "mlflow.db").exists()
