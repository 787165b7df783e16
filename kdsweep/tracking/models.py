"""Students and teachers as MLflow PyTorch models: logged with a signature, loaded back as modules."""

from __future__ import annotations

import copy
from importlib.metadata import version

import mlflow
import numpy as np
import torch
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from kdsweep.data import eval_batches

# A sweep's int8 stage adds a top student's int8 file to its logged model (what a registered version of it
# serves and carries), at INT8_DIR/INT8_FILE among the model's artifacts.
INT8_DIR, INT8_FILE = "int8", "model.int8.onnx"


class LoggedModel(torch.nn.Module):
    """A model loaded from MLflow, usable like any module: MLflow 3 saves a torch.export graph, whose
    mode was fixed at export and which refuses `.eval()`/`.train()`, so those become no-ops here."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images)

    def train(self, mode: bool = True) -> LoggedModel:
        return self


def load_logged_model(model_uri: str, tracking_uri: str | None = None) -> LoggedModel:
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return LoggedModel(mlflow.pytorch.load_model(model_uri, map_location="cpu"))


def log_model(uri: str, run_id: str, module, data) -> str:
    """Log as an MLflow PyTorch model with a signature and an input example; returns its model URI."""
    model = copy.deepcopy(module).cpu().eval().to(memory_format=torch.contiguous_format)
    example = (
        next(eval_batches(data, data.val, 2, torch.device("cpu"))).images.numpy()
        if data.in_memory  # a streamed split would start DataLoader workers for two images
        else np.zeros((2, *data.input_shape), dtype=np.float32)
    )
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    mlflow.set_tracking_uri(uri)
    status = MlflowClient(uri).get_run(run_id).info.status
    with mlflow.start_run(run_id=run_id, nested=True):
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            signature=infer_signature(example, output),
            input_example=example,
            pip_requirements=_requirements(),  # given, not inferred: inference costs seconds per model
        )
    MlflowClient(uri).update_run(run_id, status=status)  # leaving start_run marked it FINISHED: the driver decides
    return info.model_uri


def _requirements() -> list[str]:
    return [f"{name}=={version(name)}" for name in ("torch", "torchvision", "numpy", "mlflow")]
