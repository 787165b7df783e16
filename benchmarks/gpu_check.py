"""The one GPU check: the cluster's shape (a CPU-only head, a GPU worker) on one GPU machine, in one table.

    python benchmarks/gpu_check.py                # one CUDA GPU: sized for <= 8 minutes on an H100
    python benchmarks/gpu_check.py --cpu-dry-run  # no CUDA: the worker declares a fake GPU (CI)

It starts its own two Ray nodes on this machine, as a cluster has them: a head with no GPU
(`ray start --head --num-gpus 0`) and a worker with the GPU (`ray start --address HEAD --num-gpus 1`),
each with its own ports and temp dir (neither the head nor the sweep's driver sees the GPU, as on a
cluster), and runs the user's command against them, `python -m kdsweep.search --address HEAD ...`
(the default ./mlflow.db, served to the worker). Never run on a GPU yet: the sizing is an estimate.

    cached   the teacher's logit cache, --gpus-per-trial 0.25, 4 trials
    online   the same with teacher.mode online
    folder   a streamed ImageFolder of PNGs (the teacher runs online: streamed views cannot be cached)
    resume   the `cached` command again, Ctrl-C (SIGINT) after the first report, then --resume

For each: the outcome, trials running at once per GPU (from Tune's result timestamps), training
samples/s per trial against the same student alone on the GPU (run_trial in a Ray task on the worker
asking for the whole GPU), mean GPU utilisation and peak GPU memory while trials ran (nvidia-smi; n/a
without it), the teacher cache's build time (the sweep's log) and the wall time. It stops exactly the
processes it started (their process groups), also on failure or Ctrl-C, and exits 1 with the failing
logs' tails when a scenario failed, 2 when there is no CUDA GPU and no --cpu-dry-run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the test suite's multi-process Ray clusters
from clusters import LocalCluster, ray_env, wait_for  # noqa: E402

TRIALS = 4  # at 0.25 GPU each: one GPU's worth
# The head and the sweep's driver see no GPU, as on a cluster, whose head has none: only the worker has it.
NO_GPU = {"CUDA_VISIBLE_DEVICES": ""}
SCENARIOS = ("cached", "online", "folder", "resume")
EXIT_INTERRUPTED = 130  # kdsweep.sweep.run.EXIT_INTERRUPTED, without importing Ray into this process early


@dataclass(frozen=True)
class Size:
    """How big each scenario is: a GPU run must measure throughput, a dry run only exercise every step."""

    samples: int  # synthetic 3 x image_size^2 images (72 % train after the test and validation splits)
    image_size: int
    epochs: int
    batch_size: int
    teacher: str
    teacher_epochs: int
    folder_images: int  # PNGs per class folder of the streamed ImageFolder (train; a quarter as many in test)
    worker_cpus: float
    cpus_per_trial: float
    loader_workers: int  # data.num_workers of the streamed folder (<= cpus_per_trial)


GPU = Size(
    samples=60_000,  # 43,200 training images: CIFAR-10's size and shape
    image_size=32,
    epochs=2,
    batch_size=128,
    teacher="resnet18",
    teacher_epochs=1,
    folder_images=500,
    worker_cpus=max(4.0, (os.cpu_count() or 4) - 2.0),
    cpus_per_trial=max(1.0, ((os.cpu_count() or 4) - 2.0) // TRIALS),
    loader_workers=2,
)
DRY_RUN = Size(
    samples=400,
    image_size=16,
    epochs=2,
    batch_size=64,
    teacher="small_cnn",
    teacher_epochs=1,
    folder_images=12,
    worker_cpus=1,
    cpus_per_trial=0.25,  # 4 trials on one CPU of a 2-core machine: the fake GPU, not the CPUs, limits them
    loader_workers=0,
)


def space(size: Size, mode: str, data: dict | None = None) -> dict:
    """One resnet8 student, 4 trials of KD, nothing but the trials (no confirmation, no early stopping)."""
    return {
        "data": data
        or {"name": "synthetic", "channels": 3, "image_size": size.image_size, "num_classes": 10,
            "num_samples": size.samples},
        "teacher": {"arch": size.teacher, "epochs": size.teacher_epochs, "batch_size": 256, "mode": mode},
        "budget": {"epochs": size.epochs, "num_samples": TRIALS},
        "confirm": {"top": 0},
        "scheduler": {"name": "none"},
        "searcher": {"name": "random", "seed": 0},
        "resources": {"cpus_per_trial": size.cpus_per_trial, "gpus_per_trial": 0.25, "max_failures": 0},
        "fixed": {"student": "resnet8", "batch_size": size.batch_size, "lr": 0.05, "measure_latency": False},
        "search": {"temperature": {"uniform": [2.0, 6.0]}, "alpha": {"uniform": [0.5, 1.0]}},
    }  # fmt: skip


@dataclass
class Result:
    """One row of the table; `problem` empty when the scenario did what it should."""

    scenario: str
    problem: str = ""
    at_once_per_gpu: int | None = None
    per_trial: float | None = None  # training samples/s, median over the trials
    solo: float | None = None  # the same student alone on the GPU
    gpu_util: float | None = None  # %, mean while trials ran
    peak_mib: float | None = None
    cache_build_s: float | None = None
    wall_s: float = 0.0
    logs: list[Path] = field(default_factory=list)


def max_concurrent(spans: list[tuple[float, float]]) -> int:
    """Most spans open at one moment; one ending as another starts does not overlap it."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def cache_build_seconds(log: str) -> float | None:
    """What the teacher stage printed (kdsweep.teachers.cache): 'teacher cache: built in 2.3 s'."""
    found = re.findall(r"teacher cache: built in ([0-9.]+) s", log)
    return float(found[-1]) if found else None


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def table(results: list[Result]) -> str:
    """The check's one table, in markdown."""
    lines = [
        "| scenario | outcome | trials at once per GPU | samples/s per trial (vs alone on the GPU) | "
        "GPU utilisation | peak GPU memory | cache build | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = f" ({r.per_trial / r.solo:.0%})" if r.per_trial and r.solo else ""
        throughput = f"{_number(r.per_trial, ',.0f')} vs {_number(r.solo, ',.0f')}{ratio}"
        lines.append(
            f"| {r.scenario} | {'ok' if not r.problem else 'FAILED: ' + r.problem} | {_number(r.at_once_per_gpu, 'd')} "
            f"| {throughput} | {_number(r.gpu_util, '.0f')} % | {_number(r.peak_mib, ',.0f')} MiB "
            f"| {_number(r.cache_build_s, '.1f')} s | {r.wall_s:.0f} s |"
        )
    return "\n".join(lines)


def exit_code(results: list[Result], expected: tuple[str, ...] = SCENARIOS) -> int:
    """0 only when every scenario ran and did what it should."""
    ran = [r.scenario for r in results]
    return 0 if ran == list(expected) and not any(r.problem for r in results) else 1


class GpuMonitor(threading.Thread):
    """Polls nvidia-smi (every GPU, every process): (time, utilisation %, memory used MiB) samples."""

    def __init__(self, every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.every_s, self.samples, self.stopped = every_s, [], threading.Event()

    def run(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
        while not self.stopped.wait(self.every_s):
            try:
                out = subprocess.run(query, capture_output=True, text=True, timeout=10).stdout
                rows = [[float(v) for v in line.split(",")] for line in out.splitlines() if line.strip()]
            except (OSError, ValueError, subprocess.TimeoutExpired):
                return
            self.samples.append((time.time(), sum(r[0] for r in rows) / len(rows), sum(r[1] for r in rows)))

    def between(self, start: float, end: float) -> tuple[float | None, float | None]:
        """Mean utilisation and peak memory of the samples in [start, end]; None without samples."""
        inside = [(util, mib) for t, util, mib in list(self.samples) if start <= t <= end]
        if not inside:
            return None, None
        return sum(u for u, _ in inside) / len(inside), max(m for _, m in inside)


class Search:
    """`python -m kdsweep.search --address HEAD ...` in `directory`, in its own process group, logged."""

    started: ClassVar[list[Search]] = []  # every one this check started: killed if still running when it ends

    def __init__(self, address: str, directory: Path, name: str, log_name: str, *extra: str) -> None:
        self.directory, self.name, self.log = directory, name, directory / f"{log_name}.log"
        command = [sys.executable, "-m", "kdsweep.search", "--space", "space.yaml", "--name", name]
        command += ["--address", address, "--storage", str(directory / "results"), "--output-json", f"{name}.json"]
        command += ["--no-select", "--no-baselines", *extra]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                command,
                cwd=directory,
                env={**ray_env(), **NO_GPU},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        Search.started.append(self)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"the sweep did not end in {timeout:.0f} s") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def rows(self) -> list[dict]:
        path = self.directory / f"{self.name}.json"
        return json.loads(path.read_text()) if path.exists() else []

    def reports(self) -> dict[str, list[dict]]:
        """Each trial's result.json lines (one per reported epoch), by trial directory."""
        found = {}
        for path in (self.directory / "results" / self.name).glob("*/result.json"):
            found[path.parent.name] = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
        return found


def check_finished(search: Search, code: int, expected_code: int = 0) -> list[dict]:
    rows = search.rows()
    if code != expected_code:
        raise RuntimeError(f"exit {code}, expected {expected_code}")
    finished = sum(row["status"] == "FINISHED" for row in rows)
    if len(rows) != TRIALS or finished != TRIALS:
        raise RuntimeError(f"{finished} of {len(rows)} trials finished, {TRIALS} expected")
    return rows


def measure(result: Result, search: Search, monitor: GpuMonitor | None, train_samples: int) -> None:
    """Trials at once, samples/s per trial, GPU figures while they ran, cache build: from what the sweep left."""
    reports = [r for r in search.reports().values() if r]
    spans = [(r[0]["timestamp"] - r[0]["time_total_s"], r[-1]["timestamp"]) for r in reports]
    result.at_once_per_gpu = max_concurrent(spans)  # one GPU
    rates = sorted(train_samples / min(report["epoch_seconds"] for report in r) for r in reports)
    result.per_trial = rates[len(rates) // 2]
    if monitor is not None and spans:
        result.gpu_util, result.peak_mib = monitor.between(min(s for s, _ in spans), max(e for _, e in spans) + 1)
    result.cache_build_s = cache_build_seconds(search.log.read_text())


def solo_rate(address: str, sweep_space: dict, cpus: float) -> float:
    """Training samples/s of the scenario's student and teacher mode alone on the worker's whole GPU
    (a Ray task asking for it), the fastest of its epochs: what a trial sharing the GPU is compared with."""
    import ray

    @ray.remote(num_gpus=1)
    def alone(spec: dict, teacher_spec: dict, fixed: dict, epochs: int) -> float:
        from kdsweep.data import DataSpec, load_dataset
        from kdsweep.models import create_model
        from kdsweep.teachers import OnlineTeacher, build_teacher_cache
        from kdsweep.trial import TrialConfig, pick_device, run_trial

        data = load_dataset(DataSpec(**spec))
        module = create_model(teacher_spec["arch"], data.num_classes, data.in_channels, data.image_size).eval()
        cache = None
        if teacher_spec["mode"] == "cached":  # random weights: a forward pass takes as long as a trained one's
            cache = build_teacher_cache(module, data, epochs, pick_device(), 1024, log=lambda _: None)
        source = cache if cache is not None else OnlineTeacher(module)
        threads = max(1, int(cpus))  # as a trial of the sweep gets (kdsweep.sweep.trainable)
        config = TrialConfig(**fixed, epochs=epochs, alpha=0.9, num_threads=threads)
        result = run_trial(config, data, logit_source=source)
        return len(data.train) / min(h["epoch_seconds"] for h in result.history)

    task = alone.options(num_cpus=cpus).remote(
        sweep_space["data"], sweep_space["teacher"], sweep_space["fixed"], sweep_space["budget"]["epochs"]
    )
    return ray.get(task, timeout=600)


def train_samples(data: dict) -> int:
    from kdsweep.data import DataSpec, load_dataset

    return len(load_dataset(DataSpec(**data)).train)


def make_folder(root: Path, per_class: int, image_size: int, classes: int = 4) -> Path:
    """An ImageFolder of random RGB PNGs: train/ and test/ (a quarter as many) of `classes` class folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", max(2, per_class // 4))):
        for label in range(classes):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
                Image.fromarray(pixels, mode="RGB").save(folder / f"{i}.png")
    return root


def run_scenario(
    name: str, size: Size, cluster: LocalCluster, root: Path, monitor: GpuMonitor | None, timeout: float
) -> Result:
    result, started = Result(name), time.perf_counter()
    directory = root / name
    directory.mkdir()
    sweep_space = space(size, "online" if name == "online" else "cached")
    if name == "folder":
        folder = make_folder(root / "images", size.folder_images, size.image_size)
        data = {"name": str(folder), "image_size": size.image_size, "memory_limit_mb": 0}
        sweep_space = space(size, "cached", {**data, "num_workers": size.loader_workers, "val_fraction": 0.25})
    (directory / "space.yaml").write_text(yaml.safe_dump(sweep_space))
    try:
        if name == "resume":
            interrupt_and_resume(cluster.address, directory, result, timeout)
        else:
            search = Search(cluster.address, directory, name, name)
            result.logs.append(search.log)
            check_finished(search, search.wait(timeout))
            measure(result, search, monitor, train_samples(sweep_space["data"]))
            result.solo = solo_rate(cluster.address, sweep_space, size.cpus_per_trial)
    except Exception as error:  # any failure is this scenario's row, and the others still run
        result.problem = " ".join(str(error).split())[:200] or type(error).__name__
    result.wall_s = time.perf_counter() - started
    return result


def interrupt_and_resume(address: str, directory: Path, result: Result, timeout: float) -> None:
    """The `cached` command, Ctrl-C once a trial has reported an epoch (exit 130, the resume command
    printed), then --resume: every trial finished, each epoch reported once."""
    search = Search(address, directory, "resume", "interrupted")
    result.logs.append(search.log)
    try:
        wait_for(
            lambda: search.process.poll() is not None or any(search.reports().values()), timeout, "a trial's report"
        )
        search.process.send_signal(signal.SIGINT)  # what Ctrl-C in its terminal sends it
        code = search.wait(timeout)
    finally:
        search.kill()
    if code != EXIT_INTERRUPTED or "--resume" not in search.log.read_text():
        raise RuntimeError(f"Ctrl-C: exit {code}, expected {EXIT_INTERRUPTED} and the resume command printed")
    resumed = Search(address, directory, "resume", "resumed", "--resume")
    result.logs.append(resumed.log)
    check_finished(resumed, resumed.wait(timeout))
    epochs = {trial: [r["epoch"] for r in reports] for trial, reports in resumed.reports().items()}
    budget = list(range(1, yaml.safe_load((directory / "space.yaml").read_text())["budget"]["epochs"] + 1))
    if len(epochs) != TRIALS or any(seen != budget for seen in epochs.values()):
        raise RuntimeError(f"epochs reported per trial after --resume: {epochs}")
    result.at_once_per_gpu = max_concurrent(
        [(r[0]["timestamp"] - r[0]["time_total_s"], r[-1]["timestamp"]) for r in resumed.reports().values()]
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-dry-run", action="store_true", help="no CUDA: a declared GPU, a tiny workload (CI)")
    p.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), help="run only these scenarios")
    args = p.parse_args()
    if args.cpu_dry_run:
        # Every node, sweep and trial started from here: no CUDA device (-1, not "": Ray refuses a node declaring
        # a GPU with none visible), which Ray leaves as it is in the tasks and trials given the declared GPU.
        os.environ.update(CUDA_VISIBLE_DEVICES="-1", RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES="1")
    import torch

    gpus = torch.cuda.device_count()
    if not gpus and not args.cpu_dry_run:
        print("error: no CUDA device (torch.cuda.device_count() == 0); --cpu-dry-run checks the steps", file=sys.stderr)
        return 2
    size = DRY_RUN if args.cpu_dry_run else GPU
    device = "a declared GPU (CPU dry run)" if args.cpu_dry_run else torch.cuda.get_device_name(0)
    print(f"device: {device}, torch {torch.__version__}, {os.cpu_count()} CPUs", flush=True)

    results: list[Result] = []
    monitor = None if args.cpu_dry_run else GpuMonitor()
    with tempfile.TemporaryDirectory(prefix="kdgpu") as tmp:
        root = Path(tmp)
        # The sweeps' teacher and dataset caches: this run's own (the teacher is trained once, in `cached`).
        os.environ.update(KDSWEEP_CACHE=str(root / "teacher-cache"), KDSWEEP_DATA=str(root / "data-cache"))
        os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = "0"  # the experiment state saved at every step: what --resume reads
        # The cluster's shape: a CPU-only head, a worker with the (real or declared) GPU, each in its own group.
        cluster = LocalCluster(["--num-cpus=1", "--num-gpus=0"], [f"--num-cpus={size.worker_cpus:g}", "--num-gpus=1"])
        import ray

        try:
            cluster.start(head_env={**ray_env(), **NO_GPU})
            os.environ.update(ray_env())
            ray.init(address=cluster.address, log_to_driver=False)  # for the solo tasks
            if monitor is not None:
                monitor.start()
            for name in args.only:
                print(f"{name} ...", flush=True)
                results.append(run_scenario(name, size, cluster, root, monitor, timeout=480))
                print(f"{name}: {results[-1].problem or 'ok'} ({results[-1].wall_s:.0f} s)", flush=True)
        finally:  # also on a failure or Ctrl-C: the sweeps, then the nodes, each by its own process group
            if monitor is not None:
                monitor.stopped.set()
            for search in Search.started:
                search.kill()
            # Before the nodes go: else Ray's excepthook, on Ctrl-C, would wait for their GCS forever.
            ray.shutdown()
            cluster.stop()
        for failed in (r for r in results if r.problem):
            for log in failed.logs:
                if log.exists():
                    print(f"--- {failed.scenario}: {log.name} (tail)\n{log.read_text()[-4000:]}", file=sys.stderr)
    print(table(results))
    return exit_code(results, tuple(args.only))


if __name__ == "__main__":
    raise SystemExit(main())
