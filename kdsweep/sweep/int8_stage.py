"""The int8 stage of a sweep with `deploy.precision: int8`: its top students measured as they would ship.

After the trials (and their confirmation seeds) and before selection, in the driver: CPU work of seconds
per student, never inside a trial. The configurations quantized are the confirmed ones, else the
TOP_CONFIGURATIONS best by the champion rule (kdsweep.configurations). Every finished seed of each is
quantized, not only its best: selection ranks a configuration by its mean over seeds, and an int8 mean
over one seed would be a single-seed figure beside confirmed fp32 ones.

Each student is exported to ONNX and statically quantized with calibration images from the training
split (kdsweep.shipping: the exporter and quantizer `export` uses), then run through ONNX Runtime on
deploy.threads threads: int8 accuracy on the whole validation split, agreement of its predicted class with
the fp32 PyTorch model, batch-1 latency, and the fp32 ONNX model's latency measured beside it (the honest
ratio). The run gets val_accuracy_int8, latency_ms_int8 and int8_agreement; its logged model (what a
registered version serves) gets the int8 file under `int8/`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from kdsweep.config import SweepConfig
from kdsweep.configurations import Configuration, configurations, rank_configurations
from kdsweep.data import Dataset
from kdsweep.errors import ConfigError, one_line
from kdsweep.leaderboard import Row
from kdsweep.outcome import Outcome
from kdsweep.selection import TrialRun
from kdsweep.shipping.errors import NotExportable
from kdsweep.shipping.latency import batch1_latency_ms
from kdsweep.shipping.onnx_export import export_onnx
from kdsweep.shipping.quantize import CALIBRATION_BATCH_SIZE, CALIBRATION_BATCHES, calibration_batches
from kdsweep.shipping.runtime import OnnxRunner
from kdsweep.shipping.ship import quantize_and_measure
from kdsweep.shipping.source import ModelSource, find_origin, rebuild
from kdsweep.sweep_record import sweep_runs
from kdsweep.tracking.models import INT8_DIR, load_logged_model

TOP_CONFIGURATIONS = 3  # quantized when no configuration was confirmed
LATENCY_SECONDS = 0.5  # per model and precision: batch-1 medians of tiny nets settle well within it
Log = Callable[[str], None]


@dataclass(frozen=True)
class Int8Figures:
    """One student, fp32 and int8 side by side, both through ONNX Runtime on the same threads."""

    run_id: str
    name: str
    val_accuracy: float  # the fp32 PyTorch model's, on the same images
    val_accuracy_int8: float
    agreement: float  # the fraction of validation images where int8 predicts the fp32 model's class
    latency_ms_fp32: float  # the fp32 ONNX model, measured beside the int8 one
    latency_ms_int8: float
    images: int

    def metrics(self) -> dict[str, float]:
        """What the run gets (the fp32 latency stays out: `latency_ms` is the run's fp32 figure)."""
        return {
            "val_accuracy_int8": self.val_accuracy_int8,
            "latency_ms_int8": self.latency_ms_int8,
            "int8_agreement": self.agreement,
        }

    def describe(self) -> str:
        return (
            f"{self.name}: val_accuracy {self.val_accuracy:.4f} -> int8 {self.val_accuracy_int8:.4f}, same class as "
            f"fp32 on {self.agreement:.2%} of {self.images} validation images, latency {self.latency_ms_fp32:.3f} -> "
            f"{self.latency_ms_int8:.3f} ms"
        )


def measure_int8(
    config: SweepConfig, uri: str, parent_run_id: str, data: Dataset, rows: list[Row], lacking: dict[str, str]
) -> None:
    """With deploy.precision int8, the sweep's top students quantized and measured (`int8_stage`), their rows
    given the figures; not for a sweep that will not select (interrupted, or MLflow lacks part of it)."""
    if config.deploy.precision != "int8" or lacking or any(row.status == Outcome.INTERRUPTED for row in rows):
        return
    client, primary = MlflowClient(uri), config.objectives[0]
    runs = sweep_runs(client, client.get_run(parent_run_id))
    threads, distilled_only = config.deploy.threads, config.run.distilled_only
    figures = int8_stage(client, runs, data, threads, primary.metric, primary.mode, distilled_only)
    for row in rows:
        if row.mlflow_run_id in figures:
            row.metrics |= figures[row.mlflow_run_id].metrics()


def to_quantize(runs: list[TrialRun], metric: str, mode: str, distilled_only: bool) -> list[TrialRun]:
    """The finished seeds with a model of the confirmed configurations, else of the TOP_CONFIGURATIONS best."""
    competing = [run for run in runs if not (distilled_only and run.baseline)]
    ranked = [c for c in rank_configurations(configurations(competing), metric, mode) if c.best_run(metric, mode)]
    chosen: list[Configuration] = [c for c in ranked if c.confirmed(metric)] or ranked[:TOP_CONFIGURATIONS]
    return [run for config in chosen for run in config.finished(metric) if run.is_candidate]


def int8_stage(
    client: MlflowClient,
    runs: list[TrialRun],
    data: Dataset,
    threads: int,
    metric: str = "val_accuracy",
    mode: str = "max",
    distilled_only: bool = False,
    log: Log = print,
) -> dict[str, Int8Figures]:
    """Quantize and measure the top students (`to_quantize`), log the figures on their runs; by run id.
    A student the exporter refuses is named and left without int8 figures (it cannot ship at int8)."""
    chosen = to_quantize(runs, metric, mode, distilled_only)
    images = CALIBRATION_BATCHES * CALIBRATION_BATCH_SIZE
    log(
        f"\nint8: {len(chosen)} top student(s) exported to ONNX, statically quantized (calibrated on {images} "
        f"training images) and measured through ONNX Runtime on {threads} thread(s)"
    )
    calibration = calibration_batches(data)
    figures: dict[str, Int8Figures] = {}
    for run in chosen:
        try:
            measured = quantize_student(client, run, data, calibration, threads)
        except NotExportable as error:
            log(f"{run.name}: not quantized ({one_line(error)})")
            continue
        figures[run.run_id] = measured
        log(measured.describe())
    return figures


def quantize_student(
    client: MlflowClient, run: TrialRun, data: Dataset, calibration: list, threads: int
) -> Int8Figures:
    """One student's int8 figures, logged on its run, and its int8 file on its logged model."""
    try:
        origin = find_origin(client, run.model_uri, "deploy.precision")
        logged = load_logged_model(run.model_uri, client.tracking_uri)
        module = rebuild(origin.run, logged, data, "deploy.precision")
    except ConfigError as error:  # a model gone from the store, or one the registry cannot rebuild here
        raise NotExportable("ONNX", None, error.problem) from None
    source = ModelSource(run.model_uri, origin, data, logged, module)
    with tempfile.TemporaryDirectory(prefix="kdsweep-int8-") as directory:
        fp32_path = Path(directory) / "model.onnx"
        export_onnx(source.module, source.example(2), fp32_path)
        fp32_latency = batch1_latency_ms(
            OnnxRunner(fp32_path, threads).bind(source.example(1)), LATENCY_SECONDS, threads
        )
        int8 = quantize_and_measure(source, fp32_path, calibration, LATENCY_SECONDS, threads)
        comparison = int8.comparison
        figures = Int8Figures(
            run.run_id,
            run.name,
            comparison.reference_accuracy,
            comparison.accuracy,
            comparison.agreement,
            fp32_latency,
            int8.latency_ms,
            comparison.images,
        )
        now, step = int(time.time() * 1000), int(run.metrics.get("epoch", 0))
        client.log_batch(run.run_id, metrics=[Metric(k, v, now, step) for k, v in figures.metrics().items()])
        client.log_model_artifact(run.model_uri.removeprefix("models:/"), str(int8.path), INT8_DIR)
    return figures
