"""The in-memory input path before and after uint8 splits normalised per batch (issue 20, items 5-6).

Before: every split held as float32 torch tensors, normalised once at load (a sweep's trials each
got their own copy out of Ray's object store). After: splits held as the source gives them (uint8
for CIFAR) in numpy, shared zero-copy, each batch normalised on its device. Both versions run here,
side by side: `--before` (a commit, default the one this change started from) is unpacked with
`git archive` into a temporary directory and run in subprocesses, as is this checkout.

1. Training speed: samples/s of a resnet8 KD epoch (alpha 0.9, teacher logits from the cache) on
   CIFAR-shaped data (3x32x32 uint8, crop pad 4 and flips, as cifar10/100), on the CPU, and of the
   input path alone (the epoch's batches, no model). Both versions' workers live at once and run
   one epoch at a time in turn, the order alternating between rounds, after a warm-up round; the
   fastest epoch of each is kept (a neighbour's load only ever adds time).
2. Memory: two Ray tasks at once, each running one trial (small_cnn, one epoch) on one dataset
   `ray.put` once; each reports its private memory (RssAnon: its own pages, not the object store's),
   its proportional share of all it maps (Pss) and its peak resident set (VmHWM, shared pages included).

    PYTHONPATH=. python benchmarks/input_path.py    # about 5 minutes on 2 CPU cores at load 10 (RESULTS.md)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "855b8f9"  # main when this change began: float32 normalised torch splits


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default=BEFORE, help="the commit to compare with")
    p.add_argument("--samples", type=int, default=2000, help="CIFAR-shaped images for the speed part")
    p.add_argument("--memory-samples", type=int, default=10000, help="CIFAR-shaped images for the memory part")
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds of one epoch per version")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--worker", choices=["speed", "memory"], help=argparse.SUPPRESS)
    return p.parse_args()


# ---------------------------------------------------------------- inside a version's subprocess


def cifar_shaped(samples: int):
    """Seeded uint8 3x32x32 images of 10 classes (a pattern per class plus noise), split as kdsweep splits:
    each version's own loader entry point, so that each holds them as it would hold CIFAR."""
    import numpy as np
    import torch

    from kdsweep import data as kd_data
    from kdsweep.data import AugmentSpec, DataSpec

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, samples)
    patterns = rng.integers(0, 256, (10, 3, 32, 32))
    pixels = np.clip(patterns[labels] * 0.5 + rng.integers(0, 128, (samples, 3, 32, 32)), 0, 255).astype(np.uint8)
    spec, augment, y = DataSpec(name="cifar10"), AugmentSpec(pad=4, flip=True), torch.as_tensor(labels)
    if hasattr(kd_data, "split_in_memory"):  # after: the pixels as they are
        return kd_data.split_in_memory("cifar-shaped", spec, pixels, y, None, None, 10, augment, pixel_max=255.0)
    floats = torch.from_numpy(pixels).float() / 255.0  # before: torchvision_data's float32 tensors
    return kd_data.split_and_normalise("cifar-shaped", spec, floats, y, None, None, 10, augment)


def speed(args: argparse.Namespace) -> None:
    """Set up, say `ready`, then answer each line of stdin with the seconds of one epoch: `train` (a KD
    epoch of `train_one_epoch`) or `input` (the same epoch's batches alone, no model)."""
    import torch

    from kdsweep.data import train_batches
    from kdsweep.losses import get_loss
    from kdsweep.models import create_model
    from kdsweep.teachers import build_teacher_cache
    from kdsweep.trial import TrialConfig, pick_device, place
    from kdsweep.trial.loop import _setup_process, build_optimizer, train_one_epoch

    data = cifar_shaped(args.samples)
    config = TrialConfig(student="resnet8", alpha=0.9, batch_size=64, num_threads=args.threads, measure_latency=False)
    device = pick_device()
    _setup_process(config, device)
    torch.manual_seed(0)
    teacher = create_model("resnet8", 10, 3, 32).eval()
    cache = build_teacher_cache(teacher, data, 2, device, memory_limit_mb=1024, log=lambda line: None)
    student = place(create_model("resnet8", 10, 3, 32), device)
    optimizer, _ = build_optimizer(config, student)
    print(json.dumps({"ready": len(data.train)}), flush=True)
    for epoch, line in enumerate(sys.stdin, start=1):
        started = time.perf_counter()
        if line.strip() == "train":
            train_one_epoch(student, data, config, epoch, 2, optimizer, get_loss("kd"), config.loss_params, cache)
        else:
            for _ in train_batches(data, config.batch_size, epoch, config.seed, device, 2):
                pass
        print(json.dumps({"seconds": time.perf_counter() - started}), flush=True)


def _memory_now() -> dict[str, int]:
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                fields["Pss"] = int(line.split()[1]) * 1024
    return fields


