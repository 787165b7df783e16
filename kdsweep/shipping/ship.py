"""Shipping a logged student: export, check against PyTorch, measure, optionally quantize, record.

    shipped = ship_model(tracking_uri, "models:/digits@champion", ShipSpec("onnx"))

The exported file reaches `--output` only when its check passed: a file there is one that computes
what PyTorch computes on the sweep's validation split.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from kdsweep.errors import ConfigError
from kdsweep.shipping.errors import NotExportable
from kdsweep.shipping.latency import batch1_latency_ms
from kdsweep.shipping.onnx_export import export_onnx
from kdsweep.shipping.parity import Check, Comparison, check_parity, compare
from kdsweep.shipping.quantize import CALIBRATION_BATCH_SIZE, CALIBRATION_BATCHES, calibration_batches, quantize_int8
from kdsweep.shipping.record import ARTIFACT_DIR, check_tag, record_export
from kdsweep.shipping.runtime import OnnxRunner, TorchRunner, load_exported
from kdsweep.shipping.source import ModelSource, load_source
from kdsweep.shipping.spec import ShipSpec, int8_path
from kdsweep.shipping.torchscript_export import export_torchscript
from kdsweep.tracking.models import INT8_FILE

EXPORTERS = {"onnx": export_onnx, "torchscript": export_torchscript}
RUNTIMES = {"onnx": "onnxruntime", "torchscript": "torch.jit"}
Log = Callable[[str], None]


@dataclass(frozen=True)
class Int8Result:
    path: Path
    comparison: Comparison  # the int8 model against PyTorch
    latency_ms: float
    size_bytes: int


@dataclass(frozen=True)
class Shipped:
    run_id: str  # the run the results were logged to
    check: Check
    export_seconds: float
    path: Path | None = None  # None when the check failed: nothing was written
    latency_ms: float | None = None
    pytorch_latency_ms: float | None = None  # the rebuilt eager module, measured the same way
    int8: Int8Result | None = None

    @property
    def passed(self) -> bool:
        return self.check.passed


def ship_model(
    tracking_uri: str, model_uri: str, spec: ShipSpec, field: str = "MODEL_URI", log: Log = print
) -> Shipped:
    """Export the model at `model_uri`, check it on its sweep's validation split, measure it, record it.

    Bad input (an unknown URI, a model the exporter refuses, an unwritable output) raises ConfigError
    naming `field` or the flag, before anything is written or logged. A failed check is logged on the
    run and returned (`passed` False), and nothing is written to the output. Sets MLflow's global
    tracking URI, as selection does: `models:/` URIs and the registry resolve through it (else this
    MLflow opens its default ./mlflow.db for them).
    """
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    source = load_source(client, model_uri, field)
    output = spec.output_for(source.origin.stem)
    log(f"{model_uri}: {source.origin.label}, trained on {source.data.name}")
    with tempfile.TemporaryDirectory(prefix="kdsweep-export-") as directory:
        exported = Path(directory) / f"model{spec.suffix}"
        seconds = _export(spec.format, source, exported, field)
        runner = load_exported(spec.format, exported)
        check = check_parity(source.logged, runner, source.data, spec.tolerance)
        log(f"exported {spec.format} in {seconds:.1f} s ({_kb(exported)})")
        log(f"check against PyTorch on {check.comparison.images} validation images: {check.describe()}")
        metrics = {
            f"{spec.format}_max_abs_diff": check.comparison.max_abs_diff,
            f"{spec.format}_agreement": check.comparison.agreement,
            f"{spec.format}_val_accuracy": check.comparison.accuracy,
            f"{spec.format}_export_seconds": seconds,
        }
        tags = {check_tag(spec.format): check.describe()}
        if not check.passed:
            record_export(client, source.run_id, metrics, tags, [])
            log(f"not written: the check failed (logged on run {source.run_id} as {check_tag(spec.format)})")
            return Shipped(source.run_id, check, seconds)

        image = source.example(1)
        latency = batch1_latency_ms(runner.bind(image), spec.latency_seconds)
        pytorch = batch1_latency_ms(TorchRunner(source.module).bind(image), spec.latency_seconds)
        log(
            f"latency, batch 1, one CPU thread: {RUNTIMES[spec.format]} {latency:.3f} ms, "
            f"PyTorch eager {pytorch:.3f} ms ({pytorch / latency:.1f}x)"
        )
        metrics |= {f"{spec.format}_latency_ms": latency, "pytorch_latency_ms": pytorch}
        int8 = (
            quantize_and_measure(source, exported, calibration_batches(source.data), spec.latency_seconds)
            if spec.quantize
            else None
        )
        if int8 is not None:
            log(_describe_int8(check.comparison, latency, exported, int8))
            metrics |= {
                "onnx_int8_val_accuracy": int8.comparison.accuracy,
                "onnx_int8_agreement": int8.comparison.agreement,
                "onnx_int8_latency_ms": int8.latency_ms,
            }
        files = [exported] + ([int8.path] if int8 else [])
        record_export(client, source.run_id, metrics, tags, files)
        artifacts = ", ".join(f"{ARTIFACT_DIR}/{path.name}" for path in files)
        log(f"logged on run {source.run_id}: {artifacts}, metrics {spec.format}_*, tag {check_tag(spec.format)}")
        int8 = _write(exported, int8, output)
    return Shipped(source.run_id, check, seconds, output, latency, pytorch, int8)


def _write(exported: Path, int8: Int8Result | None, output: Path) -> Int8Result | None:
    """The checked files to `output` (and its .int8 sibling), last: nothing there unless all went well."""
    shutil.copyfile(exported, output)
    if int8 is None:
        return None
    shutil.copyfile(int8.path, int8_path(output))
    return Int8Result(int8_path(output), int8.comparison, int8.latency_ms, int8.size_bytes)


def _export(format_name: str, source: ModelSource, path: Path, field: str) -> float:
    start = time.perf_counter()
    try:
        EXPORTERS[format_name](source.module, source.example(2), path)
    except NotExportable as error:
        raise ConfigError(field, str(error)) from None
    return time.perf_counter() - start


def quantize_and_measure(
    source: ModelSource, fp32: Path, calibration: list, latency_seconds: float, threads: int = 1
) -> Int8Result:
    """`fp32` (the source's ONNX export) quantized to static int8 beside it, compared with the PyTorch model
    on the validation split and timed batch 1 on `threads` ONNX Runtime threads: `export --quantize int8`
    and a sweep's int8 stage (kdsweep.sweep.int8_stage) alike."""
    path = fp32.with_name(INT8_FILE)  # the name a logged model carries it under, too
    quantize_int8(fp32, path, calibration)
    runner = OnnxRunner(path, threads)
    latency = batch1_latency_ms(runner.bind(source.example(1)), latency_seconds, threads)
    return Int8Result(path, compare(source.logged, runner, source.data), latency, path.stat().st_size)


def _describe_int8(fp32: Comparison, fp32_latency: float, fp32_path: Path, int8: Int8Result) -> str:
    return (
        f"int8 (static QDQ, calibrated on {CALIBRATION_BATCHES * CALIBRATION_BATCH_SIZE} training images): "
        f"val_accuracy {fp32.accuracy:.4f} -> {int8.comparison.accuracy:.4f}, same class as PyTorch on "
        f"{int8.comparison.agreement:.2%}, latency {fp32_latency:.3f} -> {int8.latency_ms:.3f} ms, "
        f"{_kb(fp32_path)} -> {_kb(int8.path)}"
    )


def _kb(path: Path) -> str:
    return f"{path.stat().st_size / 1024:.0f} kB"
