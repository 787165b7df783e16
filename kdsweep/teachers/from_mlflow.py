"""A teacher logged to MLflow (`models:/NAME@ALIAS`, `runs:/ID/model`), checked against the data."""

from __future__ import annotations

import torch
from torch import nn

from kdsweep.data import Dataset, eval_batches
from kdsweep.errors import ConfigError, one_line
from kdsweep.teachers.checkpoint import FIELD
from kdsweep.teachers.teacher import TeacherMeta
from kdsweep.tracking.models import load_logged_model
from kdsweep.trial import evaluate

MLFLOW_SCHEMES = ("models:/", "runs:/")


def load_mlflow_teacher(uri: str, data: Dataset) -> tuple[nn.Module, TeacherMeta]:
    """The module and metadata of a logged teacher; bad input when it does not fit the data."""
    try:
        module = load_logged_model(uri)
    except Exception as error:  # unknown name/alias/run, unreachable store: MLflow raises many kinds
        raise ConfigError(FIELD, f"cannot load {uri} from MLflow ({one_line(error)})") from None
    example = next(eval_batches(data, data.val, 2, torch.device("cpu"))).images
    try:
        with torch.no_grad():
            outputs = module(example)
    except Exception:
        raise ConfigError(FIELD, f"{uri} does not accept inputs {data.input_shape} of {data.name}") from None
    if outputs.shape[-1] != data.num_classes:
        raise ConfigError(FIELD, f"{uri} predicts {outputs.shape[-1]} classes but {data.name} has {data.num_classes}")
    test_accuracy = evaluate(module, data, "test")["test_accuracy"]
    meta = TeacherMeta(
        uri, data.num_classes, data.input_shape, data.mean, data.std, data.name, test_accuracy, data.seed
    )
    return module, meta
