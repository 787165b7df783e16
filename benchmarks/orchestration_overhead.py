"""Wall time of a fixed set of trials run (a) as a sweep, `python -m kdsweep.search`, and (b) as plain
Python processes calling the same trial function (`run_trial`), no Ray, no MLflow.

(a) is a subprocess on a generated space YAML (fixed student, alpha 0, scheduler none, N samples,
max_concurrent C, cpus_per_trial 1), in a temporary directory with its own ./mlflow.db store and
Tune storage. (b) starts one Python process per trial, C at a time, each building the very
TrialConfig the sweep's trials get (the space's template, num_threads = cpus_per_trial) and
calling `run_trial` on the dataset it loads itself. The two sides alternate over the rounds
(a b, b a, ...) so that a neighbour's load hits them alike; the fastest round of each is kept.

Where (a)'s extra time goes is read from the sweep's own records: the lines it prints (time-stamped
here as they arrive), every trial's MLflow run (start and end times, in ms), and Tune's result.json
(time_this_iter_s between two reports against the trial's own epoch_seconds).

    python benchmarks/orchestration_overhead.py                       # 4 x 40 epochs of resnet8 on digits, 2 at a time
    python benchmarks/orchestration_overhead.py --epochs 4 --rounds 1 # a quick look
    python benchmarks/orchestration_overhead.py --long                # epochs of several seconds (synthetic 3x32x32)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument(
        "--concurrent", type=int, default=2, help="trials at a time (searcher.max_concurrent; bare processes)"
    )
    p.add_argument("--student", default="resnet8")
    p.add_argument("--rounds", type=int, default=2, help="rounds of (a) and (b), alternating which goes first")
    p.add_argument(
        "--long",
        action="store_true",
        help="slow epochs: synthetic 3x32x32 data (--samples images) instead of digits; pair with fewer --epochs",
    )
    p.add_argument("--samples", type=int, default=8000, help="--long: synthetic images (70%% train after val/test)")
    p.add_argument(
        "--bare",
        choices=["per-core", "per-trial"],
        default="per-core",
        help="(b): one long-lived process per slot running its trials in turn, or a fresh process per trial",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directories (their paths are printed)")
    p.add_argument("--bare-trial", help=argparse.SUPPRESS)  # internal: one bare trial, config JSON
    return p.parse_args()


def space_yaml(args: argparse.Namespace) -> str:
    data = (
        f"{{name: synthetic, channels: 3, image_size: 32, num_classes: 10, num_samples: {args.samples}}}"
        if args.long
        else "{name: digits, val_fraction: 0.1, seed: 0}"
    )
    return f"""data: {data}
objective: {{metric: val_accuracy, mode: max}}
budget: {{epochs: {args.epochs}, num_samples: {args.trials}}}
confirm: {{top: 0}}
scheduler: {{name: none}}
searcher: {{name: random, max_concurrent: {args.concurrent}, seed: 0}}
resources: {{cpus_per_trial: 1, gpus_per_trial: 0, max_failures: 0}}
fixed: {{student: {args.student}, alpha: 0.0, optimizer: sgd, lr: 0.05, weight_decay: 0.0005, batch_size: 64}}
search: {{}}
"""


def env() -> dict[str, str]:
    # Every process, Ray's workers included, imports kdsweep from this checkout.
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


# ---------------------------------------------------------------- (a) the sweep


def run_sweep(args: argparse.Namespace, workdir: Path) -> dict:
    (workdir / "space.yaml").write_text(space_yaml(args))
    command = [sys.executable, "-m", "kdsweep.search", "--space", "space.yaml", "--name", "ovh"]
    command += ["--storage", str(workdir / "results"), "--output-json", "rows.json"]
    lines: list[tuple[float, str]] = []
    started = time.time()
    proc = subprocess.Popen(
        command, cwd=workdir, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )

    def read() -> None:
        for line in proc.stdout:
            lines.append((time.time(), line.rstrip("\n")))

    reader = threading.Thread(target=read)
    reader.start()
    rc = proc.wait()
    ended = time.time()
    reader.join()
    (workdir / "sweep.log").write_text("\n".join(f"{t - started:8.2f} {line}" for t, line in lines))
    if rc != 0:
        tail = "\n".join(line for _, line in lines[-30:])
        raise SystemExit(f"the sweep failed (exit {rc}); its log: {workdir / 'sweep.log'}\n{tail}")
    return {"wall": ended - started, "started": started, "ended": ended, "lines": lines, **sweep_records(workdir)}


def sweep_records(workdir: Path) -> dict:
    """Trial runs from MLflow (ms timestamps) and per-report times from Tune's result.json."""
    db = sqlite3.connect(workdir / "mlflow.db")
    rows = db.execute(
        "SELECT r.run_uuid, r.start_time, r.end_time, "
        "(SELECT value FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = 'mlflow.parentRunId') "
        "FROM runs r"
    ).fetchall()
    parents = {parent for *_, parent in rows if parent}
    parent = [(s / 1000, (e or 0) / 1000) for run, s, e, p in rows if run in parents]
    trials = sorted((s / 1000, (e or 0) / 1000) for run, s, e, p in rows if p)
    db.close()
    reports = []
    for result in sorted((workdir / "results" / "ovh").glob("*/result.json")):
        reports.append([json.loads(line) for line in result.read_text().splitlines() if line.strip()])
    return {"parent": parent[0] if parent else None, "trial_runs": trials, "reports": reports}


