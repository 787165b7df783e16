"""Where a trial computes, as one rule: a model and the batches it sees are on the same device.

The device is chosen once per process (`pick_device`); a model is moved there by `place`, and
everything that feeds a model (`predict`, the teacher) sends its batches to `model_device(model)`,
never to a device of its own choosing.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def place(model: nn.Module, device: torch.device) -> nn.Module:
    """Move `model` to `device`, channels-last on CUDA (faster convolutions with bf16), in place."""
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    return model.to(device, memory_format=memory_format)


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's weights: where its inputs must go."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def autocast(device: torch.device):
    """bf16 autocast on CUDA (no loss scaling needed), nothing elsewhere (on a CPU fp32 is faster)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
