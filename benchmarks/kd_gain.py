"""Does distillation pay? Teacher, scratch, the fixed Hinton recipe and the sweep's best, per student.

For each dataset and seed, two runs of `python -m kdsweep.search` in one MLflow experiment:
  (1) the recipe: every student of the space (a grid) distilled with T = 4, alpha = 0.9 (loss kd)
      for the full budget, no scheduler; kdsweep trains each student's scratch baseline alongside;
  (2) the sweep: the space itself (default: kdsweep/search_spaces/default.yaml) with its scheduler and
      searcher; it reuses the recipe's baselines (same student, settings and data) and trains the rest.
The seed sets the students' initialisation and the searcher's draws; the data split is the space's,
so each dataset's teacher is trained once (by the first run) and cached for the others. Validation
accuracy throughout (the split the sweep selects on); gap closed = (student - scratch) /
(teacher - scratch), undefined as in kdsweep when the teacher is not one validation sample better.
Equal budget: the sweep's distillation trial-epochs are set near the recipe's (--sweep-samples) and
both totals are printed.

    PYTHONPATH=. python benchmarks/kd_gain.py --sweep-samples 5 --teacher-epochs 20   # RESULTS.md's run
    PYTHONPATH=. python benchmarks/kd_gain.py --keep DIR --reuse                      # tables again
"""

from __future__ import annotations

import argparse
import json
import math
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
import yaml

from kdsweep.data import DataSpec, load_dataset
from kdsweep.gain import gain

