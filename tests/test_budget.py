"""The deploy budget as part of the search: feasibility decided before trials, infeasible students never trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from ray import tune
from torch import nn

from kdsweep import search
from kdsweep.config import Deploy, load_config
from kdsweep.constrained_optuna import ConstrainedOptunaSearch
from kdsweep.errors import ConfigError
from kdsweep.feasibility import (
    Architecture,
    Feasibility,
    architecture_of,
    check_some_fit,
    constraint_values,
    describe_skipped,
    feasible_draws,
    violations,
)
from kdsweep.models import ModelCost, create_model
from kdsweep.outcome import TAG_OUTCOME
from kdsweep.shipping.onnx_export import export_onnx
from kdsweep.shipping.quantize import calibration_batches
from kdsweep.shipping.runtime import OnnxRunner
from kdsweep.shipping.ship import ship_model
from kdsweep.shipping.spec import ShipSpec
from kdsweep.shipping.target import target_latency_ms
from kdsweep.space import OptunaSpace, trial_template, tune_param_space
from kdsweep.sweep.baselines import drawn_points
from kdsweep.sweep.cost_stage import architectures, latency_tag
from kdsweep.tracking.runs import TAG_INFEASIBLE, TAG_PARENT, TAG_ROLE, TAG_TRIAL_ID

SMALL, MEDIUM, LARGE = Architecture("small_cnn", 16), Architecture("small_cnn", 32), Architecture("resnet8")
COSTS = {
    SMALL: ModelCost(params=1_000, flops=20_000, latency_ms=0.5),
    MEDIUM: ModelCost(params=4_000, flops=80_000, latency_ms=1.0),
    LARGE: ModelCost(params=10_000, flops=300_000, latency_ms=4.0),
}


def test_violations_name_each_limit_exceeded_with_both_figures():
    deploy = Deploy(max_latency_ms=2.0, max_params=5_000)
    assert violations(COSTS[SMALL], deploy) == []
    assert violations(COSTS[LARGE], deploy) == [
        "latency_ms 4 ms > max_latency_ms 2 ms",
        "params 10,000 > max_params 5,000",
    ]
    assert violations(COSTS[LARGE], Deploy()) == []  # no budget: everything fits


def test_constraint_values_are_relative_excess_per_limit_set():
    deploy = Deploy(max_latency_ms=2.0, max_flops=100_000)
    small, large = constraint_values(COSTS[SMALL], deploy), constraint_values(COSTS[LARGE], deploy)
    assert small == pytest.approx({"max_latency_ms": 0.5 / 2 - 1, "max_flops": 0.2 - 1})  # -0.75, -0.8
    assert large == pytest.approx({"max_latency_ms": 1.0, "max_flops": 2.0})  # 4/2 - 1, 300k/100k - 1


@pytest.mark.parametrize(
    ("deploy", "message"),
    [
        (
            Deploy(max_latency_ms=0.4),
            "deploy.max_latency_ms: 0.4 ms excludes every student of the space: "
            "the smallest latency_ms is small_cnn-w16's 0.5 ms",
        ),
        (
            Deploy(max_params=999),
            "deploy.max_params: 999 excludes every student of the space: the smallest params is small_cnn-w16's 1,000",
        ),
        (Deploy(max_latency_ms=0.6, max_flops=10_000), "deploy.max_flops: 10,000 excludes every student"),
    ],
)
def test_a_budget_nothing_meets_names_the_limit_and_the_smallest_figure(deploy, message):
    with pytest.raises(ConfigError) as raised:
        check_some_fit(COSTS, deploy)
    assert str(raised.value) == message or message in str(raised.value)


def test_limits_each_met_by_some_student_but_never_together_are_bad_input_too():
    costs = {SMALL: ModelCost(1_000, 300_000, 0.5), LARGE: ModelCost(10_000, 20_000, 4.0)}
    with pytest.raises(ConfigError, match="no student of the space meets every limit at once: small_cnn-w16: flops"):
        check_some_fit(costs, Deploy(max_params=5_000, max_flops=100_000))
    check_some_fit(COSTS, Deploy(max_latency_ms=0.5))  # exactly at the limit fits


def test_feasible_draws_replace_infeasible_draws_from_the_same_seeded_stream():
    def draw(rng: np.random.RandomState) -> list[dict]:
        return [{"x": int(rng.randint(10))}]

    stream = [p["x"] for p in feasible_draws(draw, 30, seed=7, fits=lambda p: True).points]
    budgeted = feasible_draws(draw, 5, seed=7, fits=lambda p: p["x"] < 5)
    assert [p["x"] for p in budgeted.points] == [x for x in stream if x < 5][:5]
    assert len(budgeted.points) == 5
    # the skipped ones are the stream's infeasible draws before the fifth feasible one
    fifth = [i for i, x in enumerate(stream) if x < 5][4]
    assert [p["x"] for p in budgeted.skipped] == [x for x in stream[:fifth] if x >= 5]
    assert feasible_draws(draw, 5, seed=7, fits=lambda p: p["x"] < 5) == budgeted  # reproducible


def test_a_grid_drops_its_infeasible_points_without_replacing_them():
    space = {"student": tune.grid_search(["small_cnn", "resnet8", "mobilenet_v2"]), "lr": tune.uniform(0, 1)}
    draws = drawn_points(space, 2, seed=0, fits=lambda p: p["student"] != "resnet8")
    assert [p["student"] for p in draws.points] == ["small_cnn", "mobilenet_v2"] * 2
    assert [p["student"] for p in draws.skipped] == ["resnet8", "resnet8"]


def test_the_default_space_has_four_student_architectures():
    config = load_config()
    assert architectures(config) == [LARGE, Architecture("shufflenet_v2_x0_5"), SMALL, MEDIUM]


def test_random_search_never_draws_an_infeasible_student_and_counts_the_skipped():
    config = load_config()
    template = trial_template(config)
    costs = {**COSTS, Architecture("shufflenet_v2_x0_5"): ModelCost(50_000, 900_000, 9.0)}
    feasibility = Feasibility(template.trial, costs, Deploy(max_latency_ms=1.5))
    draws = drawn_points(tune_param_space(config), 12, 0, lambda p: not feasibility.violations(p))
    students = {architecture_of(template.trial(p)) for p in draws.points}
    assert len(draws.points) == 12
    assert students <= {SMALL, MEDIUM}
    assert {architecture_of(template.trial(p)) for p in draws.skipped} == {LARGE, Architecture("shufflenet_v2_x0_5")}
    line = describe_skipped(draws.skipped, feasibility)
    assert line.startswith(f"deploy budget: skipped {len(draws.skipped)} infeasible draw(s), never trained (resnet8 x")


def test_optuna_tells_infeasible_draws_as_infeasible_and_suggests_only_feasible_ones():
    config = load_config(overrides=["searcher.name=optuna"])
    template = trial_template(config)
    costs = {**COSTS, Architecture("shufflenet_v2_x0_5"): ModelCost(50_000, 900_000, 9.0)}
    feasibility = Feasibility(template.trial, costs, Deploy(max_latency_ms=1.5))
    searcher = ConstrainedOptunaSearch(feasibility, 0, space=OptunaSpace(config), metric="val_accuracy", mode="max")
    for index in range(8):
        sampled = searcher.suggest(f"t{index}")
        assert architecture_of(template.trial(sampled)) in (SMALL, MEDIUM)
        searcher.on_trial_complete(f"t{index}", {"val_accuracy": 0.5})
    study = searcher._ot_study
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert len(pruned) == len(searcher.skipped) > 0
    assert all(t.constraints["max_latency_ms"] > 0 for t in pruned)  # what TPE ranks infeasible trials by
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert all(t.constraints["max_latency_ms"] <= 0 for t in complete)
    assert len(complete) == 8


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--max-latency-ms", "0"], "deploy.max_latency_ms: Input should be greater than 0"),
        (["--max-params", "-5"], "deploy.max_params: Input should be greater than 0"),
        (["--max-flops", "0"], "deploy.max_flops: Input should be greater than 0"),
        (["--threads", "0"], "deploy.threads: Input should be greater than 0"),
        (["--runtime", "tflite"], "deploy.runtime: Input should be 'onnxruntime' or 'torch'"),
        (["--precision", "int4"], "deploy.precision: Input should be 'fp32' or 'int8'"),
        (["--precision", "int8", "--runtime", "torch"], "deploy.runtime: torch cannot run the int8 students"),
    ],
)
def test_bad_deploy_flags_exit_2_with_one_line_naming_the_field(tmp_path, capsys, flag, message):
    code = search.main(["--storage", str(tmp_path / "results"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db", *flag])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert message in err[0], err
    assert not (tmp_path / "m.db").exists()
    assert not (tmp_path / "results").exists()


# ------------------------------------------------------------------ end to end (slow)

# The default space, made cheap: a small teacher for one epoch, one epoch per trial, no confirmation.
CHEAP = [
    "--set", "teacher.arch=small_cnn", "--set", "teacher.epochs=1", "--set", "budget.epochs=1",
    "--set", "scheduler.name=none", "--set", "confirm.top=0", "--num-samples", "4", "--no-baselines",
]  # fmt: skip


def child_runs(uri: str, name: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    parent = client.search_runs([experiment.experiment_id], f"tags.`{TAG_ROLE}` = 'parent'")[0]
    return client.search_runs([experiment.experiment_id], f"tags.`{TAG_PARENT}` = '{parent.info.run_id}'")


@pytest.mark.slow
def test_a_latency_budget_trains_no_excluded_student_and_its_champion_meets_it(
    ray_session, mlflow_server, tmp_path, capsys
):
    budget = 0.12  # ms: between the default space's students on one ORT thread (0.02-0.07 ms, shufflenet 0.18)
    out = tmp_path / "rows.json"
    argv = ["--storage", str(tmp_path / "results"), "--tracking-uri", mlflow_server, "--name", "budgeted"]
    code = search.main([*argv, *CHEAP, "--max-latency-ms", str(budget), "--output-json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    runs = child_runs(mlflow_server, "budgeted")
    infeasible = [r for r in runs if r.data.tags.get(TAG_OUTCOME) == "INFEASIBLE"]
    trials = [r for r in runs if TAG_TRIAL_ID in r.data.tags]
    assert infeasible, "the budget was meant to exclude some student (shufflenet_v2_x0_5)"
    excluded = {r.data.params["student"] + r.data.params.get("width", "") for r in infeasible}
    assert all(r.data.metrics["latency_ms"] > budget and TAG_INFEASIBLE in r.data.tags for r in infeasible)
    trained = {r.data.params["student"] + r.data.params.get("width", "") for r in trials}
    assert len(trials) == 4
    assert not trained & excluded
    # every row carries its architecture's one figure, the one the sweep measured before the trials
    experiment = MlflowClient(mlflow_server).get_experiment_by_name("budgeted")
    cached = {k: float(v) for k, v in experiment.tags.items() if k.startswith("kdsweep.latency.")}
    for run in trials:
        arch = Architecture(
            run.data.params["student"], int(run.data.params["width"]) if "width" in run.data.params else None
        )
        assert run.data.metrics["latency_ms"] == pytest.approx(cached[latency_tag(arch, (1, 16, 16), Deploy())])
    assert "infeasible, never trained: shufflenet_v2_x0_5" in printed
    assert "deploy budget: " in printed  # the count line of skipped draws (random search draws again)
    parent = MlflowClient(mlflow_server).get_run(runs[0].data.tags[TAG_PARENT])
    assert parent.data.metrics["trials_infeasible"] == len(infeasible)
    rows = json.loads(out.read_text())
    [champion] = [row for row in rows if row["champion"]]
    # measured again, after export to ONNX (kdsweep.export), in the target runtime (one ONNX Runtime thread)
    shipped = ship_model(
        mlflow_server, "models:/budgeted@champion", ShipSpec("onnx", tmp_path / "champion.onnx"), log=lambda _: None
    )
    assert shipped.run_id == champion["mlflow_run_id"]
    assert shipped.check.passed
    assert shipped.latency_ms <= budget
    # a later sweep of the experiment reuses the cached figures: nothing measured
    assert "cached in the experiment" not in printed
    code = search.main([*argv, *CHEAP, "--max-latency-ms", "0.001", "--no-select"])
    captured = capsys.readouterr()
    assert code == 2
    assert "cached in the experiment" in captured.out
    assert captured.err.strip().startswith("error: deploy.max_latency_ms: 0.001 ms excludes every student of the space")


def test_the_target_latency_runs_where_deploy_says(tiny_data):
    """int8 is the statically quantized ONNX file on ONNX Runtime; torch the eager module; both on `threads`."""
    model = create_model("small_cnn", tiny_data.num_classes, 1, 8, 4)
    shape = tiny_data.input_shape
    int8 = target_latency_ms(model, shape, Deploy(precision="int8"), calibration_batches(tiny_data), seconds=0.05)
    eager = target_latency_ms(model, shape, Deploy(runtime="torch", threads=2), seconds=0.05)
    assert int8 > 0
    assert eager > 0
    with pytest.raises(ValueError, match="int8 latency needs calibration batches"):
        target_latency_ms(model, shape, Deploy(precision="int8"), seconds=0.05)


def test_an_onnx_runtime_session_gets_the_targets_threads(tmp_path):
    path = tmp_path / "m.onnx"
    export_onnx(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval(), torch.zeros(2, 1, 2, 2), path)
    assert OnnxRunner(path).session.get_session_options().intra_op_num_threads == 1
    assert OnnxRunner(path, threads=2).session.get_session_options().intra_op_num_threads == 2
