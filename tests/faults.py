"""Faults injected from the tests, never through production knobs: a student that crashes where a test
says, and one whose epochs last as long as a test says (a window for a signal or an outage that does
not depend on how fast the machine trains).

A sweep loads this module through its space's `plugins: [faults]` (importable in Ray's workers,
which get the driver's sys.path, where pytest put tests/). What to break is read from the file
named by $KDSWEEP_TEST_FAULTS, which conftest sets before Ray starts so that every worker sees it;
how often it has broken is counted next to it, across processes.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

import torch
from torch import nn

from kdsweep.models import register_model
from kdsweep.models.small_cnn import small_cnn
from kdsweep.seeds import epoch_seed

MODEL = "crashing_cnn"
PACED = "paced_cnn"


def faults_file() -> Path:
    return Path(os.environ["KDSWEEP_TEST_FAULTS"])


def inject(at_epoch: int, times: int | None = None, seed: int = 0) -> None:
    """The next trials of `crashing_cnn` (trial seed `seed`) crash when training epoch `at_epoch`,
    `times` times in all (None: every time)."""
    faults_file().write_text(json.dumps({"at_epoch": at_epoch, "times": times, "seed": seed, "crashed": 0}))


def pace(seconds: float) -> None:
    """Every training epoch of `paced_cnn` lasts at least `seconds`."""
    faults_file().write_text(json.dumps({"pace_s": seconds}))


def crashes() -> int:
    return json.loads(faults_file().read_text())["crashed"]


def _should_crash(epoch: int) -> bool:
    with open(faults_file(), "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # trials of one sweep run in parallel processes
        fault = json.load(handle)
        if epoch != fault.get("at_epoch") or (fault["times"] is not None and fault["crashed"] >= fault["times"]):
            return False
        fault["crashed"] += 1
        handle.seek(0)
        handle.truncate()
        json.dump(fault, handle)
        return True


class EachEpoch(nn.Module):
    """A small CNN that calls `at_epoch_start` at the first training forward of each epoch (noticed from
    the trial's epoch seed: run_trial seeds torch with epoch_seed(trial seed, epoch) each epoch)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.checked_seed: int | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        seed = torch.initial_seed()
        if self.training and seed != self.checked_seed:
            self.checked_seed = seed
            self.at_epoch_start(seed, json.loads(faults_file().read_text()))
        return self.inner(images)

    def at_epoch_start(self, seed: int, fault: dict) -> None:
        raise NotImplementedError


class Crashing(EachEpoch):
    def at_epoch_start(self, seed: int, fault: dict) -> None:
        epoch = seed - epoch_seed(fault.get("seed", 0), 0)
        if fault and _should_crash(epoch):
            raise RuntimeError(f"injected failure at epoch {epoch}")


class Paced(EachEpoch):
    def at_epoch_start(self, seed: int, fault: dict) -> None:
        time.sleep(fault.get("pace_s", 0.0))


@register_model(MODEL, "student")
def crashing_cnn(num_classes: int, in_channels: int, image_size: int, width: int = 4) -> nn.Module:
    return Crashing(small_cnn(num_classes, in_channels, image_size, width=width))


@register_model(PACED, "student")
def paced_cnn(num_classes: int, in_channels: int, image_size: int, width: int = 4) -> nn.Module:
    return Paced(small_cnn(num_classes, in_channels, image_size, width=width))
