"""Does distillation pay, and does confirming the top students over seeds pick better ones than one seed?

For each searcher seed, `python -m kdsweep.search` on the space (default: the shipped default, glyphs) with
confirmation and selection on, as README line 1 runs it, the seed set as `fixed.seed` and `searcher.seed`
(each seed its own experiment and store; the teacher is trained by the first run and found by the others
in a shared cache). From each sweep's `--output-json` rows:

  - what the sweep says: teacher, best scratch student, champion, its kd_gain with its 95% interval;
  - three picks: the best single-seed trial of the search (scratch baselines competing: what selection
    picks with `--confirm-top 0`), and the best configuration by kdsweep's rule over the confirmed
    seeds, with RULE = "mean" (the shipped rule) and with RULE = "lower_bound";
  - each distinct pick trained again from scratch with fresh seeds (`--fresh-seeds`, never used by a
    sweep) through `run_trial`, the sweep's own trial function, on the cached teacher's logits: its
    validation and test accuracy there is what the pick is worth on a seed it was not chosen on.

    PYTHONPATH=. python benchmarks/kd_gain.py --keep /tmp/kdgain             # RESULTS.md's run
    PYTHONPATH=. python benchmarks/kd_gain.py --keep /tmp/kdgain --reuse     # the tables again
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch
import yaml

from kdsweep.confidence import estimate
from kdsweep.configurations import configuration_key, configurations, rank_configurations
from kdsweep.data import DataSpec, load_dataset
from kdsweep.selection import TrialRun
from kdsweep.teachers import TeacherSpec, prepare_teacher, teacher_outputs
from kdsweep.trial import TrialConfig, evaluate, run_trial

ROOT = Path(__file__).resolve().parent.parent
METRIC = "val_accuracy"
PICKS = ("one seed", "confirmed, mean", "confirmed, lower bound")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default=str(ROOT / "kdsweep" / "search_spaces" / "default.yaml"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="searcher (and trial) seeds: one sweep each")
    p.add_argument("--fresh-seeds", type=int, nargs="+", default=[100, 101, 102], help="seeds no sweep uses")
    p.add_argument("--keep", help="keep the runs (MLflow stores, Tune storage, logs, fresh-seed rows) here")
    p.add_argument("--reuse", action="store_true", help="with --keep: reuse sweeps and fresh runs found there")
    return p.parse_args()


def sweep_space(space: dict, seed: int) -> dict:
    out = json.loads(json.dumps(space))
    out["fixed"] = {**out.get("fixed", {}), "seed": seed}
    out["searcher"] = {**out.get("searcher", {}), "seed": seed}
    return out


def run_sweep(space: dict, seed: int, workdir: Path, teachers: Path, reuse: bool) -> tuple[list[dict], float, str]:
    """One sweep as a user runs it (selection on): its rows, wall seconds and output."""
    out, log, seconds = workdir / "rows.json", workdir / "sweep.log", workdir / "sweep.seconds"
    if reuse and seconds.exists():
        return json.loads(out.read_text()), float(seconds.read_text()), log.read_text()
    path = workdir / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    command = [sys.executable, "-m", "kdsweep.search", "--space", str(path), "--name", f"kd-gain-{seed}"]
    command += ["--storage", str(workdir / "results"), "--output-json", str(out)]
    command += ["--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KDSWEEP_CACHE": str(teachers)}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    log.write_text(done.stdout + done.stderr)
    if done.returncode not in (0, 1):  # 1: some trial failed; the rows still say which
        sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    seconds.write_text(str(time.perf_counter() - started))
    return json.loads(out.read_text()), float(seconds.read_text()), log.read_text()


def as_run(row: dict) -> TrialRun:
    """A leaderboard row as selection sees a run (params as strings; a finished row counts as having a model)."""
    params = {name: str(value) for name, value in row["config"].items()}
    model = "row" if row["status"] == "FINISHED" else None
    baseline = row["role"] == "baseline"
    return TrialRun(row["trial_id"], row["trial_id"], row["status"], params, row["metrics"], model, None, baseline)


def picks(rows: list[dict], seed: int) -> dict[str, dict]:
    """The three picks (each a row's trial config, seed aside) of one sweep."""
    search = [r for r in rows if r["status"] == "FINISHED" and r["config"].get("seed", 0) == seed]
    one_seed = max(search, key=lambda r: r["metrics"][METRIC])  # rows come best first: ties keep the sweep's order
    configs = configurations([as_run(r) for r in rows])
    by_id = {r["trial_id"]: r for r in rows}
    chosen = {"one seed": one_seed}
    for rule, name in (("mean", "confirmed, mean"), ("lower_bound", "confirmed, lower bound")):
        best = rank_configurations(configs, METRIC, "max", rule)[0]
        chosen[name] = by_id[best.runs[0].run_id]
    return chosen


def label(row: dict) -> str:
    c = row["config"]
    student = c.get("student", "resnet8") + (f"(w{c['width']})" if c.get("width") else "")
    if row["role"] == "baseline":
        return f"{student} scratch"
    return f"{student} {c.get('loss', 'kd')} T {c.get('temperature', 4.0):.2f} a {c.get('alpha', 0.9):.2f}"


def key_of(row: dict) -> str:
    return configuration_key(row["config"], row["role"] == "baseline")


def fresh_runs(wanted: dict[str, dict], space: dict, fresh: list[int], store: Path, teachers: Path) -> dict:
    """(configuration key, fresh seed) -> {val, test}: each pick trained again with seeds no sweep used."""
    done = {}
    if store.exists():
        for line in store.read_text().splitlines():
            r = json.loads(line)
            done[r["key"], r["seed"]] = r
    todo = [(k, s) for k in wanted for s in fresh if (k, s) not in done]
    if todo:
        os.environ["KDSWEEP_CACHE"] = str(teachers)
        data = load_dataset(DataSpec(**space["data"]))
        spec = TeacherSpec(**space["teacher"])
        teacher = prepare_teacher(spec, data)  # found in the cache the sweeps filled: never trained here
        outputs = teacher_outputs(spec, teacher, data, space["budget"]["epochs"])
        for key, seed in todo:
            row = wanted[key]
            config = TrialConfig(**{**row["config"], "seed": seed, "num_threads": 1, "measure_latency": False})
            if row["role"] == "baseline":
                config = config.scratch()
            started = time.perf_counter()
            result = run_trial(config, data, outputs if config.needs_teacher else None)
            record = {
                "key": key,
                "seed": seed,
                "label": label(row),
                "val": result.metrics["val_accuracy"],
                "test": evaluate(result.student, data, "test")["test_accuracy"],
                "seconds": time.perf_counter() - started,
            }
            print(json.dumps(record), flush=True)
            with store.open("a") as out:
                out.write(json.dumps(record) + "\n")
            done[key, seed] = record
    return done


def interval(values: list[float], scale: float = 100.0) -> str:
    e = estimate([scale * v for v in values])
    if e.half_width is None:
        return f"{e.mean:.2f}"
    return f"{e.mean:.2f} [{e.low:.2f}, {e.high:.2f}]"


def main() -> None:
    args = parse_args()
    space = yaml.safe_load(Path(args.space).read_text())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    print(f"{os.cpu_count()} CPUs, {platform.machine()}, torch {torch.__version__}, ray {ray.__version__}, ", end="")
    print(f"commit {commit.stdout.strip()}; space {Path(args.space).name}, searcher seeds {args.seeds}, ", end="")
    print(f"fresh seeds {args.fresh_seeds}; load {os.getloadavg()}\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="kdsweep-kdgain-") as tmp:
        top = Path(args.keep or tmp)
        sweeps = {}
        for seed in args.seeds:
            workdir = top / f"seed-{seed}"
            workdir.mkdir(parents=True, exist_ok=True)
            rows, seconds, log = run_sweep(sweep_space(space, seed), seed, workdir, top / "teachers", args.reuse)
            sweeps[seed] = {"rows": rows, "seconds": seconds, "log": log, "picks": picks(rows, seed)}
            print(f"seed {seed}: {len(rows)} rows in {seconds:.0f} s; load {os.getloadavg()}", flush=True)
        wanted = {key_of(row): row for s in sweeps.values() for row in s["picks"].values()}
        fresh = fresh_runs(wanted, space, args.fresh_seeds, top / "fresh.jsonl", top / "teachers")
    report(sweeps, fresh, args)


def verdict_lines(log: str) -> list[str]:
    """The sweep's own answer: the lines after its leaderboard that say whether distillation paid."""
    return [line.strip() for line in log.splitlines() if "distillation" in line.lower() or "champion" in line.lower()]


def report(sweeps: dict, fresh: dict, args: argparse.Namespace) -> None:
    print("\n### What each sweep says (validation; seeds 3 per confirmed configuration)\n")
    print(
        "| seed | teacher | best scratch (search) | champion | its val over seeds, mean [95%] "
        "| its kd_gain (points) [95%] "
        "| paid | trials: search + baselines + confirmation | trial-epochs | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for seed, s in sweeps.items():
        rows = s["rows"]
        champion = next((r for r in rows if r.get("champion")), None)
        teacher = next((r["vs_scratch"]["teacher_val_accuracy"] for r in rows if r.get("vs_scratch")), float("nan"))
        scratch = [
            r
            for r in rows
            if r["role"] == "baseline" and r["config"].get("seed", 0) == seed and r["status"] == "FINISHED"
        ]
        best_scratch = max(scratch, key=lambda r: r["metrics"][METRIC]) if scratch else None
        confirmation = [r for r in rows if r["config"].get("seed", 0) != seed]
        searched = [r for r in rows if r["role"] == "trial" and r["config"].get("seed", 0) == seed]
        baselines = [r for r in rows if r["role"] == "baseline" and r["config"].get("seed", 0) == seed]
        epochs = sum(int(r["metrics"].get("epoch", 0)) for r in rows)
        value, gain = "-", "-"
        paid = "-"
        if champion and champion.get("seeds"):
            v = champion["seeds"]["value"]
            value = (
                f"{v['mean']:.4f} [{v['low']:.4f}, {v['high']:.4f}] ({v['seeds']})"
                if v["low"] is not None
                else f"{v['mean']:.4f} (1)"
            )
            g = champion["seeds"].get("kd_gain")
            if g:
                gain = (
                    f"{100 * g['mean']:+.2f} [{100 * g['low']:+.2f}, {100 * g['high']:+.2f}]"
                    if g["low"] is not None
                    else f"{100 * g['mean']:+.2f} (1 seed)"
                )
                paid = "yes" if g["low"] is not None and g["low"] > 0 else "no"
        print(
            f"| {seed} | {teacher:.4f} | {best_scratch['metrics'][METRIC]:.4f} ({label(best_scratch)}) "
            f"| {label(champion) if champion else '-'} | {value} | {gain} | {paid} "
            f"| {len(searched)} + {len(baselines)} + {len(confirmation)} | {epochs} | {s['seconds']:.0f} |"
        )
    for seed, s in sweeps.items():
        print(f"\nseed {seed}, the sweep's lines:")
        for line in verdict_lines(s["log"]):
            print(f"    {line}")

    print(f"\n### The picks on fresh seeds {args.fresh_seeds} (accuracy in points, mean [95%] over the fresh seeds)\n")
    print("| seed | pick | configuration | its figure in the sweep | fresh val | fresh test |")
    print("|---|---|---|---|---|---|")
    per_pick: dict[str, list[float]] = {name: [] for name in PICKS}
    per_pick_val: dict[str, list[float]] = {name: [] for name in PICKS}
    for seed, s in sweeps.items():
        for name in PICKS:
            row = s["picks"][name]
            runs = [fresh[key_of(row), f] for f in args.fresh_seeds]
            tests, vals = [r["test"] for r in runs], [r["val"] for r in runs]
            per_pick[name] += tests
            per_pick_val[name] += vals
            figure = f"{row['metrics'][METRIC]:.4f} (one seed)"
            if name != "one seed" and row.get("seeds"):
                v = row["seeds"]["value"]
                figure = f"{v['mean']:.4f} over {v['seeds']} seeds"
            print(f"| {seed} | {name} | {label(row)} | {figure} | {interval(vals)} | {interval(tests)} |")
    print("\n| pick | fresh val, all sweeps | fresh test, all sweeps | test - one seed's, paired (points) |")
    print("|---|---|---|---|")
    for name in PICKS:
        diff = [a - b for a, b in zip(per_pick[name], per_pick["one seed"], strict=True)]
        paired = "-" if name == "one seed" else interval(diff)
        print(f"| {name} | {interval(per_pick_val[name])} | {interval(per_pick[name])} | {paired} |")
    n = len(per_pick["one seed"])
    print(
        f"\n({n} pairs: {len(sweeps)} sweeps x {len(args.fresh_seeds)} fresh seeds; "
        "intervals are Student's t over them)"
    )


if __name__ == "__main__":
    main()
