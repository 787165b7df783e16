"""Training samples per second of kdsweep's trial loop against a plain hand-written PyTorch loop.

Both sides train the same student on the same in-memory tensors, in this one process, with the
same optimiser (SGD, Nesterov momentum 0.9, weight decay 5e-4, lr 0.05), batch size, thread count
and cross-entropy. The trial trains on a random crop of each image (digits: pad 1, no flip); the
plain loop does the same crop by hand (column "plain") and, to show what the crop costs, without it
("plain, no crop"). kdsweep's side is its own `train_one_epoch` (what `run_trial` calls every
epoch), in two modes: alpha=0 (plain CE, no teacher) and KD (alpha 0.9) with the teacher's logits
read from the teacher-logit cache. A second table compares whole epochs: `run_trial`'s own
`epoch_seconds` (training plus validation metrics) against the plain loop plus a plain
validation pass.

The modes are interleaved, one epoch each per round, in an order that alternates between rounds,
so that a neighbour's load on a shared machine hits them alike; the first epoch is warm-up, and of
the rest the fastest is kept, since a neighbour's load only ever adds time.

    python benchmarks/throughput.py                        # resnet8 and small_cnn on digits, ~1 min on 2 CPU cores
    python benchmarks/throughput.py --students resnet8 --rounds 9 --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from kdsweep.data import Dataset, DataSpec, load_dataset, split_images
from kdsweep.losses import get_loss
from kdsweep.models import create_model
from kdsweep.teachers import TeacherLogitCache, build_teacher_cache
from kdsweep.trial import TrialConfig, pick_device, run_trial
from kdsweep.trial.device import place
from kdsweep.trial.loop import _setup_process, build_optimizer, train_one_epoch


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--students", nargs="+", default=["resnet8", "small_cnn"], help="the default space's students")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--rounds", type=int, default=7, help="rounds of the modes, interleaved, one epoch each")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch threads (a sweep trial gets cpus_per_trial = 1)")
    p.add_argument("--teacher", default="resnet18", help="random-weight teacher whose logits the cache holds")
    return p.parse_args()


def machine() -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    )
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "kdsweep"], capture_output=True, text=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or platform.machine()
    return (
        f"{len(os.sched_getaffinity(0))} CPUs, {device}, torch {torch.__version__}, "
        f"commit {commit.stdout.strip() or 'unknown'}{' + uncommitted kdsweep/ changes' if dirty.stdout else ''}"
    )


def random_crop(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """The usual vectorised random crop of the original size from the zero-padded batch."""
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


class Plain:
    """A hand-written loop: shuffle, slice, (crop), forward, CE, backward, step; no bookkeeping."""

    def __init__(self, config: TrialConfig, data: Dataset, crop: bool):
        self.model = create_model(config.student, data.num_classes, data.in_channels, data.image_size, config.width)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=True,
        )
        self.data, self.batch_size, self.crop = data, config.batch_size, crop
        self.generator = torch.Generator().manual_seed(0)
        # Normalised once, up front, as float tensors: the plain loop's usual in-memory dataset.
        self.train_images, self.val_images = split_images(data, data.train), split_images(data, data.val)

    def epoch(self, epoch: int) -> None:
        images, labels, pad = self.train_images, self.data.train.labels, self.data.augment.pad
        self.model.train()
        order = torch.randperm(len(labels), generator=self.generator)
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            x = images[index]
            if self.crop and pad:
                x = random_crop(x, pad, self.generator)
            loss = F.cross_entropy(self.model(x), labels[index])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()

    @torch.no_grad()
    def validate(self) -> float:
        self.model.eval()
        logits = torch.cat([self.model(x) for x in self.val_images.split(512)])
        return float((logits.argmax(1) == self.data.val.labels).float().mean())


class Kdsweep:
    """kdsweep's own epoch: its model, optimiser and `train_one_epoch`, as `run_trial` sets them up."""

    def __init__(self, config: TrialConfig, data: Dataset, cache: TeacherLogitCache):
        self.config, self.data, self.cache = config, data, cache
        self.teacher = cache if config.needs_teacher else None
        device = pick_device()
        self.model = place(
            create_model(config.student, data.num_classes, data.in_channels, data.image_size, config.width), device
        )
        self.optimizer, _ = build_optimizer(config, self.model)
        self.loss_fn = get_loss(config.loss)

    def epoch(self, epoch: int) -> None:
        train_one_epoch(
            self.model,
            self.data,
            self.config,
            epoch,
            self.cache.view_epochs,
            self.optimizer,
            self.loss_fn,
            self.config.loss_params,
            self.teacher,
        ).means()  # read back, as run_trial does: the epoch's work is done when it returns


def timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def measure(student: str, args: argparse.Namespace, data: Dataset, cache: TeacherLogitCache) -> dict[str, float]:
    base = dict(student=student, batch_size=args.batch_size, num_threads=args.threads, measure_latency=False, epochs=2)
    ce, kd = TrialConfig(**base, alpha=0.0), TrialConfig(**base, alpha=0.9)
    _setup_process(ce, pick_device())  # what run_trial does first: threads, seed, deterministic algorithms on CPU
    torch.manual_seed(0)
    modes = {
        "kdsweep CE": Kdsweep(ce, data, cache).epoch,
        "kdsweep KD cached": Kdsweep(kd, data, cache).epoch,
        "plain": Plain(ce, data, crop=True).epoch,
        "plain, no crop": Plain(ce, data, crop=False).epoch,
    }
    plain_whole = Plain(ce, data, crop=True)

    def plain_epoch_and_val(epoch: int) -> None:
        plain_whole.epoch(epoch)
        plain_whole.validate()

    def trial_epochs(epoch: int) -> list[float]:  # run_trial's own epoch_seconds, warm-up epoch left out
        result = run_trial(ce, data, logit_source=cache)
        return [h["epoch_seconds"] for h in result.history[1:]]

    times: dict[str, list[float]] = {mode: [] for mode in [*modes, "run_trial epoch", "plain epoch + val"]}
    for round_ in range(args.rounds + 1):
        order = list(modes) if round_ % 2 == 0 else list(modes)[::-1]
        epoch = round_ % cache.view_epochs + 1
        for mode in order:
            seconds = timed(modes[mode], epoch)
            if round_:  # round 0 is warm-up
                times[mode].append(seconds)
        whole = [("run_trial epoch", trial_epochs), ("plain epoch + val", plain_epoch_and_val)]
        for mode, fn in whole if round_ % 2 == 0 else whole[::-1]:
            seconds_list = fn(epoch) if mode == "run_trial epoch" else [timed(fn, epoch)]
            if round_:
                times[mode] += seconds_list
    n = len(data.train)
    return {mode: n / min(seconds) for mode, seconds in times.items()}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(DataSpec(name=args.dataset))
    print(f"{machine()}; device {pick_device()}; {args.threads} torch thread(s)")
    torch.manual_seed(0)
    teacher = create_model(args.teacher, data.num_classes, data.in_channels, data.image_size).eval()
    cache = build_teacher_cache(teacher, data, 2, pick_device(), memory_limit_mb=1024, log=lambda line: None)
    assert isinstance(cache, TeacherLogitCache)
    print(
        f"{args.dataset}: {len(data.train)} train images {tuple(data.input_shape)}, crop pad {data.augment.pad}, "
        f"flip {data.augment.flip}; batch {args.batch_size}; {args.rounds} interleaved rounds after 1 warm-up, "
        f"fastest epoch kept; KD: alpha 0.9, T 4, random-weight {args.teacher} teacher's logits from the cache"
    )
    rows = []
    for student in args.students:
        print(f"student {student} ...", flush=True)
        rows.append((student, measure(student, args, data, cache)))
    print()
    print("Training loop only (samples/s):")
    print()
    print(
        "| student | kdsweep CE | kdsweep KD (cached) | plain (same crop) | plain, no crop "
        "| CE / plain | KD / plain | CE / plain no crop |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for student, t in rows:
        print(
            f"| {student} | {t['kdsweep CE']:.0f} | {t['kdsweep KD cached']:.0f} | {t['plain']:.0f} "
            f"| {t['plain, no crop']:.0f} | {t['kdsweep CE'] / t['plain']:.3f} "
            f"| {t['kdsweep KD cached'] / t['plain']:.3f} | {t['kdsweep CE'] / t['plain, no crop']:.3f} |"
        )
    print()
    print("Whole epoch, training + validation (training samples/s):")
    print()
    print("| student | run_trial epoch (CE) | plain epoch + plain val | ratio |")
    print("|---|---|---|---|")
    for student, t in rows:
        print(
            f"| {student} | {t['run_trial epoch']:.0f} | {t['plain epoch + val']:.0f} "
            f"| {t['run_trial epoch'] / t['plain epoch + val']:.3f} |"
        )


if __name__ == "__main__":
    main()
