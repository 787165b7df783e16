"""Does the default sweep show what distillation does? The shipped space, as README line 1 runs it, per seed.

For each seed, `python -m kdsweep.search` on the space (default: the shipped `default`) with the
students' initialisation and the searcher's draws set to the seed (`fixed.seed`, `searcher.seed`);
the data split and the teacher are the space's, so the first run trains the teacher and the others
reuse it. Per seed: the teacher's validation accuracy, the best scratch baseline, the best distilled
student that ran its full budget, the gap the teacher leaves (teacher - best scratch) and the share
of it the best distilled student closes, its `kd_gain` over its own baseline, the trial-epochs
(distillation and baselines) and what a confirmation stage (the top 3 configurations and their
students' baselines, 2 more seeds each) would add, and the wall time with the load average.

    PYTHONPATH=. python benchmarks/default_space.py                 # RESULTS.md's run
    PYTHONPATH=. python benchmarks/default_space.py --keep DIR --reuse   # the table again
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

import ray
import torch
import yaml
from kd_gain import run, student_of  # benchmarks/ is the script's folder, on sys.path

from kdsweep.config import space_file

CONFIRM_TOP, CONFIRM_MORE_SEEDS = 3, 2  # issue 19's confirmation stage, for its cost
TEACHER_EPOCH = re.compile(r"teacher \S+ epoch +\d+/\d+: .*\(([\d.]+)s\)")  # a first run's teacher, per epoch


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="default", help="a shipped space's name or a YAML file")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", action="append", default=[], help="key=value, as the sweep's --set")
    p.add_argument("--keep", help="keep the runs (MLflow store, Tune storage, logs) in this directory")
    p.add_argument("--reuse", action="store_true", help="with --keep: report runs finished there, run only the rest")
    return p.parse_args()


def seeded(space: dict, seed: int, overrides: list[str]) -> dict:
    """The space with the students' and the searcher's seed set, and `--set` applied."""
    space = {**space, "fixed": {**space.get("fixed", {}), "seed": seed}}
    space["searcher"] = {**space.get("searcher", {}), "seed": seed}
    for item in overrides:
        key, _, value = item.partition("=")
        *parents, last = key.split(".")
        node = space
        for part in parents:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[last] = yaml.safe_load(value)
    return space


def measure(rows: list[dict], epochs: int) -> dict:
    """Teacher, best scratch, best full-budget distilled student, and the trial-epochs behind them."""
    baselines = [r for r in rows if r["role"] == "baseline" and r["status"] == "FINISHED"]
    trials = [r for r in rows if r["role"] == "trial"]
    finished = [r for r in trials if r["status"] == "FINISHED"]
    teacher = next(r["vs_scratch"]["teacher_val_accuracy"] for r in trials if r.get("vs_scratch", {}).get("epoch"))
    scratch = max(baselines, key=lambda r: r["metrics"]["val_accuracy"])
    best = max(finished, key=lambda r: r["metrics"]["val_accuracy"])
    top = sorted(finished, key=lambda r: -r["metrics"]["val_accuracy"])[:CONFIRM_TOP]
    confirm = CONFIRM_MORE_SEEDS * epochs * (len(top) + len({student_of(r) for r in top}))
    return {
        "teacher": teacher,
        "scratch": scratch["metrics"]["val_accuracy"],
        "scratch_student": student_of(scratch),
        "best": best["metrics"]["val_accuracy"],
        "best_student": student_of(best),
        "best_gain": best["metrics"].get("kd_gain"),
        "gains": [r["metrics"]["kd_gain"] for r in finished if "kd_gain" in r["metrics"]],
        "trial_epochs": sum(int(r["metrics"].get("epoch", 0)) for r in trials),
        "baseline_epochs": sum(int(r["metrics"].get("epoch", 0)) for r in baselines),
        "trials": (len(trials), len(baselines)),
        "confirm_epochs": confirm,
    }


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    args = parse_args()
    path = space_file(args.space)
    space = yaml.safe_load(path.read_text())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    print(f"{os.cpu_count()} CPUs, {platform.machine()}, torch {torch.__version__}, ray {ray.__version__}, ", end="")
    print(f"commit {commit.stdout.strip()}; space {path.name}, seeds {args.seeds}, --set {args.set}\n", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="kdsweep-default-") as tmp:
        top = Path(args.keep or tmp)
        for seed in args.seeds:
            workdir = top / f"seed-{seed}"
            workdir.mkdir(parents=True, exist_ok=True)
            config = seeded(space, seed, args.set)
            before = load()
            rows, seconds = run(config, "sweep", workdir, top / "teachers", args.reuse)
            teacher_s = sum(float(x) for x in TEACHER_EPOCH.findall((workdir / "sweep.log").read_text()))
            results[seed] = {**measure(rows, config["budget"]["epochs"]), "seconds": seconds, "teacher_s": teacher_s}
            results[seed]["load"] = f"{before} / {load()}"
            print(f"seed {seed}: {results[seed]}", flush=True)
    report(results, space)


def report(results: dict, space: dict) -> None:
    epochs = space["budget"]["epochs"]
    print(
        "\n| seed | teacher | best scratch | teacher - scratch (points) | best distilled (full budget) "
        "| - best scratch (points) | gap closed | its kd_gain | distilled with kd_gain > 0 | trial-epochs "
        "(distilled + baselines) | confirmation would add | teacher s | wall s | load (1, 5, 15 min) before / after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for seed, r in results.items():
        gap = r["teacher"] - r["scratch"]
        closed = (r["best"] - r["scratch"]) / gap if gap > 0 else float("nan")
        positive = sum(g > 0 for g in r["gains"])
        print(
            f"| {seed} | {r['teacher']:.4f} | {r['scratch']:.4f} ({r['scratch_student']}) | {100 * gap:+.1f} "
            f"| {r['best']:.4f} ({r['best_student']}) | {100 * (r['best'] - r['scratch']):+.1f} | {closed:+.2f} "
            f"| {100 * (r['best_gain'] or 0):+.1f} | {positive} of {len(r['gains'])} "
            f"| {r['trial_epochs']} + {r['baseline_epochs']} ({r['trials'][0]} + {r['trials'][1]} trials) "
            f"| {r['confirm_epochs']} | {r['teacher_s']:.0f} | {r['seconds']:.0f} | {r['load']} |"
        )
    gaps = [100 * (r["teacher"] - r["scratch"]) for r in results.values()]
    gains = [100 * (r["best"] - r["scratch"]) for r in results.values()]
    print(
        f"\nteacher - best scratch: {statistics.mean(gaps):+.1f} points on average, at least {min(gaps):+.1f} "
        f"(goal >= +3.0); best distilled - best scratch: {statistics.mean(gains):+.1f} on average, "
        f"at least {min(gains):+.1f} (goal > 0); {epochs} epochs per trial"
    )


if __name__ == "__main__":
    main()
