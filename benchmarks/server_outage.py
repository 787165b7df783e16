"""Wall time of one sweep (a) undisturbed, and with its MLflow server killed mid-sweep: (b) the private
server and its uvicorn worker, (c) only the `mlflow server` parent (its worker orphaned), both SIGKILL,
as the OOM killer ends a process; and (d) a user's own server (`--tracking-uri http://...`) stopped
for good. Also each trial's epoch time while tracking was down against its epoch time while it was up.

Every side is `python -m kdsweep.search` on the issue's sweep (the default space, digits, `--set
budget.epochs=40 --set budget.num_samples=4 --set scheduler.name=none`: 8 trials with the scratch
baselines, 2 at a time), in a temporary directory of its own (its ./mlflow.db: the private server),
with one teacher cache shared by all, trained once before the timed runs. The kill comes `--kill-after`
seconds after the first trial reported. The sides alternate over the rounds; each is printed.

Epoch time, from Tune's result.json (`time_this_iter_s`: the epoch and its report, the MLflow calls
included): an epoch is "down" when it started after the kill and ended before the server answered
again (the driver's "restarted" line, (b) and (c); never, (d)), "up" when it ended before the kill
or started after the return; the first epoch of a trial (start-up) and its last (the model logged)
are left out of both. Trials differ (resnet20's epochs take 5x small_cnn's), so the ratio is taken
within each trial that has both (3 epochs of each at least): the median of down / up over those; and
against the same trial (the same config: the sides draw the same trials) in the undisturbed sweep, which
needs no "up" epochs of its own (a trial that starts after the kill has none).
"training s" sums every trial's own `epoch_seconds` (training and validation, no MLflow): on a shared
machine it shows how much of a side's wall time a neighbour's load, not the outage, took.

    python benchmarks/server_outage.py                         # the issue's sweep, 1 round
    python benchmarks/server_outage.py --epochs 10 --samples 2  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from orchestration_overhead import machine  # the same line of machine facts (a sibling script)

ROOT = Path(__file__).resolve().parent.parent
SIDES = {
    "undisturbed": "(a) undisturbed",
    "killed": "(b) private server + worker killed",
    "parent": "(c) only the private server's parent killed",
    "user-down": "(d) user's server stopped for good",
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40, help="budget.epochs")
    p.add_argument("--samples", type=int, default=4, help="budget.num_samples (each student also gets a baseline)")
    p.add_argument("--kill-after", type=float, default=8.0, help="seconds after the first trial reported")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--sides", nargs="+", choices=list(SIDES), default=list(SIDES))
    p.add_argument("--keep", action="store_true", help="keep the temporary directories (their paths are printed)")
    p.add_argument("--teacher-cache", help="a teacher cache to use and keep (default: a temporary one)")
    return p.parse_args()


def env(cache: Path) -> dict[str, str]:
    # Every process, Ray's workers included, imports kdsweep from this checkout; the output arrives line by line.
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "KDSWEEP_CACHE": str(cache)}


def sweep_command(args: argparse.Namespace, workdir: Path, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "kdsweep.search", "--name", "outage", "--output-json", "rows.json"]
    command += ["--storage", str(workdir / "results"), "--set", f"budget.epochs={args.epochs}"]
    command += ["--set", f"budget.num_samples={args.samples}", "--set", "scheduler.name=none"]
    return [*command, "--confirm-top", "0", *extra]  # the sweep's own trials: what the outage is measured on


def epochs_reported(workdir: Path) -> dict[str, int]:
    return {p.parent.name: p.read_text().count("\n") for p in (workdir / "results" / "outage").glob("*/result.json")}


def server_processes(workdir: Path) -> tuple[list[int], list[int]]:
    """(`mlflow server` processes of the directory's ./mlflow.db, their children: uvicorn workers)."""
    database = str(workdir / "mlflow.db").encode()
    servers, parents = [], {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes()
            parents[int(proc.name)] = int((proc / "stat").read_bytes().rsplit(b")", 1)[1].split()[1])
        except OSError:
            continue
        if b"mlflow" in command and database in command:
            servers.append(int(proc.name))
    return servers, [pid for pid, parent in parents.items() if parent in servers]


def run_side(args: argparse.Namespace, side: str, workdir: Path, cache: Path) -> dict:
    extra: list[str] = []
    user_server = None
    if side == "user-down":
        from kdsweep.tracking.server import MlflowServer

        store = workdir / "user-store"
        store.mkdir()
        user_server = MlflowServer(f"sqlite:///{store / 'mlflow.db'}", store / "artifacts", store / "server.log")
        user_server.wait_ready()
        # the driver then waits this long for it at the end, not the default 300 s
        extra = ["--tracking-uri", user_server.url, "--set", "run.tracking_patience_s=5"]
    lines: list[tuple[float, str]] = []
    started = time.time()
    proc = subprocess.Popen(
        sweep_command(args, workdir, *extra),
        cwd=workdir,
        env=env(cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    reader = threading.Thread(target=lambda: lines.extend((time.time(), line.rstrip("\n")) for line in proc.stdout))
    reader.start()
    first_report, killed_at, at_kill, at_back, back_at = None, None, None, None, None
    while proc.poll() is None:
        time.sleep(0.2)
        reported = epochs_reported(workdir)
        if reported and first_report is None:
            first_report = time.time()
        if (
            side != "undisturbed"
            and killed_at is None
            and first_report
            and time.time() - first_report >= args.kill_after
        ):
            at_kill, killed_at = reported, time.time()
            if user_server is not None:
                user_server.stop()
            else:
                servers, workers = server_processes(workdir)
                for pid in servers + (workers if side == "killed" else []):
                    os.kill(pid, signal.SIGKILL)
        if killed_at and back_at is None and any("restarted it on the same store" in line for _, line in lines):
            at_back, back_at = epochs_reported(workdir), time.time()
    reader.join()
    wall = time.time() - started
    if user_server is not None:
        user_server.stop()  # if it was not stopped already
    (workdir / "sweep.log").write_text("\n".join(f"{t - started:8.2f} {line}" for t, line in lines))
    rows = json.loads((workdir / "rows.json").read_text()) if (workdir / "rows.json").exists() else []
    left = [pid for group in server_processes(workdir) for pid in group]
    if user_server is not None:
        left += [pid for group in server_processes(workdir / "user-store") for pid in group]
    return {
        "side": side,
        "wall": wall,
        "exit": proc.returncode,
        "finished": sum(row["status"] == "FINISHED" for row in rows),
        "trials": len(rows),
        "not_in_mlflow": sum(bool(row.get("not_in_mlflow")) for row in rows),
        "restarts": sum("restarted it on the same store" in line for _, line in lines),
        "left": left,
        "outage_s": (back_at or time.time()) - killed_at if killed_at else 0.0,
        **epoch_times(workdir, at_kill, at_back),
    }


def epoch_times(workdir: Path, at_kill: dict[str, int] | None, at_back: dict[str, int] | None) -> dict:
    """time_this_iter_s of the middle epochs (not a trial's first or last), split into those wholly inside
    the outage and those wholly outside it. `at_kill`, `at_back`: epochs each trial had reported when the
    server was killed and when it answered again (None: never killed; never back)."""
    up, down, ratios, training = [], [], [], 0.0
    middle, down_by_config = {}, {}  # by the trial's config: the same trials in another side's sweep
    for result in (workdir / "results" / "outage").glob("*/result.json"):
        reports = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        trial = result.parent.name
        config = (result.parent / "params.json").read_text()
        middle[config] = median([report["time_this_iter_s"] for report in reports[1:-1]])
        training += sum(report["epoch_seconds"] for report in reports)
        killed = at_kill.get(trial, 0) if at_kill is not None else len(reports)  # epoch killed + 1 straddles the kill
        back = at_back.get(trial, 0) if at_back is not None else len(reports)  # epoch back + 1 straddles the return
        trial_up, trial_down = [], []
        for epoch, report in enumerate(reports[1:-1], start=2):
            if killed + 2 <= epoch <= back:
                trial_down.append(report["time_this_iter_s"])
            elif epoch <= killed or epoch >= back + 2:
                trial_up.append(report["time_this_iter_s"])
        up, down = up + trial_up, down + trial_down
        if len(trial_up) >= 3 and len(trial_down) >= 3:  # the same trial, tracking up and down
            ratios.append(median(trial_down) / median(trial_up))
        if len(trial_down) >= 3:
            down_by_config[config] = median(trial_down)
    times = {"up": up, "down": down, "ratios": ratios, "training": training}
    return {**times, "middle": middle, "by_config": down_by_config}


def versus_undisturbed(result: dict, undisturbed: dict) -> list[float]:
    """Per trial: its epochs while tracking was down over the same trial's (same config's) epochs in the
    undisturbed sweep; the within-trial ratio compares a trial's first epochs, when another trial may still
    be starting beside it, with its later ones."""
    return [down / undisturbed["middle"][c] for c, down in result["by_config"].items() if c in undisturbed["middle"]]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def warm_teacher(args: argparse.Namespace, cache: Path) -> None:
    """Train and cache the teacher once, before any timed run (every side finds it in the cache)."""
    with tempfile.TemporaryDirectory(prefix="kdsweep-outage-warm-") as workdir:
        command = sweep_command(args, Path(workdir), "--no-select", "--no-baselines")
        command += ["--set", "budget.epochs=1", "--set", "budget.num_samples=1"]
        done = subprocess.run(command, cwd=workdir, env=env(cache), capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the warm-up sweep failed (exit {done.returncode}):\n{done.stdout[-3000:]}")


def main() -> None:
    args = parse_args()
    print(machine())
    print(
        f"the default space (digits), {args.samples} samples + baselines x {args.epochs} epochs, scheduler none; "
        f"kill {args.kill_after:g} s after the first report; {args.rounds} round(s), sides alternating",
        flush=True,
    )
    cache = Path(args.teacher_cache or tempfile.mkdtemp(prefix="kdsweep-outage-cache-"))
    warm_teacher(args, cache)
    results: list[dict] = []
    for round_ in range(args.rounds):
        sides = args.sides if round_ % 2 == 0 else list(reversed(args.sides))
        for side in sides:
            workdir = Path(tempfile.mkdtemp(prefix=f"kdsweep-outage-{side}-"))
            result = run_side(args, side, workdir, cache)
            print(
                f"round {round_ + 1}: {SIDES[side]}: {result['wall']:.1f} s, exit {result['exit']}  ({workdir})",
                flush=True,
            )
            results.append(result)
            if not args.keep:
                subprocess.run(["rm", "-rf", str(workdir)])
    if not args.teacher_cache:
        subprocess.run(["rm", "-rf", str(cache)])
    baseline = median([r["wall"] for r in results if r["side"] == "undisturbed"])
    trained = median([r["training"] for r in results if r["side"] == "undisturbed"])
    print()
    print(
        "| side | wall s | / undisturbed | training s | / undisturbed | exit | trials FINISHED | rows not in MLflow "
        "| restarts | outage s | epoch s up (n) | epoch s down (n) | down / up, per trial (trials) "
        "| down / same trial undisturbed (trials) | server processes left |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    quiet = next((r for r in results if r["side"] == "undisturbed"), None)
    for r in results:
        up, down = median(r["up"]), median(r["down"])
        same = versus_undisturbed(r, quiet) if quiet else []
        print(
            f"| {SIDES[r['side']]} | {r['wall']:.1f} | {r['wall'] / baseline:.2f} | {r['training']:.0f} "
            f"| {r['training'] / trained:.2f} | {r['exit']} "
            f"| {r['finished']}/{r['trials']} | {r['not_in_mlflow']} | {r['restarts']} | {r['outage_s']:.1f} "
            f"| {up:.2f} ({len(r['up'])}) | {down:.2f} ({len(r['down'])}) "
            f"| {median(r['ratios']):.2f} ({len(r['ratios'])}) | {median(same):.2f} ({len(same)}) | {len(r['left'])} |"
        )


if __name__ == "__main__":
    main()