# ---------------------------------------------------------------- (b) bare processes


def bare_trial(config_json: str) -> None:
    """One bare trial in this process: the sweep's TrialConfig, run_trial, no Ray, no MLflow."""
    t_main = time.time()
    from kdsweep.data import DataSpec, load_dataset
    from kdsweep.trial import TrialConfig, run_trial

    spec = json.loads(config_json)
    trial = TrialConfig.model_validate(spec["trial"])
    t_imported = time.time()
    data = load_dataset(DataSpec.model_validate(spec["data"]))
    trials, ready = [], time.time()  # ready: when this process could start its next trial
    for _ in range(spec["count"]):
        t_start = time.time()
        result = run_trial(trial, data)
        t_end = time.time()
        epochs = [h["epoch_seconds"] for h in result.history]
        trials.append({"main": t_main, "imported": t_imported, "ready": ready, "start": t_start, "end": t_end})
        trials[-1]["epochs"] = epochs
        ready = t_end
    print(json.dumps(trials))


def run_bare(args: argparse.Namespace, workdir: Path) -> dict:
    (workdir / "space.yaml").write_text(space_yaml(args))
    # The very TrialConfig the sweep's trials get: the space's template, num_threads = cpus_per_trial
    # (built here, so that a bare process imports only what a trial needs: no MLflow, no Ray).
    from kdsweep.config import load_config
    from kdsweep.space import trial_template

    config = load_config(workdir / "space.yaml")
    trial = trial_template(config).trial({}, num_threads=max(1, int(config.resources.cpus_per_trial)))
    spec = {"trial": trial.model_dump(mode="json"), "data": config.data.model_dump(mode="json")}
    if args.bare == "per-trial":  # a fresh process per trial, as Tune starts a fresh worker per trial
        counts = [1] * args.trials
    else:  # one long-lived process per slot, its share of the trials one after another
        counts = [len(range(j, args.trials, args.concurrent)) for j in range(args.concurrent)]
    waiting, running, done = list(counts), [], []
    started = time.time()
    while waiting or running:
        while waiting and len(running) < args.concurrent:
            command = [sys.executable, __file__, "--bare-trial", json.dumps({**spec, "count": waiting.pop(0)})]
            proc = subprocess.Popen(command, cwd=workdir, env=env(), stdout=subprocess.PIPE, text=True)
            running.append((time.time(), proc))
        time.sleep(0.01)
        for spawned, proc in list(running):
            if proc.poll() is not None:
                out = proc.stdout.read()
                if proc.returncode != 0:
                    raise SystemExit(f"a bare trial failed (exit {proc.returncode})")
                exited = time.time()
                done += [{"spawned": spawned, "exited": exited, **t} for t in json.loads(out.strip().splitlines()[-1])]
                running.remove((spawned, proc))
    return {"wall": time.time() - started, "started": started, "trials": done}


# ---------------------------------------------------------------- the breakdown


MARKS = [  # (the sweep's first output line containing this, what it tells)
    ("Creating initial MLflow database", "MLflow store being created (python + imports before it)"),
    ("Started a local Ray instance", "Ray runtime started"),
    ("served at", "the sweep's private MLflow server up"),
    ("sweep '", "parent MLflow run opened; Tune starts"),
    ("Total run time", "Tune finished (after the last trial)"),
    ("leaderboard (", "leaderboard printed"),
    ("the sweep in MLflow", "last line: champion registered, summary written"),
]


def timeline(a: dict) -> list[tuple[str, float]]:
    """The sweep's events, seconds after the command started, in order."""
    t0, events = a["started"], []
    for needle, what in MARKS:
        hit = next((t for t, line in a["lines"] if needle in line), None)
        if hit is not None:
            events.append((what, hit - t0))
    runs = a["trial_runs"]
    events.append(("first trial started (its MLflow run opened, in the worker)", runs[0][0] - t0))
    events.append(("last trial ended (its MLflow run closed, before its last report)", max(e for _, e in runs) - t0))
    events.append(("command exited", a["wall"]))
    return sorted(events, key=lambda event: event[1])


def bare_timeline(b: dict) -> list[tuple[str, float]]:
    t0, trials = b["started"], b["trials"]
    return [
        ("first process: python + imports done", min(t["imported"] for t in trials) - t0),
        ("first trial started (run_trial called)", min(t["start"] for t in trials) - t0),
        ("last trial ended (run_trial returned)", max(t["end"] for t in trials) - t0),
        ("last process exited", b["wall"]),
    ]


