"""The sweep end to end on a real Ray runtime and a real MLflow store: ASHA, Optuna, retries, bad input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import faults
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image
from processes import servers_of

from kdsweep import search

TINY_SPACE = {
    "data": {"name": "synthetic", "channels": 1, "image_size": 8, "num_classes": 4, "num_samples": 160},
    "teacher": {"arch": "small_cnn", "epochs": 2},
    "budget": {"epochs": 2, "num_samples": 3},
    "confirm": {"top": 0},  # no confirmation over seeds unless a test is about it (test_confirm.py)
    "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
    "searcher": {"name": "random", "max_concurrent": 2, "seed": 1},
    "resources": {"cpus_per_trial": 1, "max_failures": 1},
    # 4 classes, a few validation images: near-chance accuracy is the rule, not a collapse (test_collapse.py)
    # No cost figures unless a test is about them: the sweep measures each student's latency before its trials.
    "fixed": {"batch_size": 32, "lr": 0.05, "stop_at_chance": False, "measure_latency": False},
    "search": {
        "student": {"choice": ["small_cnn", "resnet8"]},
        "width": {"choice": [4, 8], "when": {"student": "small_cnn"}},
        "temperature": {"uniform": [2.0, 6.0]},
        "alpha": {"uniform": [0.5, 1.0]},
        "loss": {"choice": ["kd", "dkd"]},
        "beta": {"uniform": [1.0, 8.0], "when": {"loss": "dkd"}},
    },
}


def write_space(tmp_path: Path, space: dict, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(space))
    return path


def sweep(
    tmp_path: Path, space: dict, *extra: str, name: str = "tiny", uri: str | None = None, baselines: bool = False
) -> tuple[int, list[dict], str]:
    """`python -m kdsweep.search` in-process; without scratch baselines unless a test is about them."""
    uri = uri or f"sqlite:///{tmp_path / 'mlflow.db'}"
    extra = extra if baselines else (*extra, "--no-baselines")
    out = tmp_path / f"{name}.json"
    code = search.main(
        [
            "--space",
            str(write_space(tmp_path, space)),
            "--name",
            name,
            "--storage",
            str(tmp_path / "results"),
            "--tracking-uri",
            uri,
            "--output-json",
            str(out),
            *extra,
        ]
    )
    rows = json.loads(out.read_text()) if out.exists() else []
    return code, rows, uri


def assert_baselines(trials: list[dict], baselines: list[dict], uri: str, val_size: int) -> None:
    """One scratch baseline per distinct student, run to its last epoch (never stopped early), and each
    trial compared with its own at the trial's last epoch: in the rows and in MLflow."""

    def student(config: dict) -> tuple:
        return config["student"], config.get("width")

    epochs = TINY_SPACE["budget"]["epochs"]
    assert sorted(student(b["config"]) for b in baselines) == sorted({student(t["config"]) for t in trials})
    client = MlflowClient(uri)
    teacher = client.get_run(client.get_run(trials[0]["mlflow_run_id"]).data.tags["mlflow.parentRunId"])
    teacher = teacher.data.metrics["teacher_val_accuracy"]
    for b in baselines:
        assert b["config"]["alpha"] == 0
        assert "temperature" not in b["config"]
        assert "kd_gain" not in b["metrics"]
        assert b["status"] == "FINISHED"
        assert b["metrics"]["epoch"] == epochs
        assert "kdsweep.baseline" in client.get_run(b["mlflow_run_id"]).data.tags
    for t in trials:
        [b] = [b for b in baselines if student(b["config"]) == student(t["config"])]
        history = {m.step: m.value for m in client.get_metric_history(b["mlflow_run_id"], "val_accuracy")}
        epoch, compared = int(t["metrics"]["epoch"]), t["vs_scratch"]
        assert compared["epoch"] == epoch
        assert compared["baseline_val_accuracy"] == pytest.approx(history[epoch])
        assert compared["teacher_val_accuracy"] == pytest.approx(teacher)
        gain = t["metrics"]["val_accuracy"] - history[epoch]
        run = client.get_run(t["mlflow_run_id"])
        assert t["metrics"]["kd_gain"] == pytest.approx(gain)
        assert run.data.metrics["kd_gain"] == pytest.approx(gain)
        assert run.data.tags["kdsweep.vs_scratch_epoch"] == str(epoch)
        if teacher - history[epoch] >= 1 / val_size:
            gap = gain / (teacher - history[epoch])
            assert t["metrics"]["gap_closed"] == pytest.approx(gap)
            assert run.data.metrics["gap_closed"] == pytest.approx(gap)
        else:
            assert "gap_closed" not in t["metrics"]
            assert "no better than scratch" in compared["note"]


