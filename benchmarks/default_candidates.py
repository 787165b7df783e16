"""Candidates for the default space: one teacher, each student from scratch and distilled, per seed, no sweep.

The fixed Hinton recipe (loss kd, T = 4, alpha = 0.9) against the same student trained from scratch
(alpha = 0), both with `run_trial` (the sweep's own trial function) on one CPU thread, the teacher
found or trained once with the sweep's own teacher code (cached in $KDSWEEP_CACHE, where a sweep with
the same `teacher:` and `data:` finds it). No Ray, no MLflow: cheap enough to try candidates on a busy
2-core machine; the chosen default is then measured as a sweep by benchmarks/default_space.py.

    PYTHONPATH=. python benchmarks/default_candidates.py --teacher resnet8x4 --teacher-epochs 10 \\
        --students resnet8 small_cnn:16 small_cnn:32 shufflenet_v2_x0_5 --seeds 0 1 2 --out rows.jsonl
    PYTHONPATH=. python benchmarks/default_candidates.py --report rows.jsonl     # the table again
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from kdsweep.data import DataSpec, load_dataset
from kdsweep.teachers import TeacherSpec, prepare_teacher, teacher_outputs
from kdsweep.trial import TrialConfig, evaluate, run_trial


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="glyphs")
    p.add_argument("--teacher", default="resnet8x4")
    p.add_argument("--teacher-epochs", type=int, default=10)
    p.add_argument("--students", nargs="+", default=["resnet8"], help="NAME or NAME:WIDTH")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the students' (fixed.seed)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--out", default="candidates.jsonl", help="one JSON row per student run, appended")
    p.add_argument("--report", help="print the table of this file's rows and run nothing")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.report:
        report([json.loads(line) for line in Path(args.report).read_text().splitlines()])
        return
    data = load_dataset(DataSpec(name=args.data))
    spec = TeacherSpec(arch=args.teacher, epochs=args.teacher_epochs)
    started = time.perf_counter()
    teacher = prepare_teacher(spec, data)
    teacher_val = evaluate(teacher.module, data, "val")["val_accuracy"]
    print(f"teacher {args.teacher}: val {teacher_val:.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
    outputs = teacher_outputs(spec, teacher, data, args.epochs)
    for seed in args.seeds:
        for student in args.students:
            name, _, width = student.partition(":")
            for alpha in (0.0, 0.9):  # scratch, then the recipe
                config = TrialConfig(
                    student=name,
                    width=int(width) if width else None,
                    alpha=alpha,
                    temperature=4.0,
                    epochs=args.epochs,
                    seed=seed,
                    num_threads=1,
                    measure_latency=False,
                )
                started = time.perf_counter()
                result = run_trial(config, data, outputs)
                row = {
                    "teacher": f"{args.teacher}@{args.teacher_epochs}",
                    "teacher_val": teacher_val,
                    "student": student,
                    "kind": "kd" if alpha else "scratch",
                    "seed": seed,
                    "val": result.metrics["val_accuracy"],
                    "seconds": time.perf_counter() - started,
                }
                print(json.dumps(row), flush=True)
                with open(args.out, "a") as out:
                    out.write(json.dumps(row) + "\n")
    report([json.loads(line) for line in Path(args.out).read_text().splitlines()])


def report(rows: list[dict]) -> None:
    """Per teacher and student: scratch and recipe per seed, the mean gain and the share of the gap closed."""
    print("\n| teacher (val) | student | seed | scratch | recipe (T 4, alpha 0.9) | gain (points) | gap closed |")
    print("|---|---|---|---|---|---|---|")
    runs = {(r["teacher"], r["student"], r["seed"], r["kind"]): r for r in rows}
    for teacher, student, seed, kind in runs:
        if kind != "scratch" or (teacher, student, seed, "kd") not in runs:
            continue
        scratch, kd = runs[teacher, student, seed, "scratch"], runs[teacher, student, seed, "kd"]
        gap = kd["teacher_val"] - scratch["val"]
        print(
            f"| {teacher} ({kd['teacher_val']:.4f}) | {student} | {seed} | {scratch['val']:.4f} | {kd['val']:.4f} "
            f"| {100 * (kd['val'] - scratch['val']):+.1f} | {(kd['val'] - scratch['val']) / gap:+.2f} |"
        )
    best = {}
    for (teacher, _student, seed, kind), r in runs.items():
        key = (teacher, seed, kind)
        best[key] = max(best.get(key, 0.0), r["val"])
    print(
        "\n| teacher | seed | teacher val | best scratch | best recipe | teacher - best scratch | gap closed (best) |"
    )
    print("|---|---|---|---|---|---|---|")
    gaps = []
    for teacher, seed, kind in sorted(best):
        if kind != "scratch" or (teacher, seed, "kd") not in best:
            continue
        teacher_val = next(r["teacher_val"] for k, r in runs.items() if k[0] == teacher)
        scratch, kd = best[teacher, seed, "scratch"], best[teacher, seed, "kd"]
        gaps.append(100 * (teacher_val - scratch))
        print(
            f"| {teacher} | {seed} | {teacher_val:.4f} | {scratch:.4f} | {kd:.4f} "
            f"| {100 * (teacher_val - scratch):+.1f} | {(kd - scratch) / (teacher_val - scratch):+.2f} |"
        )
    if gaps:
        print(f"\nteacher - best scratch: {statistics.mean(gaps):+.1f} points on average, at least {min(gaps):+.1f}")


if __name__ == "__main__":
    main()
