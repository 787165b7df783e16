"""The sweep end to end on a real Ray runtime and a real MLflow store: ASHA, Optuna, retries, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import faults
import pytest
import yaml
from mlflow.tracking import MlflowClient

from kdsweep import search

TINY_SPACE = {
    "data": {"name": "synthetic", "channels": 1, "image_size": 8, "num_classes": 4, "num_samples": 160},
    "teacher": {"arch": "small_cnn", "epochs": 2},
    "budget": {"epochs": 2, "num_samples": 3},
    "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
    "searcher": {"name": "random", "max_concurrent": 2, "seed": 1},
    "resources": {"cpus_per_trial": 1, "max_failures": 1},
    "fixed": {"batch_size": 32, "lr": 0.05},
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
    tmp_path: Path, space: dict, *extra: str, name: str = "tiny", uri: str | None = None
) -> tuple[int, list[dict], str]:
    uri = uri or f"sqlite:///{tmp_path / 'mlflow.db'}"
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


def child_runs(uri: str, experiment: str):
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([experiment_id], "tags.`kdsweep.role` = 'trial'")


def test_asha_random_sweep_finishes_with_conditional_params_and_one_run_per_trial(ray_session, tmp_path, tiny_data):
    code, rows, uri = sweep(tmp_path, TINY_SPACE)
    assert code == 0
    assert len(rows) == 3
    assert {row["status"] for row in rows} <= {"FINISHED", "STOPPED"}
    assert [row["rank"] for row in rows] == [1, 2, 3]
    for row in rows:
        config = row["config"]
        assert ("width" in config) == (config["student"] == "small_cnn")
        assert ("beta" in config) == (config["loss"] == "dkd")
        assert 0.5 <= config["alpha"] <= 1.0
        assert row["mlflow_run_id"]
    runs = child_runs(uri, "tiny")
    assert sorted(r.info.run_id for r in runs) == sorted(row["mlflow_run_id"] for row in rows)
    finished = [r for r in runs if r.data.tags["kdsweep.outcome"] == "FINISHED"]
    assert finished and all("kdsweep.model_uri" in r.data.tags for r in finished)
    assert sum(row.get("champion", False) for row in rows) == 1
    client = MlflowClient(uri)
    for run in runs:
        row = next(row for row in rows if row["mlflow_run_id"] == run.info.run_id)
        assert run.data.params["student"] == row["config"]["student"]
        assert float(run.data.params["temperature"]) == pytest.approx(row["config"]["temperature"])
        assert run.data.params["lr"] == "0.05" and run.data.params["data.name"] == "synthetic"
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
        assert {"train_ce", "train_kd", "lr", "teacher_agreement", "params", "latency_ms"} <= set(run.data.metrics)
        # An early stop is not a failure: FINISHED in MLflow, the outcome in its tag.
        assert run.info.status == "FINISHED" and run.data.tags["kdsweep.outcome"] == row["status"]
        assert (run.data.tags.get("kdsweep.stopped_early") == "true") == (row["status"] == "STOPPED")
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.data.tags["kdsweep.role"] == "parent" and parent.data.tags["dataset"] == "synthetic"
    assert "teacher_test_accuracy" in parent.data.metrics and "kdsweep.teacher_run_id" in parent.data.tags
    artifacts = [a.path for a in client.list_artifacts(parent.info.run_id, "search_space")]
    assert "search_space/space.yaml" in artifacts


def test_a_sweep_where_no_trial_succeeds_exits_1_and_lists_the_failures(ray_session, tmp_path):
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
    code, rows, uri = sweep(tmp_path, space, name="failing")
    assert code == 1
    assert sorted(row["config"]["temperature"] for row in rows) == [2.0, 4.0]  # the grid, once each
    assert all(row["status"] == "ERROR" and "injected failure" in row["error"] for row in rows)
    runs = child_runs(uri, "failing")
    assert len(runs) == 2 and all(r.info.status == "FAILED" for r in runs)
    assert faults.crashes() == 2


@pytest.mark.parametrize("name", ["default", "cifar10", "cifar100", "imagefolder"])
def test_the_shipped_search_spaces_validate(name, tmp_path):
    from kdsweep.config import SPACES_DIR, load_config

    for split in ("train/a", "train/b", "test/a", "test/b"):
        (tmp_path / split).mkdir(parents=True)
    flags = {"data.name": str(tmp_path)} if name == "imagefolder" else {}
    config = load_config(SPACES_DIR / f"{name}.yaml", **flags)
    assert config.search and config.objectives[0].metric == "val_accuracy"


def test_optuna_multi_objective_sweep_on_digits(ray_session, mlflow_server, tmp_path):
    space = {
        **TINY_SPACE,
        "data": {"name": "digits"},
        "teacher": {"arch": "resnet8", "epochs": 1},
        "objective": [{"metric": "val_accuracy", "mode": "max"}, {"metric": "latency_ms", "mode": "min"}],
        "scheduler": {"name": "none"},
        "searcher": {"name": "optuna", "max_concurrent": 2, "seed": 3},
        "budget": {"epochs": 1, "num_samples": 3},
    }
    code, rows, uri = sweep(tmp_path, space, name="optuna", uri=mlflow_server)
    assert code == 0
    assert len(rows) == 3 and all(row["status"] == "FINISHED" for row in rows)
    assert all(row["metrics"]["latency_ms"] > 0 for row in rows)
    assert all(("beta" in row["config"]) == (row["config"]["loss"] == "dkd") for row in rows)


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
    code, rows, uri = sweep(tmp_path, space, name="retry", uri=mlflow_server)
    assert code == 0
    assert rows[0]["status"] == "FINISHED"
    results = [json.loads(line) for line in (Path(rows[0]["path"]) / "result.json").read_text().splitlines()]
    assert [r["epoch"] for r in results] == [1, 2, 3]  # epoch 1 was not trained again
    assert faults.crashes() == 1
    runs = child_runs(uri, "retry")
    assert len(runs) == 1
    history = MlflowClient(uri).get_metric_history(runs[0].info.run_id, "val_accuracy")
    assert sorted(m.step for m in history) == [1, 2, 3]


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
    "change, message",
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
        ({"resources.cpus_per_trial": 64}, "resources.cpus_per_trial: 64.0 but the cluster has"),
        ({"resources.gpus_per_trial": 1.5}, "resources.gpus_per_trial"),
        ({"search.beta.when": {"loss": "kdd"}}, "search.beta.when: loss never takes ['kdd']"),
        ({"search.lr": {"uniform": [0.1, 0.01]}}, "search.lr"),
    ],
)
def test_bad_input_exits_2_with_one_line_before_anything_runs(tmp_path, capsys, change, message):
    code, rows, uri = sweep(tmp_path, bad(change), name="bad")
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
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


def test_a_killed_sweep_is_finished_by_resume_without_rerunning_finished_trials(ray_session, mlflow_server, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    space = {
        **TINY_SPACE,
        "data": {**TINY_SPACE["data"], "num_samples": 3000},
        "budget": {"epochs": 3, "num_samples": 4},
        "scheduler": {"name": "none"},
        "searcher": {"name": "random", "max_concurrent": 1, "seed": 2},
    }
    path = write_space(tmp_path, space)
    results, uri = tmp_path / "results", mlflow_server
    common = ["--space", str(path), "--name", "killed", "--storage", str(results), "--tracking-uri", uri, "--no-select"]
    driver = subprocess.Popen(
        [sys.executable, "-m", "kdsweep.search", *common, "--address", ray_session.get_runtime_context().gcs_address],
        env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def finished_trials() -> dict[str, str]:
        done = {}
        for result in (results / "killed").glob("*/result.json"):
            text = result.read_text()
            if text.count("\n") >= 3:
                done[result.parent.name] = text
        return done

    deadline = time.time() + 240
    while not finished_trials() and time.time() < deadline and driver.poll() is None:
        time.sleep(0.5)
    time.sleep(2)  # let Tune save the experiment state after the first trial finished
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = finished_trials()
    assert 1 <= len(before) < 4, "the driver must be killed part-way"

    out = tmp_path / "resumed.json"
    code = search.main([*common, "--resume", "--output-json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 4 and all(row["status"] == "FINISHED" for row in rows)
    after = finished_trials()
    for name, text in before.items():
        assert after[name] == text, f"finished trial {name} was run again"
    runs = child_runs(uri, "killed")
    assert len(runs) == 4 and len({r.data.tags["kdsweep.trial_id"] for r in runs}) == 4