def child_runs(uri: str, experiment: str):
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([experiment_id], "tags.`kdsweep.role` = 'trial'")


def test_asha_random_sweep_finishes_with_conditional_params_and_one_run_per_trial(
    ray_session, tmp_path, tiny_data, capsys
):
    space = {**TINY_SPACE, "fixed": {**TINY_SPACE["fixed"], "measure_latency": True}}
    code, rows, uri = sweep(tmp_path, space, baselines=True)
    assert code == 0
    # The first line after the leaderboard's rows answers: did distillation pay, how sure.
    out = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(out) if line.startswith("leaderboard ("))
    after = next(line for line in out[start + 3 :] if not line[:1].isdigit() and not line.startswith("      "))
    assert after.startswith("distillation "), after
    assert after.endswith(f"validation {len(tiny_data.val)} images, one image = {100 / len(tiny_data.val):.2f} points")
    trials = [row for row in rows if row["role"] == "trial"]
    baselines = [row for row in rows if row["role"] == "baseline"]
    assert len(trials) == 3
    assert baselines
    assert {row["status"] for row in rows} <= {"FINISHED", "STOPPED"}
    assert [row["rank"] for row in rows] == list(range(1, len(rows) + 1))
    for row in trials:
        config = row["config"]
        assert ("width" in config) == (config["student"] == "small_cnn")
        assert ("beta" in config) == (config["loss"] == "dkd")
        assert 0.5 <= config["alpha"] <= 1.0
        assert row["mlflow_run_id"]
    assert_baselines(trials, baselines, uri, len(tiny_data.val))
    runs = child_runs(uri, "tiny")
    assert sorted(r.info.run_id for r in runs) == sorted(row["mlflow_run_id"] for row in rows)
    finished = [r for r in runs if r.data.tags["kdsweep.outcome"] == "FINISHED"]
    assert finished
    assert all("kdsweep.model_uri" in r.data.tags for r in finished)
    assert sum(row.get("champion", False) for row in rows) == 1
    # Scratch baselines compete: one seed each, the champion is the best finished run, of either kind.
    [champion] = [row for row in rows if row.get("champion")]
    finished_rows = [row for row in rows if row["status"] == "FINISHED"]
    assert champion["metrics"]["val_accuracy"] == max(row["metrics"]["val_accuracy"] for row in finished_rows)
    assert all(row["seeds"]["seeds"] == 1 and not row["seeds"]["confirmed"] for row in finished_rows)
    client = MlflowClient(uri)
    for run in runs:
        row = next(row for row in rows if row["mlflow_run_id"] == run.info.run_id)
        assert run.data.params["student"] == row["config"]["student"]
        if row["role"] == "trial":
            assert float(run.data.params["temperature"]) == pytest.approx(row["config"]["temperature"])
        assert run.data.params["lr"] == "0.05"
        assert run.data.params["data.name"] == "synthetic"
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == list(range(1, int(row["metrics"]["epoch"]) + 1))
        best = max(sorted(history, key=lambda m: m.step), key=lambda m: m.value)  # the first epoch that reached it
        assert run.data.metrics["best_val_accuracy"] == pytest.approx(best.value)
        assert run.data.metrics["best_epoch"] == best.step
        [used] = run.inputs.dataset_inputs  # MLflow's dataset tracking: what it is, not the data
        assert (used.dataset.name, used.dataset.digest) == ("synthetic", tiny_data.digest)
        assert json.loads(used.dataset.profile)["train"] == len(tiny_data.train)
        assert {(t.key, t.value) for t in used.tags} == {("mlflow.data.context", "training")}
        assert run.data.metrics["val_accuracy"] == pytest.approx(row["metrics"]["val_accuracy"])
        assert {"train_ce", "lr", "params", "latency_ms"} <= set(run.data.metrics)
        assert ({"train_kd", "teacher_agreement"} <= set(run.data.metrics)) == (row["role"] == "trial")
        # An early stop is not a failure: FINISHED in MLflow, the outcome in its tag.
        assert run.info.status == "FINISHED"
        assert run.data.tags["kdsweep.outcome"] == row["status"]
        assert (run.data.tags.get("kdsweep.stopped_early") == "true") == (row["status"] == "STOPPED")
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.data.tags["kdsweep.role"] == "parent"
    assert parent.data.tags["dataset"] == "synthetic"
    assert "teacher_test_accuracy" in parent.data.metrics
    assert "kdsweep.teacher_run_id" in parent.data.tags
    artifacts = [a.path for a in client.list_artifacts(parent.info.run_id, "search_space")]
    assert "search_space/space.yaml" in artifacts


