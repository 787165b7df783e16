"""An ONNX model -> static int8, with ONNX Runtime's own quantizer, calibrated on training images.

Static QDQ with uint8 activations and per-channel int8 weights is the combination ONNX Runtime fuses
into QLinearConv on x86. Dynamic quantization, the other one-liner, quantizes only MatMul and
leaves every convolution in float: the wrong tool for conv nets.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from kdsweep.data import Dataset, eval_batches
from kdsweep.shipping.onnx_export import INPUT

CALIBRATION_BATCHES, CALIBRATION_BATCH_SIZE = 8, 32  # 256 images: enough for min/max ranges of a small net


def calibration_batches(data: Dataset) -> list[np.ndarray]:
    """The first CALIBRATION_BATCHES training batches, unaugmented (the splits are already shuffled)."""
    batches = []
    for batch in eval_batches(data, data.train, CALIBRATION_BATCH_SIZE, torch.device("cpu")):
        batches.append(np.ascontiguousarray(batch.images.numpy()))
        if len(batches) == CALIBRATION_BATCHES:
            break
    return batches


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: list[np.ndarray]) -> None:
    """Write the static-int8 (QDQ) version of `fp32_path` to `int8_path`."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT: batch}

    with tempfile.TemporaryDirectory() as directory, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onnx and ORT's notes on their own internals
        logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
        prepared = Path(directory) / "prepared.onnx"
        # ONNX shape inference and ORT graph fusions first, as ORT asks. Its symbolic shape inference is
        # skipped: meant for transformers, it fails on these exports in onnxruntime 1.20 and 1.22.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
