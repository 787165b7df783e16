"""Teachers that are files of another runtime, as modules: TorchScript (torch.jit) and ONNX (ONNX Runtime).

Both travel as the file's bytes: Ray pickles the teacher to the node that caches its logits, and
copies it to place it on a device, neither of which a ScriptModule or an InferenceSession allows.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn


def read_torchscript(payload: bytes) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated from torch 2.14, still supported
        return torch.jit.load(io.BytesIO(payload), map_location="cpu").eval()


class TorchScriptTeacher(nn.Module):
    """A TorchScript file's module: a PyTorch teacher (it runs online, on any device) kept as its bytes."""

    def __init__(self, payload: bytes) -> None:
        super().__init__()
        self.payload = payload
        self.scripted = read_torchscript(payload)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.scripted(images)

    def __getstate__(self) -> dict:
        return {"payload": self.payload}  # read back on the CPU, wherever it ran: a teacher's weights never change

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["payload"])


class OnnxTeacher(nn.Module):
    """An ONNX file run by ONNX Runtime on the CPU, for the logit cache only: its outputs are computed
    once per sweep, so any framework's model can teach; it has no gradients and no GPU kernels here."""

    def __init__(self, payload: bytes) -> None:
        import onnxruntime as ort

        super().__init__()
        self.payload = payload
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the threads this process gives torch
        self.session = ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: np.ascontiguousarray(images.detach().float().cpu().numpy())}
        return torch.from_numpy(self.session.run(None, feed)[0]).to(images.device)

    def __getstate__(self) -> dict:
        return {"payload": self.payload}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["payload"])
