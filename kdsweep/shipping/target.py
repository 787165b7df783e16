"""A model's batch-1 latency on a deploy target: the runtime, its threads and precision of `deploy:`.

The same path a shipped student takes: exported to ONNX (and statically quantized for int8, calibrated
on training images) and run by ONNX Runtime, or run eagerly by PyTorch; then `batch1_latency_ms`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdsweep.config import Deploy
from kdsweep.shipping.latency import batch1_latency_ms
from kdsweep.shipping.onnx_export import export_onnx
from kdsweep.shipping.quantize import quantize_int8
from kdsweep.shipping.runtime import OnnxRunner, TorchRunner


def target_latency_ms(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    deploy: Deploy,
    calibration: list[np.ndarray] | None = None,
    seconds: float = 1.0,
) -> float:
    """`model` (any weights: latency does not depend on them) timed as `deploy` runs it; `calibration`:
    training batches, needed for int8 (kdsweep.shipping.quantize.calibration_batches)."""
    model = model.cpu().eval()
    image = torch.zeros(1, *input_shape)
    if deploy.runtime == "torch":
        return batch1_latency_ms(TorchRunner(model).bind(image), seconds, deploy.threads)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "model.onnx"
        export_onnx(model, torch.zeros(2, *input_shape), path)
        if deploy.precision == "int8":
            if not calibration:
                raise ValueError("int8 latency needs calibration batches")
            quantized = path.with_name("model.int8.onnx")
            quantize_int8(path, quantized, calibration)
            path = quantized
        runner = OnnxRunner(path, deploy.threads)
        return batch1_latency_ms(runner.bind(image), seconds, deploy.threads)
