"""What a trial needs from a teacher: its logits for a training batch and for an evaluation split.

Two kinds satisfy it (kdsweep.teachers): the teacher run online on every batch, and the logit cache
computed once per sweep. Each carries its own view schedule, so a trial never has to be told
separately how its augmented views must repeat.
"""

from __future__ import annotations

from typing import Protocol

import torch

from kdsweep.data import Batch, Dataset, Views


class TeacherOutputs(Protocol):
    @property
    def view_epochs(self) -> int | None:
        """The trial's augmented views repeat every `view_epochs` epochs (None: fresh views every epoch)."""

    def train_logits(self, batch: Batch, views: Views | None, epoch: int) -> torch.Tensor:
        """Logits of the very images of `batch` (on their device)."""

    def eval_logits(self, data: Dataset, split: str, device: torch.device) -> torch.Tensor:
        """Logits of a whole evaluation split, in order, on `device`."""
