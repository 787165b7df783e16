"""Shipping the champion: ONNX and TorchScript files checked against PyTorch, timed, logged, and refused cleanly.

One small digits sweep is recorded in a real MLflow file store, as the driver and its trials record
one (no Ray in between): a trained small CNN that becomes the champion, and a model built around
torch.cummax, which torch.export takes and the ONNX exporter has no translation for.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow
import onnxruntime as ort
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from kdsweep import export, select
from kdsweep.champion import select_champion
from kdsweep.config import load_config
from kdsweep.data import DataSpec, load_dataset, split_images
from kdsweep.models import register_model
from kdsweep.outcome import Outcome
from kdsweep.plots import confusion_figure
from kdsweep.tracking.runs import SweepTracker, TrialTracker
from kdsweep.trial import TrialConfig, predict, run_trial

SPACE = """
data: {name: digits}
budget: {epochs: 2, num_samples: 2}
scheduler: {name: none}
fixed: {alpha: 0.0}
search:
  student: {choice: [small_cnn, cummax_cnn]}
"""
STUDENT = {"student": "small_cnn", "width": 8, "alpha": 0.0, "epochs": 2, "optimizer": "adamw", "lr": 0.01}
FAST = ["--latency-seconds", "0.1"]  # latency is measured all the same, just briefly


class CummaxNet(nn.Module):
    """A conv net whose logits pass through torch.cummax: torch.export takes it, the ONNX exporter does not."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = nn.Linear(4, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.conv(images).mean((2, 3)))
        return torch.cummax(logits, dim=1).values


@register_model("cummax_cnn", "student")
def cummax_cnn(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return CummaxNet(num_classes, in_channels)


@dataclass(frozen=True)
class Sweep:
    uri: str
    student_run_id: str  # the champion's run
    cummax_run_id: str
    champion_uri: str


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataSpec(name="digits"))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, digits) -> Sweep:
    """A finished two-trial digits sweep, its champion registered as models:/digits@champion."""
    directory = tmp_path_factory.mktemp("digits-sweep")
    with pytest.MonkeyPatch.context() as patch:  # for the whole module: this MLflow opens file stores only if asked
        patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = directory.as_uri() + "/mlruns"
        (directory / "digits.yaml").write_text(SPACE)
        tracker = SweepTracker(uri, "digits")
        context = tracker.start_parent(load_config(directory / "digits.yaml"), digits, resume=False)
        trained = run_trial(TrialConfig(**STUDENT, measure_latency=False, num_threads=1), digits).student
        torch.manual_seed(0)
        run_ids = []
        for index, (name, params, student, metrics) in enumerate(
            [
                ("small_cnnw8", STUDENT, trained, {"val_accuracy": 0.9, "latency_ms": 5.0}),
                ("cummax", {"student": "cummax_cnn", "alpha": 0.0}, cummax_cnn(10, 1, 8), {"val_accuracy": 0.1}),
            ]
        ):
            trial = TrialTracker(
                context, f"trial_{index:05d}", name, {**params, "data": digits.spec.model_dump()}, digits
            )
            trial.log_epoch({"epoch": 2, "params": 1000, "latency_ms": 1.0, **metrics})
            logits, labels = predict(student, digits, "val")
            trial.log_student(student, digits, confusion_figure(labels.numpy(), logits.argmax(1).numpy(), 10))
            tracker.close_trial(trial.run_id, Outcome.FINISHED)
            run_ids.append(trial.run_id)
        tracker.finish()
        champion = select_champion(uri, "digits", log=lambda line: None)
        assert champion.run_id == run_ids[0]
        yield Sweep(uri, run_ids[0], run_ids[1], champion.model_uri)


def exported_metrics(sweep: Sweep, run_id: str) -> dict[str, float]:
    metrics = MlflowClient(sweep.uri).get_run(run_id).data.metrics
    return {k: v for k, v in metrics.items() if k.startswith(("onnx", "torchscript", "pytorch"))}


def logged_model(sweep: Sweep, uri: str):
    mlflow.set_tracking_uri(sweep.uri)
    return mlflow.pytorch.load_model(uri)


def graph_nodes(path):
    import onnx

    return onnx.load(str(path)).graph.node


# ---------------------------------------------------------------- what ships