def memory(args: argparse.Namespace) -> dict:
    import ray

    data = cifar_shaped(args.memory_samples)
    images = sum(split.images.nbytes for split in (data.train, data.val, data.test))  # numpy or torch
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ref = ray.put(data)

        @ray.remote(num_cpus=1)
        def trial(refs) -> dict:
            import kdsweep.data  # noqa: F401  (imported before measuring)
            from kdsweep.trial import TrialConfig, run_trial

            before = _memory_now()
            shared = ray.get(refs[0])
            config = TrialConfig(
                student="small_cnn",
                width=4,
                alpha=0.0,
                epochs=1,
                batch_size=128,
                num_threads=1,
                measure_latency=False,
                stop_at_chance=False,
            )
            run_trial(config, shared)
            after = _memory_now()
            return {"before": before, "after": after}

        results = ray.get([trial.remote([ref]), trial.remote([ref])])
    finally:
        ray.shutdown()
    return {"images_bytes": images, "trials": results}


# ---------------------------------------------------------------- the driver


def unpack(commit: str, into: Path) -> Path:
    archive = subprocess.run(["git", "archive", commit, "kdsweep"], cwd=ROOT, capture_output=True, check=True).stdout
    with tempfile.TemporaryFile() as handle:
        handle.write(archive)
        handle.seek(0)
        with tarfile.open(fileobj=handle) as tar:
            tar.extractall(into, filter="data")
    return into


def _command(tree: Path, worker: str, args: argparse.Namespace) -> tuple[list[str], dict]:
    """A version's worker, in its own process, importing kdsweep from `tree` (and run from there, so that
    Ray's workers, which put the driver's directory first on their path, import the same)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", worker]
    command += ["--samples", str(args.samples), "--memory-samples", str(args.memory_samples)]
    command += ["--threads", str(args.threads)]
    return command, {**os.environ, "PYTHONPATH": str(tree)}


def run(tree: Path, worker: str, args: argparse.Namespace) -> dict:
    command, env = _command(tree, worker, args)
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{worker} in {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def interleaved(trees: dict[str, Path], args: argparse.Namespace) -> tuple[int, dict[tuple[str, str], list[float]]]:
    """Both versions' speed workers at once, one epoch at a time in turn (the order alternating between
    rounds), so that the machine's load hits them alike; round 0 is warm-up."""
    workers = {}
    for version, tree in trees.items():
        command, env = _command(tree, "speed", args)
        workers[version] = subprocess.Popen(
            command, cwd=tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
    ready = {json.loads(worker.stdout.readline())["ready"] for worker in workers.values()}
    assert len(ready) == 1, f"the versions split the data differently: {ready}"
    samples = ready.pop()
    seconds: dict[tuple[str, str], list[float]] = {(v, kind): [] for v in trees for kind in ("train", "input")}
    for round_ in range(args.rounds + 1):
        for version in list(trees) if round_ % 2 == 0 else list(trees)[::-1]:
            for kind in ("train", "input"):
                workers[version].stdin.write(kind + "\n")
                workers[version].stdin.flush()
                took = json.loads(workers[version].stdout.readline())["seconds"]
                if round_:
                    seconds[version, kind].append(took)
    for worker in workers.values():
        worker.stdin.close()
        worker.wait()
    return samples, seconds


def main() -> None:
    args = parse_args()
    if args.worker:
        if args.worker == "speed":
            speed(args)
        else:
            print(json.dumps(memory(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": unpack(args.before, Path(tmp)), "after": ROOT}
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        print(
            f"{os.cpu_count()} CPUs (load {os.getloadavg()[0]:.1f}); before {args.before}, "
            f"after {commit.stdout.strip()} + this checkout's changes; {args.threads} torch thread(s)"
        )
        samples, seconds = interleaved(trees, args)
        print()
        print(
            f"{samples} CIFAR-shaped training images (uint8 3x32x32, crop pad 4, flips), batch 64, CPU, samples/s, "
            f"fastest of {args.rounds} interleaved epochs after a warm-up:"
        )
        print()
        print("| | before | after | after / before |")
        print("|---|---|---|---|")
        for kind, name in (("train", "resnet8 KD epoch (cached teacher)"), ("input", "input path alone (batches)")):
            rate = {v: samples / min(seconds[v, kind]) for v in trees}
            print(f"| {name} | {rate['before']:.0f} | {rate['after']:.0f} | {rate['after'] / rate['before']:.3f} |")
        print()
        print(f"Two Ray trials at once on one dataset of {args.memory_samples} CIFAR-shaped images, per trial (MB):")
        print()
        print("| version | splits held | private (RssAnon) growth | Pss at end | peak RSS (VmHWM) |")
        print("|---|---|---|---|---|")
        for version in ("before", "after"):
            result = run(trees[version], "memory", args)
            for trial in result["trials"]:
                grown = trial["after"]["RssAnon"] - trial["before"]["RssAnon"]
                print(
                    f"| {version} | {result['images_bytes'] / 2**20:.0f} | {grown / 2**20:.0f} "
                    f"| {trial['after']['Pss'] / 2**20:.0f} | {trial['after']['VmHWM'] / 2**20:.0f} |"
                )


if __name__ == "__main__":
    main()