def test_a_hyperband_sweep_stops_a_trial_and_runs_every_baseline_its_whole_budget(
    ray_session, mlflow_server, tmp_path, tiny_data
):
    # HyperBand (max_t 2, eta 2) puts trials 1-2 in a bracket that runs them 2 epochs, trials 3-4 in one that
    # judges them at epoch 1 (the first to get there waits, paused) and stops one of the two.
    space = {
        **TINY_SPACE,
        "budget": {"epochs": 2, "num_samples": 4},
        "scheduler": {"name": "hyperband", "reduction_factor": 2},
        "searcher": {"name": "random", "seed": 1},  # no max_concurrent: HyperBand needs every trial at once
    }
    code, rows, uri = sweep(tmp_path, space, name="hyperband", uri=mlflow_server, baselines=True)
    assert code == 0
    trials = [row for row in rows if row["role"] == "trial"]
    baselines = [row for row in rows if row["role"] == "baseline"]
    assert len(trials) == 4
    assert sorted(row["status"] for row in trials) == ["FINISHED"] * 3 + ["STOPPED"]
    assert_baselines(trials, baselines, uri, len(tiny_data.val))
    assert sorted(r.info.run_id for r in child_runs(uri, "hyperband")) == sorted(row["mlflow_run_id"] for row in rows)


def test_a_sweep_where_no_trial_succeeds_exits_1_and_lists_the_failures(ray_session, mlflow_server, tmp_path):
    faults.inject(at_epoch=1)  # every time
    space = {
        **TINY_SPACE,
        "budget": {"epochs": 1, "num_samples": 1},
        "scheduler": {"name": "none"},
        "resources": {"cpus_per_trial": 1, "max_failures": 0},
        "plugins": ["faults"],
        "fixed": {**TINY_SPACE["fixed"], "student": faults.MODEL},
        "search": {"temperature": {"grid": [2.0, 4.0]}},
    }
    code, rows, uri = sweep(tmp_path, space, name="failing", uri=mlflow_server)
    assert code == 1
    assert sorted(row["config"]["temperature"] for row in rows) == [2.0, 4.0]  # the grid, once each
    assert all(row["status"] == "ERROR" and "injected failure" in row["error"] for row in rows)
    runs = child_runs(uri, "failing")
    assert len(runs) == 2
    assert all(r.info.status == "FAILED" for r in runs)
    assert faults.crashes() == 2


def tune_draws(space: dict, seed: int, samples: int = 8) -> list[dict]:
    """What trials get from random search (drawn as the sweep draws them, seeded with searcher.seed)."""
    from kdsweep.config import SweepConfig
    from kdsweep.space import trial_template, tune_param_space
    from kdsweep.sweep.baselines import drawn_points

    config = SweepConfig.model_validate(space)
    template = trial_template(config)
    return [
        template.trial(point).model_dump(exclude_unset=True)
        for point in drawn_points(tune_param_space(config), samples, seed).points
    ]


