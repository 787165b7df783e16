"""Time per trial-epoch of one student with (a) an online teacher, (b) the teacher-logit cache, (c) no teacher.

Every figure comes from kdsweep's own trial function in this one process, with the modes
interleaved so that a neighbour's load on a shared machine hits them alike. The first epoch of each
trial is warm-up and left out; of the rest the fastest is kept, since a neighbour's load only ever
adds time. Random teacher weights: the time of a forward pass does not depend on them.

    python benchmarks/teacher_cache.py                      # resnet18 and resnet50, 2-4 min on 2 CPU cores
    python benchmarks/teacher_cache.py --teachers resnet18 --samples 4096
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from kdsweep.data import Dataset, DataSpec, load_dataset
from kdsweep.models import create_model
from kdsweep.teachers import OnlineTeacher, TeacherLogitCache, build_teacher_cache
from kdsweep.trial import TrialConfig, pick_device, run_trial


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teachers", nargs="+", default=["resnet18", "resnet50"])
    p.add_argument("--student", default="resnet8")
    p.add_argument("--samples", type=int, default=512, help="synthetic 3x32x32 images (70%% train after val/test)")
    p.add_argument("--epochs", type=int, default=3, help="per trial; the cache holds this many view epochs")
    p.add_argument("--rounds", type=int, default=10, help="rounds of the modes, interleaved")
    p.add_argument("--online-rounds", type=int, default=1, help="rounds that include the (slow) online teacher")
    p.add_argument("--batch-size", type=int, default=64)
    return p.parse_args()


def machine() -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    )
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or platform.machine()
    return (
        f"{len(os.sched_getaffinity(0))} CPUs, {device}, torch {torch.__version__}, "
        f"commit {commit.stdout.strip() or 'unknown'}"
    )


def epoch_seconds(config: TrialConfig, teacher, data: Dataset) -> list[float]:
    """The trial's own per-epoch wall time, first epoch (warm-up) left out."""
    result = run_trial(config, data, logit_source=teacher)
    return [h["epoch_seconds"] for h in result.history[1:]]


def measure(arch: str, args: argparse.Namespace, data: Dataset) -> dict[str, float]:
    torch.manual_seed(0)
    module = create_model(arch, data.num_classes, data.in_channels, data.image_size).eval()
    started = time.perf_counter()
    cache = build_teacher_cache(
        module, data, args.epochs, pick_device(), memory_limit_mb=1024, log=lambda line: print("  " + line)
    )
    build = time.perf_counter() - started
    assert isinstance(cache, TeacherLogitCache)
    base = {"student": args.student, "epochs": args.epochs, "batch_size": args.batch_size, "measure_latency": False}
    runs = {  # every mode trains on the same views: those the cache holds
        "none": (TrialConfig(**base, alpha=0.0), cache),
        "online": (TrialConfig(**base, alpha=0.9), OnlineTeacher(module, view_epochs=cache.view_epochs)),
        "cached": (TrialConfig(**base, alpha=0.9), cache),
    }
    times: dict[str, list[float]] = {mode: [] for mode in runs}
    for round_ in range(args.rounds):
        order = list(runs) if round_ % 2 == 0 else list(runs)[::-1]  # neither mode always runs first
        for mode in order:
            if mode != "online" or round_ < args.online_rounds:
                times[mode] += epoch_seconds(*runs[mode], data)
    return {"build": build, **{mode: min(seconds) for mode, seconds in times.items()}}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    data = load_dataset(DataSpec(name="synthetic", channels=3, image_size=32, num_classes=10, num_samples=args.samples))
    print(f"{machine()}; device {pick_device()}")
    print(
        f"student {args.student}, {len(data.train)} train images 3x32x32, batch {args.batch_size}, {args.epochs} "
        f"epochs per trial, {args.rounds} rounds ({args.online_rounds} with online), fastest of epochs 2.."
    )
    rows = []
    for arch in args.teachers:
        print(f"teacher {arch}:", flush=True)
        rows.append((arch, measure(arch, args, data)))
    print()
    print(
        "| teacher | (a) online s/epoch | (b) cached s/epoch | (c) no teacher s/epoch | a/b | b/c | cache build s "
        f"({args.epochs} view epochs) | break-even trial-epochs | break-even {args.epochs}-epoch trials |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for arch, t in rows:
        saved = t["online"] - t["cached"]  # per trial-epoch
        even = t["build"] / saved if saved > 0 else float("inf")
        print(
            f"| {arch} | {t['online']:.3f} | {t['cached']:.3f} | {t['none']:.3f} | {t['online'] / t['cached']:.2f} "
            f"| {t['cached'] / t['none']:.3f} | {t['build']:.1f} | {even:.1f} | {even / args.epochs:.2f} |"
        )


if __name__ == "__main__":
    main()
