"""What early stopping saves and what it costs: each early-stopping scheduler against the full budget.

The same space and samples with each registered scheduler that stops trials early (ASHA, HyperBand,
...) and without one (`none`: every trial runs the full budget), several seeds.

Each run is `python -m kdsweep.search` on a space (default: the shipped space `default`), scratch
baselines and selection off, its own storage and store; per run it records the best validation
accuracy a shippable (FINISHED) student reached, the trial-epochs spent and the epoch each trial
ended at. Goal (issue): within 0.5 point of the full budget at <= 40% of its trial-epochs.

    PYTHONPATH=. python benchmarks/early_stopping.py [--schedulers asha hyperband] [--seeds 0 1 2]
        [--space PATH|NAME] [--set KEY=VALUE ...]

HyperBand needs every trial created at once: with the default space (max_concurrent: 2) add
`--set searcher.max_concurrent=` (passed to every run: on 2 CPUs, 2 trials still run at a time).
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

from kdsweep.schedulers import list_schedulers, scheduler_entry


def sweep(space: str, scheduler: str, seed: int, root: Path, overrides: list[str]) -> dict[str, float]:
    out = root / f"{scheduler}-{seed}.json"
    space = str(Path(space).resolve()) if Path(space).is_file() else space  # a path, else a shipped space's name
    command = [sys.executable, "-m", "kdsweep.search", "--space", space]
    command += ["--name", f"es-{scheduler}-{seed}"]
    command += [arg for override in overrides for arg in ("--set", override)]
    command += ["--set", f"scheduler.name={scheduler}", "--set", f"searcher.seed={seed}", "--no-baselines"]
    command += ["--confirm-top", "0"]  # what the scheduler saves on the search itself
    command += ["--no-select", "--storage", str(root / "results"), "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}"]
    command += ["--output-json", str(out)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    rows = [row for row in json.loads(out.read_text()) if row["role"] == "trial"]
    finished = [row["metrics"]["val_accuracy"] for row in rows if row["status"] == "FINISHED"]
    ended = sorted((int(row["metrics"].get("epoch", 0)) for row in rows), reverse=True)
    return {
        "best": max(finished, default=float("nan")),
        "epochs": sum(ended),
        "ended": " ".join(f"{e}x{ended.count(e)}" for e in sorted(set(ended), reverse=True)),
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    early = [name for name in list_schedulers() if scheduler_entry(name).stops_early]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="default")
    parser.add_argument("--schedulers", nargs="+", choices=early, default=["asha"], help="each against none")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="passed to every sweep")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    versions = f"torch {torch.__version__}, ray {ray.__version__}"
    print(f"{os.cpu_count()} CPUs, {platform.machine()}, {versions}, commit {commit}")
    print(f"space {args.space} {' '.join(args.overrides)}, seeds {args.seeds}, baselines and selection off\n")
    results = []  # (seed, scheduler, its run, the full budget's run)
    with tempfile.TemporaryDirectory(prefix="kdsweep-es-") as tmp:
        for seed in args.seeds:
            full = sweep(args.space, "none", seed, Path(tmp), args.overrides)
            for name in args.schedulers:
                results.append((seed, name, sweep(args.space, name, seed, Path(tmp), args.overrides), full))
    print(
        "| seed | scheduler | best val | none best val | difference (points) | trial-epochs | none trial-epochs "
        "| epochs ratio | trials ended at epoch | s | none s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for seed, name, run, full in results:
        print(
            f"| {seed} | {name} | {run['best']:.4f} | {full['best']:.4f} | {100 * (run['best'] - full['best']):+.1f} "
            f"| {run['epochs']} | {full['epochs']} | {run['epochs'] / full['epochs']:.2f} | {run['ended']} "
            f"| {run['seconds']:.0f} | {full['seconds']:.0f} |"
        )
    print()
    for name in args.schedulers:
        mine = [(run, full) for _, n, run, full in results if n == name]
        gap = statistics.mean(100 * (run["best"] - full["best"]) for run, full in mine)
        share = sum(run["epochs"] for run, _ in mine) / sum(full["epochs"] for _, full in mine)
        print(
            f"{name}: mean difference {gap:+.2f} points (goal >= -0.5) at {share:.0%} of the trial-epochs (goal <= 40%)"
        )


if __name__ == "__main__":
    main()
