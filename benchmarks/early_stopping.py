"""What ASHA saves and what it costs: the same space and samples with ASHA and without, several seeds.

Each side is `python -m kdsweep.search` on a space (default: the shipped space `default`), scratch
baselines and selection off, its own storage and store; per run it records the best validation
accuracy a shippable (FINISHED) student reached and the trial-epochs spent. Goal (issue): ASHA within
0.5 point of the full budget at <= 40% of its trial-epochs.

    PYTHONPATH=. python benchmarks/early_stopping.py [--seeds 0 1 2] [--space PATH|NAME] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch


def sweep(space: str, scheduler: str, seed: int, root: Path, overrides: list[str]) -> dict[str, float]:
    out = root / f"{scheduler}-{seed}.json"
    space = str(Path(space).resolve()) if Path(space).is_file() else space  # a path, else a shipped space's name
    command = [sys.executable, "-m", "kdsweep.search", "--space", space]
    command += ["--name", f"es-{scheduler}-{seed}"]
    command += [arg for override in overrides for arg in ("--set", override)]
    command += ["--set", f"scheduler.name={scheduler}", "--set", f"searcher.seed={seed}", "--no-baselines"]
    command += ["--no-select", "--storage", str(root / "results"), "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}"]
    command += ["--output-json", str(out)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    rows = [row for row in json.loads(out.read_text()) if row["role"] == "trial"]
    finished = [row["metrics"]["val_accuracy"] for row in rows if row["status"] == "FINISHED"]
    return {
        "best": max(finished, default=float("nan")),
        "epochs": sum(int(row["metrics"].get("epoch", 0)) for row in rows),
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="passed to both sides' sweeps")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    versions = f"torch {torch.__version__}, ray {ray.__version__}"
    print(f"{os.cpu_count()} CPUs, {platform.machine()}, {versions}, commit {commit}")
    print(f"space {args.space} {' '.join(args.overrides)}, seeds {args.seeds}, baselines and selection off\n")
    results = []
    with tempfile.TemporaryDirectory(prefix="kdsweep-es-") as tmp:
        for seed in args.seeds:
            asha = sweep(args.space, "asha", seed, Path(tmp), args.overrides)
            full = sweep(args.space, "none", seed, Path(tmp), args.overrides)
            results.append((seed, asha, full))
    print(
        "| seed | ASHA best val | none best val | difference (points) | ASHA trial-epochs | none trial-epochs "
        "| epochs ratio | ASHA s | none s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for seed, asha, full in results:
        print(
            f"| {seed} | {asha['best']:.4f} | {full['best']:.4f} | {100 * (asha['best'] - full['best']):+.1f} "
            f"| {asha['epochs']} | {full['epochs']} | {asha['epochs'] / full['epochs']:.2f} "
            f"| {asha['seconds']:.0f} | {full['seconds']:.0f} |"
        )
    gap = statistics.mean(100 * (a["best"] - f["best"]) for _, a, f in results)
    share = sum(a["epochs"] for _, a, _ in results) / sum(f["epochs"] for _, _, f in results)
    print(f"\nmean difference {gap:+.2f} points (goal >= -0.5) at {share:.0%} of the trial-epochs (goal <= 40%)")


if __name__ == "__main__":
    main()
