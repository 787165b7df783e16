"""An exported file, loaded to run on CPU threads: ONNX Runtime for ONNX, torch.jit for TorchScript.

One thread by default because an edge device gives a model one core, and because latencies measured
with more threads on a shared machine say more about the neighbours than about the model; a sweep's
deploy target may name more (deploy.threads).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from kdsweep.shipping.onnx_export import INPUT


class OnnxRunner:
    """An ONNX Runtime session: `threads` intra-op threads (the target's cores; one by default), one
    inter-op thread, nodes run in sequence, CPU."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {INPUT: images.numpy()})[0])

    def bind(self, images: torch.Tensor) -> Callable[[], object]:
        """A call on fixed inputs, converted once: what latency measures."""
        feed = {INPUT: np.ascontiguousarray(images.numpy())}
        return lambda: self.session.run(None, feed)


class TorchRunner:
    """A PyTorch module (eager, or a loaded TorchScript file), without gradients."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(images)

    def bind(self, images: torch.Tensor) -> Callable[[], object]:
        return lambda: self.module(images)  # latency runs it under inference_mode on its torch threads


def load_exported(format_name: str, path: Path) -> OnnxRunner | TorchRunner:
    if format_name == "onnx":
        return OnnxRunner(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated from torch 2.14
        return TorchRunner(torch.jit.load(str(path), map_location="cpu").eval())