def test_conditional_parameters_are_drawn_where_they_apply_and_reproduced_by_searcher_seed():
    first, again, other = tune_draws(TINY_SPACE, seed=1), tune_draws(TINY_SPACE, seed=1), tune_draws(TINY_SPACE, seed=2)
    for config in first:
        assert ("width" in config) == (config["student"] == "small_cnn")
        assert ("beta" in config) == (config["loss"] == "dkd")
    conditional = [(config.get("width"), config.get("beta")) for config in first]
    assert any(width for width, _ in conditional)
    assert any(beta for _, beta in conditional)
    assert conditional == [(config.get("width"), config.get("beta")) for config in again]
    assert conditional != [(config.get("width"), config.get("beta")) for config in other]


SHIPPED_SPACES = ["cifar10", "cifar100", "default", "imagefolder", "timm", "zoo"]


@pytest.mark.parametrize("name", SHIPPED_SPACES)
def test_the_shipped_search_spaces_validate_by_name(name, tmp_path, monkeypatch):
    from kdsweep import config as spaces

    for split in ("train/a", "train/b", "test/a", "test/b"):
        (tmp_path / split).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # found in the package, not relative to where the command runs
    flags = {"data.name": str(tmp_path)} if name == "imagefolder" else {}
    config = spaces.load_config(name, **flags)
    assert spaces.shipped_spaces() == SHIPPED_SPACES
    assert config.experiment_name == name
    assert config.search
    assert config.objectives[0].metric == "val_accuracy"


