"""The one GPU check: a fractional-GPU sweep and the teacher cache on CUDA, summarised in one table.

    python benchmarks/gpu_check.py                # on a machine with a CUDA GPU: a few minutes
    python benchmarks/gpu_check.py --allow-cpu    # a dry run of the same steps without a GPU

It runs a `--gpus-per-trial 0.25` sweep of 8 trials on 32x32 synthetic data with the teacher cache on,
then benchmarks/teacher_cache.py on the device, and prints: trials finished, trials running at once per
GPU, training samples per second per trial, the cache's build time, peak GPU memory (nvidia-smi, every
process). It exits 1 when a trial did not finish, 2 when there is no GPU (unless --allow-cpu).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
SPACE = {
    "data": {"name": "synthetic", "channels": 3, "image_size": 32, "num_classes": 10, "num_samples": 6000},
    "teacher": {"arch": "resnet18", "epochs": 2, "batch_size": 256, "mode": "cached"},
    "budget": {"epochs": 3, "num_samples": 8},
    "confirm": {"top": 0},  # the sweep's trials only: what the check measures
    "scheduler": {"name": "none"},
    "searcher": {"name": "random", "seed": 0},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0.25, "max_failures": 0},
    "fixed": {"batch_size": 128, "lr": 0.05},
    "search": {
        "student": {"choice": ["resnet8", "resnet8x4", "mobilenet_v2", "shufflenet_v2_x0_5"]},
        "temperature": {"uniform": [2.0, 6.0]},
        "alpha": {"uniform": [0.5, 1.0]},
    },
}


# Without a GPU, the same steps on a workload two CPU cores finish in a few minutes (checks the script only).
DRY_RUN = {
    "data": {**SPACE["data"], "num_samples": 400},
    "teacher": {**SPACE["teacher"], "arch": "resnet8", "epochs": 1},
    "budget": {"epochs": 2, "num_samples": 4},
    "resources": {**SPACE["resources"], "gpus_per_trial": 0.0},
    "search": {**SPACE["search"], "student": {"choice": ["resnet8", "small_cnn"]}},
}


class PeakGpuMemory(threading.Thread):
    """Polls nvidia-smi (all processes on all GPUs) and keeps the peak of the total, in MiB."""

    def __init__(self, every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.every_s, self.peak_mib, self.stopped = every_s, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout
                self.peak_mib = max(self.peak_mib, sum(float(v) for v in out.split()))
            except (OSError, ValueError, subprocess.TimeoutExpired):
                return


def max_concurrent(spans: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def run_sweep(directory: Path, space: dict) -> tuple[int, list[dict], dict[str, list[dict]], str]:
    (directory / "space.yaml").write_text(yaml.safe_dump(space))
    command = [
        sys.executable,
        "-m",
        "kdsweep.search",
        "--space",
        "space.yaml",
        "--name",
        "gpu-check",
        "--storage",
        "results",
        "--output-json",
        "rows.json",
        "--no-select",
    ]
    out = subprocess.run(command, cwd=directory, capture_output=True, text=True)
    rows = json.loads((directory / "rows.json").read_text()) if (directory / "rows.json").exists() else []
    results = {
        p.parent.name: [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        for p in (directory / "results" / "gpu-check").glob("*/result.json")
    }
    return out.returncode, rows, results, out.stdout + out.stderr


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--allow-cpu", action="store_true", help="run the same steps without a GPU (a dry run)")
    args = p.parse_args()
    gpus = torch.cuda.device_count()
    if not gpus and not args.allow_cpu:
        print("error: no CUDA device (torch.cuda.device_count() == 0); --allow-cpu for a dry run", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name(0) if gpus else "CPU (dry run)"
    print(f"device: {device} x{gpus}, torch {torch.__version__}, {os.cpu_count()} CPUs", flush=True)

    space = SPACE if gpus else {**SPACE, **DRY_RUN}
    memory = PeakGpuMemory()
    if gpus:
        memory.start()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        code, rows, results, log = run_sweep(Path(tmp), space)
        sweep_s = time.perf_counter() - started
    memory.stopped.set()
    finished = sum(row["status"] == "FINISHED" for row in rows)
    spans = [(r[0]["timestamp"] - r[0]["time_total_s"], r[-1]["timestamp"]) for r in results.values() if r]
    train_samples = int(space["data"]["num_samples"] * 0.8 * 0.9)  # test_fraction 0.2, then val_fraction 0.1
    per_trial = sorted(train_samples / min(e["epoch_seconds"] for e in r) for r in results.values() if r)
    build = next(
        (line.rsplit("built in", 1)[1].strip() for line in log.splitlines() if "teacher cache: built in" in line), "-"
    )
    print(f"sweep: exit {code}, {sweep_s:.0f} s", flush=True)
    if code not in (0, 1):
        print(log[-4000:])

    cache = subprocess.run(
        [
            sys.executable,
            str(HERE / "teacher_cache.py"),
            "--teachers",
            "resnet18",
            "resnet50",
            "--rounds",
            "3",
            "--online-rounds",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    print(cache.stdout[-2500:] + cache.stderr[-1000:])

    print("| check | value |")
    print("|---|---|")
    print(f"| device | {device} x{gpus} |")
    print(f"| trials finished | {finished} of {len(rows)} (exit {code}) |")
    print(
        f"| trials running at once per GPU | {max_concurrent(spans) / max(gpus, 1):.1f} (0.25 GPU each: 4 expected) |"
    )
    if per_trial:
        print(
            f"| training samples/s per trial (median, min..max) | {per_trial[len(per_trial) // 2]:,.0f} "
            f"({per_trial[0]:,.0f}..{per_trial[-1]:,.0f}) |"
        )
    print(f"| teacher cache build (resnet18, in the sweep) | {build} |")
    print(f"| peak GPU memory, all processes | {memory.peak_mib:,.0f} MiB |")
    print(f"| sweep wall time | {sweep_s:.0f} s |")
    return 0 if rows and finished == len(rows) and cache.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
