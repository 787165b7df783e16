"""The teacher run forward on every training batch: exact, and as costly as it sounds."""

from __future__ import annotations

import copy

import torch
from torch import nn

from kdsweep.data import Batch, Dataset, Views
from kdsweep.trial import autocast, model_device, place, predict


class OnlineTeacher:
    """TeacherOutputs from a live module, run wherever the trial's batches are.

    The module as given is never moved: on another device the teacher runs a copy placed there (as the
    logit cache does), and only the module as given is pickled. So the sweep's Teacher, which the teacher
    task returns to a head that may have no GPU, and this object in Ray's object store hold CPU tensors
    whatever device the task computed on (`ray.get` of a CUDA tensor fails on a CPU-only node).
    """

    def __init__(self, module: nn.Module, view_epochs: int | None = None) -> None:
        self.module = module.eval()  # what runs: the module as given until batches arrive on another device
        self.given = self.module
        self.view_epochs = view_epochs  # fresh views every epoch unless told to repeat like a cache
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    def _on(self, device: torch.device) -> None:
        if model_device(self.module) != device:
            same = model_device(self.given) == device
            self.module = self.given if same else place(copy.deepcopy(self.given), device)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "module": self.given}

    @torch.no_grad()
    def train_logits(self, batch: Batch, views: Views | None, epoch: int) -> torch.Tensor:
        self._on(batch.images.device)
        with autocast(batch.images.device):
            return self.module(batch.images).float()

    def eval_logits(self, data: Dataset, split: str, device: torch.device) -> torch.Tensor:
        self._on(device)
        return predict(self.module, data, split)[0]