def test_every_student_of_the_default_space_costs_at_most_a_tenth_of_its_teacher():
    """The default is chosen to show distillation (benchmarks/RESULTS.md): a teacher with room above its
    students, on data hard enough for the gap to show. Every student it can draw, at every width, needs
    at most a tenth of the teacher's FLOPs on that data."""
    from kdsweep.config import load_config
    from kdsweep.data import load_dataset
    from kdsweep.models import count_flops, create_model

    config = load_config("default")
    data = load_dataset(config.data)
    assert (data.name, data.num_classes, data.input_shape) == ("glyphs", 47, (1, 16, 16))
    assert len(data.val) >= 200, "one validation image must be at most 0.5 points"

    def flops(name: str, width: int | None = None) -> int:
        return count_flops(
            create_model(name, data.num_classes, data.in_channels, data.image_size, width), data.input_shape
        )

    teacher = flops(config.teacher.arch)
    widths = config.search["width"].values
    students = [
        (name, width)
        for name in config.search["student"].values
        for width in (widths if name == "small_cnn" else [None])
    ]
    assert {name for name, _ in students} == {"resnet8", "shufflenet_v2_x0_5", "small_cnn"}
    assert all(flops(name, width) <= teacher / 10 for name, width in students), students


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("cifr10", "unknown search space 'cifr10'; did you mean 'cifar10'? (choose from: cifar10, cifar100, default"),
        ("search_spaces/zoo.yaml", "file 'search_spaces/zoo.yaml' does not exist; did you mean 'zoo'? (shipped: "),
    ],
)
def test_a_space_that_is_neither_a_file_nor_shipped_is_one_line_with_the_shipped_names(
    space, message, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # where no search_spaces/ folder is
    assert search.main(["--space", space]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: --space: {message}"), line


def test_optuna_multi_objective_sweep_on_digits(ray_session, mlflow_server, tmp_path):
    space = {
        **TINY_SPACE,
        "data": {"name": "digits"},
        "teacher": {"arch": "resnet8", "epochs": 1},
        "objective": [{"metric": "val_accuracy", "mode": "max"}, {"metric": "latency_ms", "mode": "min"}],
        "fixed": {**TINY_SPACE["fixed"], "measure_latency": True},
        "scheduler": {"name": "none"},
        "searcher": {"name": "optuna", "max_concurrent": 2, "seed": 3},
        "budget": {"epochs": 1, "num_samples": 3},
        "confirm": {"top": 1, "seeds": 2},  # the best again with seed 1 (test_confirm.py has the details)
    }
    code, rows, _uri = sweep(tmp_path, space, name="optuna", uri=mlflow_server, baselines=True)
    assert code == 0
    search = [row for row in rows if "seed" not in row["config"]]
    trials = [row for row in search if row["role"] == "trial"]
    students = {(row["config"]["student"], row["config"].get("width")) for row in trials}
    assert len(trials) == 3, "Optuna's 3 samples, and a baseline per student"
    assert len(search) == 3 + len(students), "Optuna's 3 samples, and a baseline per student"
    best = max(row["metrics"]["val_accuracy"] for row in search)
    confirmed = [row for row in rows if row["config"].get("seed") == 1 and row["config"].get("alpha") != 0]
    [again] = confirmed or [row for row in rows if "seed" in row["config"]]  # a distilled one, else a scratch one
    tops = [row for row in search if row["metrics"]["val_accuracy"] == best and row["role"] == again["role"]]
    assert {k: v for k, v in again["config"].items() if k != "seed"} in [row["config"] for row in tops]
    assert len(rows) == len(search) + (2 if again["role"] == "trial" else 1), "it, and its baseline with seed 1"
    assert all(row["status"] == "FINISHED" for row in rows)
    assert all(row["metrics"]["latency_ms"] > 0 for row in rows)
    assert all(("beta" in row["config"]) == (row["config"]["loss"] == "dkd") for row in trials)
    assert all("kd_gain" in row["metrics"] for row in trials)


def test_a_later_sweep_of_the_experiment_reuses_its_baselines(ray_session, mlflow_server, tmp_path):
    space = {
        **TINY_SPACE,
        "budget": {"epochs": 2, "num_samples": 2},
        "scheduler": {"name": "none"},
        "fixed": {**TINY_SPACE["fixed"], "student": "small_cnn", "width": 4},
        "search": {"temperature": {"uniform": [2.0, 6.0]}, "alpha": {"uniform": [0.5, 1.0]}},
    }
    code, first, uri = sweep(tmp_path, space, name="again", uri=mlflow_server, baselines=True)
    assert code == 0
    [baseline] = [row for row in first if row["role"] == "baseline"]
    later = tmp_path / "later"
    later.mkdir()
    code, second, _ = sweep(later, space, name="again", uri=uri, baselines=True)  # a new sweep, same experiment
    assert code == 0, "the baseline was not retrained"
    assert [row["role"] for row in second] == ["trial", "trial"], "the baseline was not retrained"
    for row in second:
        assert row["vs_scratch"]["baseline_val_accuracy"] == pytest.approx(baseline["metrics"]["val_accuracy"])
        assert row["metrics"]["kd_gain"] == pytest.approx(
            row["metrics"]["val_accuracy"] - baseline["metrics"]["val_accuracy"]
        )


def test_a_crashing_trial_is_retried_from_its_checkpoint_in_the_same_run(ray_session, mlflow_server, tmp_path):
    faults.inject(at_epoch=2, times=1)
    space = {
        **TINY_SPACE,
        "budget": {"epochs": 3, "num_samples": 1},
        "scheduler": {"name": "none"},
        "plugins": ["faults"],
        "fixed": {**TINY_SPACE["fixed"], "student": faults.MODEL},
        "search": {"temperature": {"uniform": [2.0, 6.0]}},
    }
    code, rows, uri = sweep(tmp_path, space, name="retry", uri=mlflow_server)  # --no-baselines
    assert code == 0
    assert len(rows) == 1
    assert rows[0]["role"] == "trial"
    assert "kd_gain" not in rows[0]["metrics"]
    assert rows[0]["status"] == "FINISHED"
    results = [json.loads(line) for line in (Path(rows[0]["path"]) / "result.json").read_text().splitlines()]
    assert [r["epoch"] for r in results] == [1, 2, 3]  # epoch 1 was not trained again
    assert faults.crashes() == 1
    runs = child_runs(uri, "retry")
    assert len(runs) == 1
    history = MlflowClient(uri).get_metric_history(runs[0].info.run_id, "val_accuracy")
    assert sorted(m.step for m in history) == [1, 2, 3]


def test_a_diverging_trial_is_diverged_with_its_reason_never_retried_and_logs_no_nan(
    ray_session, mlflow_server, tmp_path, capsys
):
    space = {
        **TINY_SPACE,
        "budget": {"epochs": 2, "num_samples": 1},
        # ASHA ranks on val_loss, which diverges too: Tune must still get it in every report, or it fails the trial
        "objective": {"metric": "val_loss", "mode": "min"},
        "resources": {"cpus_per_trial": 1, "max_failures": 2},  # retries allowed: a divergence must not use them
        # lr 1e6 gives a NaN loss in the first epoch (lr 10 does not diverge on this data: BatchNorm absorbs it)
        "fixed": {**TINY_SPACE["fixed"], "student": "resnet8", "alpha": 0.0, "lr": 1e6},
        "search": {"temperature": {"choice": [4.0]}},
    }
    code, rows, uri = sweep(tmp_path, space, name="diverging", uri=mlflow_server)
    assert code == 1  # no trial succeeded
    [row] = rows
    assert row["status"] == "DIVERGED"
    assert row["error"] == "non-finite train_loss at epoch 1"
    assert all(math.isfinite(value) for value in row["metrics"].values())
    assert "DIVERGED\n      error: non-finite train_loss at epoch 1" in capsys.readouterr().out
    trial_dir = Path(row["path"])
    assert [json.loads(line)["epoch"] for line in (trial_dir / "result.json").read_text().splitlines()] == [1]
    assert not (trial_dir / "error.txt").exists()  # it ended; it did not fail (which would be retried)
    [state] = trial_dir.parent.glob("experiment_state-*.json")  # Tune's own count of the trial's failures
    assert [json.loads(meta)["num_failures"] for _, meta in json.loads(state.read_text())["trial_data"]] == [0]
    [run] = child_runs(uri, "diverging")
    assert run.info.status == "FINISHED"
    assert run.data.tags["kdsweep.outcome"] == "DIVERGED"
    assert run.data.tags["kdsweep.error"] == "non-finite train_loss at epoch 1"
    client = MlflowClient(uri)
    assert "train_loss" not in run.data.metrics
    assert "val_accuracy" in run.data.metrics
    for key in run.data.metrics:
        assert all(math.isfinite(m.value) for m in client.get_metric_history(run.info.run_id, key)), key


def test_a_sweep_named_with_quotes_runs_end_to_end_and_registers_its_champion(ray_session, mlflow_server, tmp_path):
    space = {
        **TINY_SPACE,
        "budget": {"epochs": 1, "num_samples": 1},
        "scheduler": {"name": "none"},
        "fixed": {**TINY_SPACE["fixed"], "alpha": 0.0, "measure_latency": False},  # no teacher: the point is the name
        "search": {"student": {"choice": ["small_cnn"]}},
    }
    name = "o'brien's \"sweep\""
    code, rows, uri = sweep(tmp_path, space, name=name, uri=mlflow_server)
    assert code == 0
    assert rows[0]["status"] == "FINISHED"
    assert rows[0]["champion"]
    [run] = child_runs(uri, name)
    assert run.info.run_id == rows[0]["mlflow_run_id"]
    version = MlflowClient(uri).get_model_version_by_alias(name, "champion")
    assert version.run_id == run.info.run_id


def bad(space_change: dict) -> dict:
    space = json.loads(json.dumps(TINY_SPACE))
    for dotted, value in space_change.items():
        node = space
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return space


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, "colour: unknown key"),
        (
            {"search.student.choice": ["resnet8", "mobilnet_v2"]},
            "search.student: unknown model 'mobilnet_v2'; did you mean 'mobilenet_v2'?",
        ),
        ({"teacher.arch": "resnet1800"}, "teacher.arch: unknown model 'resnet1800'"),
        ({"data.name": "digitz"}, "data.name: unknown dataset 'digitz'; did you mean 'digits'?"),
        ({"data.name": "/no/such/folder"}, "data.name: directory '/no/such/folder' does not exist"),
        ({"search.temperature.uniform": [0.0, 4.0]}, "search.temperature"),
        ({"search.alpha.uniform": [0.5, 1.5]}, "search.alpha"),
        ({"fixed.alpha": -0.1, "search": {"student": {"choice": ["resnet8"]}}}, "fixed.alpha"),
        ({"resources.cpus_per_trial": 64}, "resources.cpus_per_trial: 64 CPUs per trial, but no node has that many"),
        ({"resources.gpus_per_trial": 1.5}, "resources.gpus_per_trial"),
        ({"search.beta.when": {"loss": "kdd"}}, "search.beta.when: loss never takes ['kdd']"),
        ({"search.lr": {"uniform": [0.1, 0.01]}}, "search.lr"),
        ({"run.register_name": "models:/edge"}, "run.register_name: 'models:/edge' may not contain '/' or ':'"),
        (
            {"search.width": {"grid": [4, 8], "when": {"student": "small_cnn"}}},
            "search.width: a grid cannot be conditional (when:)",
        ),
        ({"teacher.optimizer": "adam"}, "teacher.optimizer: Input should be 'sgd' or 'adamw'"),
        ({"teachers": {"a": {"arch": "resnet8"}}}, "teachers: give one teacher (teacher:) or several by name"),
        ({"search.teacher": {"choice": ["a"]}}, "search.teacher: name the teachers to choose from under teachers:"),
        ({"objective.metric": "val_acc"}, "objective.metric: unknown metric 'val_acc'; did you mean 'val_accuracy'?"),
        (
            {"objective.metric": "test_accuracy"},
            "objective.metric: 'test_accuracy': trials are compared on the validation",
        ),
        (
            {"fixed.measure_latency": False, "objective": {"metric": "latency_ms", "mode": "min"}},
            "objective.metric: 'latency_ms' is reported only with measure_latency: true",
        ),
        (
            {"search.alpha": {"choice": [0.0, 0.5]}, "objective.metric": "teacher_agreement"},
            "objective.metric: 'teacher_agreement' is reported only by trials that distil",
        ),
        (
            {"scheduler.name": "hyperbnd"},
            "error: scheduler.name: unknown scheduler 'hyperbnd'; did you mean 'hyperband'? "
            "(choose from: asha, hyperband, none)",
        ),
        ({"searcher.name": "optina"}, "searcher.name: unknown searcher 'optina'; did you mean 'optuna'?"),
        (
            {"searcher.name": "optuna", "search.temperature": {"grid": [2.0, 4.0]}},
            "searcher.name: optuna cannot search a 'grid' domain: use choice",
        ),
        (
            {"objective": [{"metric": "val_accuracy"}, {"metric": "latency_ms", "mode": "min"}]},
            "objective: several objectives need a searcher that supports them (searcher.name: optuna)",
        ),
        ({"scheduler.grace_period": 3}, "scheduler.grace_period: 3 exceeds budget.epochs (2)"),
        (
            {"deploy": {"precision": "int8", "runtime": "torch"}},
            "deploy.runtime: torch cannot run the int8 students (ONNX Runtime's static int8 QDQ models)",
        ),
        (
            {"deploy": {"precision": "int8"}, "objective.metric": "val_macro_f1"},
            "deploy.precision: int8 students are measured on val_accuracy and latency, and the objective is "
            "'val_macro_f1'",
        ),
        (
            {"scheduler.name": "hyperband"},
            "searcher.max_concurrent: hyperband fills its brackets with the trials created at once",
        ),
        (
            {"scheduler.name": "hyperband", "searcher": {"name": "optuna"}},
            "scheduler.name: hyperband fills its brackets with the trials created at once, and optuna creates them "
            "one by one: use searcher.name: random",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_before_anything_runs(tmp_path, capsys, change, message):
    code, _rows, _uri = sweep(tmp_path, bad(change), name="bad")
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert message in err[0], err
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "results").exists()


def test_unreachable_tracking_server_exits_2_before_any_trial(tmp_path, capsys):
    code = search.main(
        [
            "--space",
            str(write_space(tmp_path, TINY_SPACE)),
            "--storage",
            str(tmp_path / "results"),
            "--tracking-uri",
            "http://127.0.0.1:9",
        ]
    )
    assert code == 2
    assert "--tracking-uri: cannot reach the MLflow server at http://127.0.0.1:9" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_a_bad_teacher_file_is_one_line_before_mlflow_or_ray_is_touched(tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    line = refused(tmp_path, capsys, space=bad({"teacher": {"checkpoint": str(tmp_path / "junk.pt")}}))
    assert line.startswith("error: teacher.checkpoint: ")
    assert "is not a readable checkpoint" in line


def test_input_refused_after_the_private_server_launched_stops_that_server(ray_session, tmp_path, capsys):
    """The private MLflow server starts while Ray does; input refused after that (torchvision weights a
    teacher cannot take, found where it is trained) still exits 2, logs nothing, leaves no server behind."""
    space = bad({"teacher": {"arch": "small_cnn", "epochs": 1, "weights": "IMAGENET9K"}})
    code, _rows, uri = sweep(tmp_path, space, name="refused-teacher")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err[-1].startswith("error: teacher.weights: "), err
    assert MlflowClient(uri).search_experiments(filter_string="name = 'refused-teacher'") == []
    assert list(tmp_path.glob(".mlflow-server-*.log")) == []
    assert servers_of(tmp_path) == [], "an mlflow server of this sweep is still running"


def refused(tmp_path: Path, capsys, *flags: str, space: dict = TINY_SPACE) -> str:
    """The one error line of a sweep refused before anything ran (nothing written where it would log)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["--space", str(write_space(tmp_path, space)), "--storage", str(tmp_path / "results")]
    code = search.main([*argv, "--tracking-uri", uri, *flags])  # a flag given twice: the last one counts
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1, err
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "results").exists()
    return err[0]


def test_a_sweep_name_that_is_no_folder_name_is_refused_before_anything_runs(tmp_path, capsys):
    assert refused(tmp_path, capsys, "--name", "team/sweep").startswith("error: run.name: 'team/sweep' may not contain")


# Tests run as root, where a chmod'ed directory still takes writes. What no one can write: a folder below
# a regular file (it cannot be made) and /proc (no file can be created in it).
@pytest.mark.parametrize("place", ["below-a-file", "proc"])
@pytest.mark.parametrize("flag", ["--storage", "--tracking-uri"])
def test_an_unwritable_storage_or_mlflow_folder_is_refused_before_anything_runs(tmp_path, capsys, flag, place):
    (tmp_path / "file").write_text("")
    folder = tmp_path / "file" / "sub" if place == "below-a-file" else Path("/proc/kdsweep")
    error = refused(tmp_path, capsys, flag, str(folder) if flag == "--storage" else f"sqlite:///{folder}/mlflow.db")
    expected = "which is a file, not a directory" if place == "below-a-file" else "cannot write the "
    assert error.startswith(f"error: {flag}: "), error
    assert expected in error, error


def test_a_full_disk_for_storage_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    from kdsweep import disk

    full = shutil.disk_usage(tmp_path)._replace(free=5 * 2**20)
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: full)
    error = refused(tmp_path, capsys)
    assert error.startswith("error: --storage: only 5 MB free for the sweep's results on the disk of ")
    assert error.endswith(f"at least {disk.MIN_FREE_MB} MB needed")


def test_streaming_more_loader_workers_than_a_trial_has_cpus_is_refused(tmp_path, capsys):
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / "tree" / split / cls).mkdir(parents=True)
            for i in range(10):
                Image.new("L", (8, 8), 20 * i).save(tmp_path / "tree" / split / cls / f"{i}.png")
    data = {"name": str(tmp_path / "tree"), "image_size": 8, "memory_limit_mb": 0, "num_workers": 2}
    error = refused(tmp_path, capsys, space={**TINY_SPACE, "data": data})  # cpus_per_trial: 1
    assert error.startswith("error: data.num_workers: 2 loader processes per trial, but a trial has 1 CPUs")


def test_resume_without_a_previous_sweep_is_bad_input(tmp_path, capsys):
    code = search.main(
        [
            "--space",
            str(write_space(tmp_path, TINY_SPACE)),
            "--storage",
            str(tmp_path / "results"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--name",
            "never",
            "--resume",
        ]
    )
    assert code == 2
    assert "--resume: no sweep named 'never'" in capsys.readouterr().err