def test_onnx_champion_matches_pytorch_and_is_logged_on_the_versions_source_run(sweep, digits, tmp_path, capsys):
    output = tmp_path / "champion.onnx"
    argv = [sweep.champion_uri, "--format", "onnx", "--output", str(output), "--tracking-uri", sweep.uri, *FAST]
    assert export.main(argv) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == str(output)
    assert "version 1 of 'digits'" in out
    assert "144 validation images: max |logit diff|" in out

    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    images = split_images(digits, digits.val)
    with torch.no_grad():
        expected = logged_model(sweep, sweep.champion_uri)(images)
    for batch in (images, images[:1]):  # the batch axis is free
        got = torch.from_numpy(session.run(None, {"input": batch.numpy()})[0])
        assert (got - expected[: len(batch)]).abs().max() <= 1e-4
    assert torch.equal(got.argmax(1), expected[:1].argmax(1))

    # the registry's version points at the trial's run: that is where the results are
    client = MlflowClient(sweep.uri)
    assert client.get_model_version_by_alias("digits", "champion").run_id == sweep.student_run_id
    metrics = exported_metrics(sweep, sweep.student_run_id)
    assert metrics["onnx_max_abs_diff"] <= 1e-4
    assert metrics["onnx_agreement"] == 1.0
    assert metrics["onnx_latency_ms"] > 0
    assert metrics["pytorch_latency_ms"] > 0
    assert metrics["onnx_export_seconds"] > 0
    run = client.get_run(sweep.student_run_id)
    assert run.data.tags["kdsweep.onnx.check"].endswith("passed")
    assert "export/model.onnx" in [a.path for a in client.list_artifacts(sweep.student_run_id, "export")]
    logged = client.download_artifacts(sweep.student_run_id, "export/model.onnx", str(tmp_path / "logged"))
    assert Path(logged).read_bytes() == output.read_bytes()


def test_torchscript_from_a_run_uri_loads_with_torch_jit_and_matches(sweep, digits, tmp_path, capsys):
    output = tmp_path / "student.pt"
    uri = f"runs:/{sweep.student_run_id}/model"
    argv = [uri, "--format", "torchscript", "--output", str(output), "--tracking-uri", sweep.uri, *FAST]
    assert export.main(argv) == 0
    assert "torch.jit" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated from torch 2.14
        scripted = torch.jit.load(str(output))
    images = split_images(digits, digits.val)
    with torch.no_grad():
        expected = logged_model(sweep, uri)(images)
        assert (scripted(images) - expected).abs().max() <= 1e-4
        assert (scripted(images[:1]) - expected[:1]).abs().max() <= 1e-4
    metrics = exported_metrics(sweep, sweep.student_run_id)
    assert metrics["torchscript_max_abs_diff"] <= 1e-4
    assert metrics["torchscript_latency_ms"] > 0
    artifacts = [a.path for a in MlflowClient(sweep.uri).list_artifacts(sweep.student_run_id, "export")]
    assert "export/model.pt" in artifacts


def test_int8_writes_both_models_named_after_the_version_and_logs_accuracy_and_latency(
    sweep, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # the default output: NAME-vVERSION.onnx in the current directory
    mlflow.set_tracking_uri(None)  # as in a fresh process: only --tracking-uri says where the store is
    assert export.main(["models:/digits/1", "--quantize", "int8", "--tracking-uri", sweep.uri, *FAST]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "digits-v1.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits-v1.int8.onnx", "digits-v1.onnx"]  # no ./mlflow.db
    assert "int8 (static QDQ" in out
    assert "val_accuracy" in out
    session = ort.InferenceSession(str(tmp_path / "digits-v1.int8.onnx"), providers=["CPUExecutionProvider"])
    assert any(node.op_type == "QuantizeLinear" for node in graph_nodes(tmp_path / "digits-v1.int8.onnx"))
    assert session.get_inputs()[0].shape[0] == "batch"
    metrics = exported_metrics(sweep, sweep.student_run_id)
    assert 0.5 <= metrics["onnx_int8_val_accuracy"] <= 1.0
    assert metrics["onnx_int8_latency_ms"] > 0
    assert abs(metrics["onnx_int8_val_accuracy"] - metrics["onnx_val_accuracy"]) <= 0.05
    artifacts = [a.path for a in MlflowClient(sweep.uri).list_artifacts(sweep.student_run_id, "export")]
    assert {"export/model.onnx", "export/model.int8.onnx"} <= set(artifacts)


def test_a_failed_check_exits_1_logs_the_failure_and_writes_no_file(sweep, tmp_path, capsys):
    output = tmp_path / "strict.onnx"
    argv = [sweep.champion_uri, "--output", str(output), "--tolerance", "1e-12", "--tracking-uri", sweep.uri]
    assert export.main(argv) == 1
    assert "FAILED" in capsys.readouterr().out
    assert not output.exists()
    tag = MlflowClient(sweep.uri).get_run(sweep.student_run_id).data.tags["kdsweep.onnx.check"]
    assert tag.endswith("FAILED")
    assert "tolerance 1e-12" in tag


# ---------------------------------------------------------------- select --export


def test_select_export_registers_then_ships_the_champion(sweep, tmp_path, capsys):
    output = tmp_path / "selected.onnx"
    argv = ["--tracking-uri", sweep.uri, "--register", "digits-shipped", "--export", "onnx", "--output", str(output)]
    assert select.main([*argv, *FAST]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "models:/digits-shipped@champion"  # still the last line, as without --export
    assert any("passed" in line for line in lines)
    assert output.exists()
    ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])