ROOT = Path(__file__).resolve().parent.parent
RECIPE = {"loss": "kd", "temperature": 4.0, "alpha": 0.9}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default=str(ROOT / "kdsweep" / "search_spaces" / "default.yaml"))
    p.add_argument("--datasets", nargs="+", default=["digits", "glyphs"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sweep-samples", type=int, default=None, help="the sweep's num_samples (default: the space's)")
    p.add_argument("--teacher-epochs", type=int, default=None, help="teacher.epochs (default: the space's)")
    p.add_argument("--keep", help="keep the runs (MLflow store, Tune storage, logs) in this directory")
    p.add_argument("--reuse", action="store_true", help="with --keep: report runs finished there, run only the rest")
    return p.parse_args()


def spaces(space: dict, dataset: str, seed: int, args: argparse.Namespace) -> tuple[dict, dict]:
    """(recipe, sweep) spaces for one dataset and seed."""
    base = json.loads(json.dumps(space))
    base["data"] = {**base.get("data", {}), "name": dataset}
    if args.teacher_epochs:
        base["teacher"] = {**base["teacher"], "epochs": args.teacher_epochs}
    base["fixed"] = {**base.get("fixed", {}), "seed": seed}
    base["searcher"] = {**base.get("searcher", {}), "seed": seed}
    sweep = json.loads(json.dumps(base))
    if args.sweep_samples is not None:
        sweep["budget"]["num_samples"] = args.sweep_samples
    recipe = json.loads(json.dumps(base))
    students = base["search"]["student"]
    recipe["search"] = {"student": {"grid": students.get("choice") or students["grid"]}}
    if "width" in base["search"]:  # width-configurable students keep their width's domain
        recipe["search"]["width"] = base["search"]["width"]
    recipe["fixed"] = {**recipe["fixed"], **RECIPE}
    recipe["budget"]["num_samples"] = 1
    recipe["scheduler"] = {"name": "none"}
    return recipe, sweep


def run(space: dict, name: str, workdir: Path, teachers: Path, reuse: bool) -> tuple[list[dict], float]:
    path = workdir / f"{name}.yaml"
    out, seconds = workdir / f"{name}.json", workdir / f"{name}.seconds"
    if reuse and (workdir / f"{name}.log").exists():  # written once the run has ended
        return json.loads(out.read_text()), float(seconds.read_text()) if seconds.exists() else math.nan
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    command = [sys.executable, "-m", "kdsweep.search", "--space", str(path), "--name", "kd-gain"]
    command += ["--no-select", "--storage", str(workdir / "results"), "--output-json", str(out)]
    command += ["--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KDSWEEP_CACHE": str(teachers)}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    (workdir / f"{name}.log").write_text(done.stdout + done.stderr)
    if done.returncode not in (0, 1):  # 1: some trial failed; the rows still say which
        sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    seconds.write_text(str(time.perf_counter() - started))
    return json.loads(out.read_text()), float(seconds.read_text())


def student_of(row: dict) -> str:
    config = row["config"]
    width = config.get("width")
    return config.get("student", "resnet8") + (f"(w{width})" if width else "")


def measure(recipe_rows: list[dict], sweep_rows: list[dict]) -> dict:
    """Per student: scratch, recipe and the sweep's best distilled (FINISHED) student, with gap closed."""
    scratch = {student_of(r): r["metrics"]["val_accuracy"] for r in recipe_rows + sweep_rows if r["role"] == "baseline"}
    compared = [r for r in recipe_rows + sweep_rows if r.get("vs_scratch", {}).get("teacher_val_accuracy")]
    teacher = compared[0]["vs_scratch"]["teacher_val_accuracy"]
    recipe = {student_of(r): r["metrics"]["val_accuracy"] for r in recipe_rows if r["role"] == "trial"}
    finished = [r for r in sweep_rows if r["role"] == "trial" and r["status"] == "FINISHED"]
    swept: dict[str, dict] = {}
    for row in finished:
        best = swept.get(student_of(row))
        if best is None or row["metrics"]["val_accuracy"] > best["metrics"]["val_accuracy"]:
            swept[student_of(row)] = row
    epochs = {
        name: sum(int(r["metrics"].get("epoch", 0)) for r in rows if r["role"] == "trial")
        for name, rows in (("recipe", recipe_rows), ("sweep", sweep_rows))
    }
    return {
        "teacher": teacher,
        "scratch": scratch,
        "recipe": recipe,
        "sweep": {k: v["metrics"]["val_accuracy"] for k, v in swept.items()},
        "sweep_trials": len([r for r in sweep_rows if r["role"] == "trial"]),
        "epochs": epochs,
    }


def gap(student: float | None, scratch: float | None, teacher: float, resolution: float) -> str:
    """Gap closed as kdsweep computes it: undefined when the teacher beats scratch by less than one
    validation sample (`resolution`)."""
    if student is None or scratch is None:
        return "-"
    closed = gain(student, scratch, teacher, resolution, epoch=0).gap_closed
    return "n/a (teacher no better)" if closed is None else f"{closed:+.2f}"


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def main() -> None:
    args = parse_args()
    space = yaml.safe_load(Path(args.space).read_text())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    print(f"{os.cpu_count()} CPUs, {platform.machine()}, torch {torch.__version__}, ray {ray.__version__}, ", end="")
    print(f"commit {commit.stdout.strip()}; space {Path(args.space).name}, seeds {args.seeds}, ", end="")
    print(
        f"sweep samples {args.sweep_samples or 'as the space'}, "
        f"teacher epochs {args.teacher_epochs or 'as the space'}\n"
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="kdsweep-kdgain-") as tmp:
        top = Path(args.keep or tmp)
        for dataset in args.datasets:
            for seed in args.seeds:
                workdir = top / f"{dataset}-{seed}"
                workdir.mkdir(parents=True, exist_ok=True)
                recipe, sweep = spaces(space, dataset, seed, args)
                recipe_rows, recipe_s = run(recipe, "recipe", workdir, top / "teachers", args.reuse)
                sweep_rows, sweep_s = run(sweep, "sweep", workdir, top / "teachers", args.reuse)
                resolution = 1 / len(load_dataset(DataSpec(**recipe["data"])).val)
                results[dataset, seed] = {
                    **measure(recipe_rows, sweep_rows),
                    "seconds": (recipe_s, sweep_s),
                    "resolution": resolution,
                }
                r = results[dataset, seed]
                print(
                    f"{dataset} seed {seed}: teacher {r['teacher']:.4f}, "
                    f"best scratch {max(r['scratch'].values()):.4f}, "
                    f"best recipe {max(r['recipe'].values()):.4f}, best sweep {max(r['sweep'].values(), default=0):.4f}"
                    f" ({recipe_s:.0f} s + {sweep_s:.0f} s)",
                    flush=True,
                )
    report(results, args)


def report(results: dict, args: argparse.Namespace) -> None:
    for dataset in args.datasets:
        rows = [results[dataset, seed] for seed in args.seeds]
        students = sorted({s for r in rows for s in r["scratch"]})
        print(f"\n### {dataset}\n")
        print("| seed | student | teacher | scratch | recipe (T 4, alpha 0.9) | recipe gap closed | sweep best KD |")
        print("|---|---|---|---|---|---|---|")
        for seed, r in zip(args.seeds, rows, strict=True):
            for student in students:
                scratch = r["scratch"].get(student)
                recipe, swept = r["recipe"].get(student), r["sweep"].get(student)
                print(
                    f"| {seed} | {student} | {r['teacher']:.4f} | {number(scratch)} | {number(recipe)} "
                    f"| {gap(recipe, scratch, r['teacher'], r['resolution'])} "
                    f"| {number(swept)} |"
                )
        print(
            "\n| seed | teacher | best scratch | best recipe | best sweep KD | sweep - recipe (points) "
            "| recipe gap closed (best) | sweep gap closed (best) | recipe trial-epochs | sweep trial-epochs "
            "(trials) | recipe s | sweep s |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for seed, r in zip(args.seeds, rows, strict=True):
            best_recipe = max(r["recipe"], key=r["recipe"].get)
            best_sweep = max(r["sweep"], key=r["sweep"].get) if r["sweep"] else None
            sweep_acc = r["sweep"].get(best_sweep) if best_sweep else None
            print(
                f"| {seed} | {r['teacher']:.4f} | {max(r['scratch'].values()):.4f} | {r['recipe'][best_recipe]:.4f} "
                f"({best_recipe}) | {number(sweep_acc)} ({best_sweep}) "
                f"| {100 * ((sweep_acc or 0) - r['recipe'][best_recipe]):+.1f} "
                f"| {gap(r['recipe'][best_recipe], r['scratch'].get(best_recipe), r['teacher'], r['resolution'])} "
                f"| {gap(sweep_acc, r['scratch'].get(best_sweep), r['teacher'], r['resolution'])} "
                f"| {r['epochs']['recipe']} | {r['epochs']['sweep']} ({r['sweep_trials']}) "
                f"| {r['seconds'][0]:.0f} | {r['seconds'][1]:.0f} |"
            )
        difference = statistics.mean(
            100 * (max(r["sweep"].values(), default=0) - max(r["recipe"].values())) for r in rows
        )
        kd = statistics.mean(100 * (max(r["recipe"].values()) - max(r["scratch"].values())) for r in rows)
        print(
            f"\n{dataset}: sweep best - recipe best {difference:+.2f} points on average (goal >= 0); "
            f"recipe best - scratch best {kd:+.2f} points"
        )


if __name__ == "__main__":
    main()
