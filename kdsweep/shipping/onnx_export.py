"""A PyTorch module -> an ONNX file, by torch.onnx's torch.export-based ("dynamo") exporter."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from kdsweep.errors import one_line
from kdsweep.shipping.errors import NotExportable

OPSET = 20  # what ONNX Runtime 1.17+ runs fully; the exporter's own default changes between releases
INPUT, OUTPUT = "input", "logits"
# The exporter names the node it could not translate as `target=torch.ops.aten.cummax.default`; its
# cause, a DispatchError, as `OpOverload(op='aten.cummax', ...)`. Messages carry ANSI colours.
OPERATOR_PATTERNS = (r"target=torch\.ops\.([\w.]+)", r"OpOverload\(op='([\w.]+)'")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Write `model` (in eval mode) to `path` with a dynamic batch axis named "batch".

    `example` is a batch of at least 2 real inputs: torch.export specialises sizes 0 and 1. Raises
    NotExportable, naming the operator where the exporter does, for any exporter error.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the exporter's notes on its own deprecations
        try:
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                opset_version=OPSET,
                verbose=False,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_shapes=({0: "batch"},),  # by position: forward()'s first argument
            )
        except torch.onnx.errors.OnnxExporterError as error:  # ConversionError, DispatchError, TorchExportError
            text = ANSI.sub("", "\n".join(str(e) for e in _chain(error)))
            raise NotExportable("ONNX", failing_operator(text), one_line(text)) from None
    program.save(str(path))  # weights inline: torch.onnx.export(..., f=path) writes a ".data" sidecar


def failing_operator(text: str) -> str | None:
    for pattern in OPERATOR_PATTERNS:
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    return None


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__
