"""A PyTorch module -> a TorchScript file, by tracing (what every registered model supports)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from kdsweep.errors import one_line
from kdsweep.shipping.errors import NotExportable


def export_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Trace `model` (in eval mode) on `example` and save it; torch.jit.load reads it without kdsweep.

    A trace records the operations run on `example`; sizes read with `x.size()` stay symbolic, so the
    batch size is free (the check runs it on other batch sizes). Raises NotExportable when tracing fails.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated from torch 2.14, still supported
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the check compares outputs instead
        try:
            with torch.no_grad():
                traced = torch.jit.trace(model, (example,))
        except Exception as error:  # tracing fails with many kinds (RuntimeError, TracingCheckError, ...)
            raise NotExportable("TorchScript", None, one_line(error)) from None
    traced.save(str(path))
