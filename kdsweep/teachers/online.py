"""The teacher run forward on every training batch: exact, and as costly as it sounds."""

from __future__ import annotations

import torch
from torch import nn

from kdsweep.data import Batch, Dataset, Views
from kdsweep.trial import autocast, model_device, place, predict


class OnlineTeacher:
    """TeacherOutputs from a live module, moved to wherever the trial's batches are."""

    def __init__(self, module: nn.Module, view_epochs: int | None = None) -> None:
        self.module = module.eval()
        self.view_epochs = view_epochs  # fresh views every epoch unless told to repeat like a cache
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    def _on(self, device: torch.device) -> None:
        if model_device(self.module) != device:
            place(self.module, device)

    @torch.no_grad()
    def train_logits(self, batch: Batch, views: Views | None, epoch: int) -> torch.Tensor:
        self._on(batch.images.device)
        with autocast(batch.images.device):
            return self.module(batch.images).float()

    def eval_logits(self, data: Dataset, split: str, device: torch.device) -> torch.Tensor:
        self._on(device)
        return predict(self.module, data, split)[0]
