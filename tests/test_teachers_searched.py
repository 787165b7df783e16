"""Several teachers in one sweep: `teacher` searched like `student`, each teacher prepared and cached once."""

from __future__ import annotations

import numpy as np
import pytest
import ray
import torch
from mlflow.tracking import MlflowClient
from test_sweep import TINY_SPACE, sweep, write_space

from kdsweep.config import load_config
from kdsweep.errors import ConfigError
from kdsweep.sweep.teacher_stage import find_teachers, teacher_stage
from kdsweep.teachers import build_teacher_cache

TWO = {
    **{k: v for k, v in TINY_SPACE.items() if k != "teacher"},
    "teachers": {"cnn": {"arch": "small_cnn", "epochs": 2}, "resnet": {"arch": "resnet8", "epochs": 1}},
    "budget": {"epochs": 2, "num_samples": 4},
    "scheduler": {"name": "none"},
    "searcher": {"name": "random", "max_concurrent": 2, "seed": 4},  # draws both teachers and both losses
    "fixed": {**TINY_SPACE["fixed"], "student": "small_cnn", "width": 4},
    "search": {
        "teacher": {"choice": ["cnn", "resnet"]},
        "temperature": {"uniform": [2.0, 6.0]},
        "loss": {"choice": ["kd", "dist"]},
    },
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"search": {"temperature": {"uniform": [2.0, 6.0]}}}, "search.teacher: 2 teachers: search over them"),
        ({"search": {"teacher": {"choice": ["cnn", "resnett"]}}}, "unknown teacher 'resnett'; did you mean 'resnet'?"),
        ({"search": {"teacher": {"uniform": [0, 1]}}}, "search.teacher: is a name: search it with choice or grid"),
        ({"teachers": {"cnn": {"arch": "small_cnnn"}}}, "teachers.cnn.arch: unknown model 'small_cnnn'"),
        ({"fixed": {**TINY_SPACE["fixed"], "teacher": "big"}}, "fixed.teacher: unknown teacher 'big'"),
    ],
)
def test_teachers_that_cannot_be_chosen_are_refused_by_field(tmp_path, change, message):
    space = {**TWO, **change}
    if "fixed" in change:
        space["search"] = {"temperature": {"uniform": [2.0, 6.0]}}
    with pytest.raises(ConfigError) as error:
        load_config(write_space(tmp_path, space))
    assert message in str(error.value)


def test_each_teacher_is_cached_exactly_as_alone(ray_session, tmp_path, tiny_data):
    config = load_config(write_space(tmp_path, TWO))
    found = find_teachers(config, tiny_data, in_store=False, log=lambda line: None)
    assert sorted(found) == ["cnn", "resnet"]  # each found on disk (earlier tests trained them) or None
    staged = teacher_stage(config, tiny_data, ray.put(tiny_data), found, log=lambda line: None)
    assert sorted(staged) == ["cnn", "resnet"]
    caches = {name: ray.get(s.logit_source) for name, s in staged.items()}
    for name, cache in caches.items():
        module = staged[name].teacher.module
        alone = build_teacher_cache(module, tiny_data, 2, torch.device("cpu"), 1024, log=lambda line: None)
        assert np.array_equal(cache.train, alone.train)
        assert np.array_equal(cache.views, alone.views)
        assert np.array_equal(cache.val, alone.val)
        predicted = cache.val.astype(np.float32).argmax(1)
        assert staged[name].val_accuracy == pytest.approx((predicted == tiny_data.val.labels.numpy()).mean())
    assert not np.array_equal(caches["cnn"].val, caches["resnet"].val)
    assert staged["cnn"].teacher.meta.arch == "small_cnn"
    assert staged["resnet"].teacher.meta.arch == "resnet8"


def test_a_sweep_over_two_teachers_trains_each_once_and_compares_each_pair(
    ray_session, mlflow_server, tmp_path, capsys
):
    code, rows, uri = sweep(tmp_path, TWO, name="two", uri=mlflow_server, baselines=True)
    printed = capsys.readouterr().out
    assert code == 0
    for name in ("cnn", "resnet"):  # prepared once each (trained here, or by an earlier test on this data)
        assert len([line for line in printed.splitlines() if line.startswith(f"teacher {name}: ")]) == 1
    trials = [row for row in rows if row["role"] == "trial"]
    assert {row["config"]["teacher"] for row in trials} == {"cnn", "resnet"}
    assert [row["role"] for row in rows].count("baseline") == 1, "one student: one baseline serves both teachers"
    client = MlflowClient(uri)
    parent = client.get_run(client.get_run(trials[0]["mlflow_run_id"]).data.tags["mlflow.parentRunId"])
    teacher_runs = {parent.data.tags[f"kdsweep.teacher_run_id.{name}"] for name in ("cnn", "resnet")}
    assert len(teacher_runs) == 2
    for row in trials:
        teacher = row["config"]["teacher"]
        assert row["vs_scratch"]["teacher_val_accuracy"] == pytest.approx(
            parent.data.metrics[f"teacher.{teacher}.val_accuracy"]
        )
        assert client.get_run(row["mlflow_run_id"]).data.params["teacher"] == teacher
    header = next(line for line in printed.splitlines() if line.startswith("rank "))
    assert "teacher" in header.split()
    later = tmp_path / "later"
    later.mkdir()
    code, _, _ = sweep(later, TWO, name="two-again", uri=uri)  # a later sweep on the same data
    assert code == 0
    printed = capsys.readouterr().out
    assert all(f"teacher {name}: cached" in printed for name in ("cnn", "resnet")), "reused, not trained again"
