"""fp32 against int8 for the default space's students: accuracy and latency as they would ship.

Each student of the default space (`kdsweep/search_spaces/default.yaml`: resnet8, shufflenet_v2_x0_5,
small_cnn at widths 16 and 32) is trained from scratch with the sweep's own trial function (`run_trial`,
one CPU thread; no teacher, so no teacher to train: the point is what quantization does to a trained
student) and logged as a sweep's trial would be, in a throwaway MLflow file store. Then the sweep's
own int8 stage (`kdsweep.sweep.int8_stage`) quantizes the top 3 by fp32 validation accuracy and
measures, in ONNX Runtime on one thread, the fp32 and int8 ONNX models side by side: accuracy on the
whole validation split (395 images), class agreement with fp32, batch-1 latency.

    PYTHONPATH=. python benchmarks/int8_students.py                 # a few minutes on 2 shared cores
    PYTHONPATH=. python benchmarks/int8_students.py --epochs 1      # quicker, less trained
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import mlflow.models
import torch
from mlflow.tracking import MlflowClient

from kdsweep.confidence import binomial_se
from kdsweep.config import load_config
from kdsweep.data import DataSpec, load_dataset
from kdsweep.outcome import Outcome
from kdsweep.plots import confusion_figure
from kdsweep.sweep.int8_stage import int8_stage
from kdsweep.sweep_record import find_parent, sweep_runs
from kdsweep.tracking.runs import SweepTracker, TrialTracker
from kdsweep.trial import TrialConfig, predict, run_trial

DEFAULT_SPACE = Path(__file__).resolve().parents[1] / "kdsweep/search_spaces/default.yaml"
STUDENTS = ("resnet8", "shufflenet_v2_x0_5", "small_cnn:16", "small_cnn:32")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--students", nargs="+", default=list(STUDENTS), help="NAME or NAME:WIDTH")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime's intra-op threads (deploy.threads)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # a throwaway store in a temporary directory
    # The registry needs no pip requirements; inferring them costs ~6 s a model here (as in the tests).
    mlflow.models.infer_pip_requirements = lambda model_uri, flavor, fallback=None, **kwargs: fallback
    config = load_config(DEFAULT_SPACE)
    data = load_dataset(config.data)
    assert config.data == DataSpec(name="glyphs", val_fraction=0.1, seed=0)
    with tempfile.TemporaryDirectory() as directory:
        uri = Path(directory).as_uri() + "/mlruns"
        tracker = SweepTracker(uri, "int8-students")
        context = tracker.start_parent(config, data, resume=False)
        started = time.perf_counter()
        for index, student in enumerate(args.students):
            name, _, width = student.partition(":")
            trial = TrialConfig(
                student=name,
                width=int(width) if width else None,
                alpha=0.0,
                epochs=args.epochs,
                lr=0.05,
                batch_size=64,
                weight_decay=5e-4,
                num_threads=1,
            )
            result = run_trial(trial, data)
            params = trial.model_dump(exclude_defaults=True)
            run = TrialTracker(context, f"trial_{index:05d}", student.replace(":", "-w"), params, data)
            run.log_epoch(result.metrics)
            logits, labels = predict(result.student, data, "val")
            confusion = confusion_figure(labels.numpy(), logits.argmax(1).numpy(), data.num_classes)
            run.log_student(result.student, data, confusion)
            tracker.close_trial(run.run_id, Outcome.FINISHED)
            print(
                f"{student}: val_accuracy {result.metrics['val_accuracy']:.4f} ({time.perf_counter() - started:.0f} s)"
            )
        tracker.finish()
        client = MlflowClient(uri)
        runs = sweep_runs(client, find_parent(client, "int8-students", context.parent_run_id))
        figures = int8_stage(client, runs, data, args.threads)
        params = {run.run_id: run.metrics.get("params", float("nan")) for run in runs}
    report(list(figures.values()), params, len(data.val), args.threads)


def report(figures, params: dict[str, float], val_size: int, threads: int) -> None:
    print(
        f"\n| student | params | val_accuracy fp32 | int8 | agreement | latency fp32 ONNX (ms) | int8 (ms) | "
        f"fp32/int8 |\n|{' --- |' * 8}"
    )
    for f in figures:
        se = binomial_se(f.val_accuracy, val_size)
        print(
            f"| {f.name} | {params[f.run_id]:,.0f} | {f.val_accuracy:.4f} ± {se:.4f} | {f.val_accuracy_int8:.4f} | "
            f"{f.agreement:.2%} | {f.latency_ms_fp32:.3f} | {f.latency_ms_int8:.3f} | "
            f"{f.latency_ms_fp32 / f.latency_ms_int8:.2f}x |"
        )
    fp32 = max(figures, key=lambda f: f.val_accuracy)
    int8 = max(figures, key=lambda f: f.val_accuracy_int8)
    print(
        f"\nbest fp32: {fp32.name} ({fp32.val_accuracy:.4f}); best int8: {int8.name} ({int8.val_accuracy_int8:.4f}); "
        f"one validation image = {100 / val_size:.2f} points; ONNX Runtime on {threads} thread(s), batch 1"
    )


if __name__ == "__main__":
    main()