def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def breakdown(a: dict, b: dict, concurrent: int) -> list[tuple[str, float, float]]:
    """(what, sweep s, bare s): per-trial and per-epoch figures from Tune's result.json and MLflow."""
    reports, runs, bare = a["reports"], a["trial_runs"], b["trials"]
    inner = [r["epoch_seconds"] for trial in reports for r in trial]
    bare_inner = [s for t in bare for s in t["epochs"]]
    middle = [r for trial in reports for r in trial[1:-1]]
    rows = [
        ("median epoch_seconds (the trial's own train + val)", median(inner), median(bare_inner)),
        ("sum of epoch_seconds over all trials", sum(inner), sum(bare_inner)),
        (
            "trial setup before epoch 1, median (sweep: first time_this_iter_s - epoch_seconds; bare: run_trial "
            "time - its epochs)",
            median(trial[0]["time_this_iter_s"] - trial[0]["epoch_seconds"] for trial in reports),
            median(t["end"] - t["start"] - sum(t["epochs"]) for t in bare),
        ),
        (
            "per-report overhead, middle epochs, median (time_this_iter_s - epoch_seconds: log_epoch, checkpoint)",
            median(r["time_this_iter_s"] - r["epoch_seconds"] for r in middle),
            0.0,
        ),
        (
            "per-report overhead, middle epochs, sum over all trials",
            sum(r["time_this_iter_s"] - r["epoch_seconds"] for r in middle),
            0.0,
        ),
        (
            "last-epoch extra, median (time_this_iter_s - epoch_seconds: final model logged, run closed)",
            median(trial[-1]["time_this_iter_s"] - trial[-1]["epoch_seconds"] for trial in reports),
            0.0,
        ),
    ]
    # A slot freed -> the next trial started: trial k's end to trial k + C's start (both sides: the trial function).
    ends, bare_ends = sorted(e for _, e in runs), sorted(t["end"] for t in bare)
    bare_starts = sorted(t["start"] for t in bare)
    gaps = [runs[i + concurrent][0] - ends[i] for i in range(len(runs) - concurrent)]
    bare_gaps = [bare_starts[i + concurrent] - bare_ends[i] for i in range(len(bare) - concurrent)]
    if gaps and bare_gaps:
        rows.append(
            (
                "gap, median: a slot's trial ended -> the next trial started (sweep: MLflow run times)",
                median(gaps),
                median(bare_gaps),
            )
        )
    return rows


def machine() -> str:
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    import ray

    return (
        f"{len(os.sched_getaffinity(0))} CPUs, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, ray {ray.__version__}, commit {commit.stdout.strip() or 'unknown'}"
    )


def main() -> None:
    args = parse_args()
    if args.bare_trial:
        bare_trial(args.bare_trial)
        return
    print(machine())
    data = f"synthetic 3x32x32, {args.samples} images" if args.long else "digits"
    print(
        f"{args.trials} trials x {args.epochs} epochs of {args.student}, alpha 0, on {data}, "
        f"{args.concurrent} at a time; bare: {args.bare} process(es); {args.rounds} round(s), sides alternating, "
        "fastest round of each side kept",
        flush=True,
    )
    results: dict[str, list[dict]] = {"sweep": [], "bare": []}
    for round_ in range(args.rounds):
        order = ["sweep", "bare"] if round_ % 2 == 0 else ["bare", "sweep"]
        for side in order:
            workdir = Path(tempfile.mkdtemp(prefix=f"kdsweep-ovh-{side}-"))
            result = (run_sweep if side == "sweep" else run_bare)(args, workdir)
            print(f"round {round_ + 1}: {side} {result['wall']:.1f} s  ({workdir})", flush=True)
            results[side].append(result)
            if not args.keep:
                subprocess.run(["rm", "-rf", str(workdir)])
    a = min(results["sweep"], key=lambda r: r["wall"])
    b = min(results["bare"], key=lambda r: r["wall"])
    print()
    print("| workload | (a) sweep s | (b) bare s | a/b | all rounds a | all rounds b |")
    print("|---|---|---|---|---|---|")
    rounds_a = " ".join(f"{r['wall']:.1f}" for r in results["sweep"])
    rounds_b = " ".join(f"{r['wall']:.1f}" for r in results["bare"])
    print(
        f"| {args.trials}x{args.epochs} {args.student} on {data}, {args.concurrent} at a time "
        f"| {a['wall']:.1f} | {b['wall']:.1f} | {a['wall'] / b['wall']:.2f} | {rounds_a} | {rounds_b} |"
    )
    print()
    print("Per trial and per epoch, fastest round of each side (seconds):")
    print()
    print("| what | (a) sweep | (b) bare |")
    print("|---|---|---|")
    for what, sa, sb in breakdown(a, b, args.concurrent):
        print(f"| {what} | {sa:.2f} | {sb:.2f} |")
    for side, events in (("(a) sweep", timeline(a)), ("(b) bare", bare_timeline(b))):
        print()
        print(f"Timeline of {side}, seconds after the command started:")
        print()
        print("| event | at s | since previous s |")
        print("|---|---|---|")
        previous = 0.0
        for what, at in events:
            print(f"| {what} | {at:.1f} | {at - previous:.1f} |")
            previous = at


if __name__ == "__main__":
    main()