def test_select_export_of_a_champion_the_exporter_refuses_exits_2_and_keeps_it_registered(sweep, tmp_path, capsys):
    argv = ["--tracking-uri", sweep.uri, "--register", "digits-cummax", "--max-latency-ms", "2"]  # the cummax net
    assert select.main([*argv, "--export", "onnx", "--output", str(tmp_path / "c.onnx")]) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after MLflow's own lines about the registration
    assert last.startswith("error: --export: cannot export to ONNX: operator aten.cummax.default"), last
    assert last.endswith("(the champion is registered all the same: models:/digits-cummax@champion)")
    version = MlflowClient(sweep.uri).get_model_version_by_alias("digits-cummax", "champion")
    assert version.run_id == sweep.cummax_run_id
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["models:/digitz@champion"], "error: MODEL_URI: no registered model 'digitz' in file:"),
        (["models:/digits@best"], "error: MODEL_URI: registered model 'digits' has no alias '@best' (aliases: "),
        (["models:/digits/9"], "error: MODEL_URI: registered model 'digits' has no version '9' (versions: 1, "),
        (["runs:/0123456789abcdef/model"], "error: MODEL_URI: no run '0123456789abcdef' in file:"),
        (["champion.onnx"], "error: MODEL_URI: 'champion.onnx' is not a model URI (use models:/NAME@ALIAS, "),
        (["{cummax}"], "error: MODEL_URI: cannot export to ONNX: operator aten.cummax.default has no ONNX translation"),
        (["{parent}"], "error: MODEL_URI: run sweep-"),
        (["{champion}", "--output", "{tmp}/missing/m.onnx"], "error: --output: cannot write '"),
        (["{champion}", "--output", "{tmp}/file.txt/m.onnx"], "error: --output: cannot write '"),
        (["{champion}", "--output", "{tmp}"], "error: --output: '"),
        (
            ["{champion}", "--format", "torchscript", "--quantize", "int8"],
            "error: --quantize: int8 needs --format onnx",
        ),
        (["{champion}", "--quantize", "int4"], "error: --quantize: invalid choice: 'int4'"),
        (["{champion}", "--format", "tflite"], "error: --format: invalid choice: 'tflite'"),
        (["{champion}", "--tolerance", "-1"], "error: --tolerance: must be a finite number > 0, got -1.0"),
    ],
)
def test_bad_input_is_one_line_exits_2_and_writes_nothing(sweep, tmp_path, monkeypatch, capsys, argv, message):
    (tmp_path / "file.txt").write_text("not a directory")
    names = {
        "cummax": f"runs:/{sweep.cummax_run_id}/model",
        "parent": f"runs:/{MlflowClient(sweep.uri).get_run(sweep.student_run_id).data.tags['mlflow.parentRunId']}/x",
        "champion": sweep.champion_uri,
        "tmp": str(tmp_path),
    }
    monkeypatch.chdir(tmp_path)
    before = {run_id: exported_metrics(sweep, run_id) for run_id in (sweep.student_run_id, sweep.cummax_run_id)}
    assert export.main([arg.format(**names) for arg in argv] + ["--tracking-uri", sweep.uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]
    assert {run_id: exported_metrics(sweep, run_id) for run_id in before} == before


def test_select_refuses_export_flags_without_export_before_selecting(sweep, capsys):
    versions = len(MlflowClient(sweep.uri).search_model_versions())
    assert select.main(["--tracking-uri", sweep.uri, "--quantize", "int8"]) == 2
    assert capsys.readouterr().err.startswith("error: --export: --output and --quantize need --export onnx")
    assert len(MlflowClient(sweep.uri).search_model_versions()) == versions
