"""A teacher logged to MLflow (`models:/NAME@ALIAS`, `runs:/ID/model`), checked against the data."""

from __future__ import annotations

import torch
from mlflow.tracking import MlflowClient
from torch import nn

from kdsweep.data import Dataset, eval_batches
from kdsweep.errors import ConfigError, one_line
from kdsweep.teachers.checkpoint import FIELD, check_fits
from kdsweep.teachers.teacher import TeacherMeta
from kdsweep.tracking.models import load_logged_model
from kdsweep.tracking.teacher_run import source_run_id
from kdsweep.trial import evaluate

MLFLOW_SCHEMES = ("models:/", "runs:/")


def load_mlflow_teacher(uri: str, data: Dataset) -> tuple[nn.Module, TeacherMeta]:
    """The module and metadata of a logged teacher; bad input when it does not fit the data.

    A teacher logged by kdsweep carries the digest of the data it was trained on (a param of its
    run): it must be this sweep's. Any other model is checked for its input shape and classes only.
    """
    try:
        module = load_logged_model(uri)
        params = MlflowClient().get_run(source_run_id(MlflowClient(), uri)).data.params
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
    trained_on = TeacherMeta(
        arch=uri,
        num_classes=data.num_classes,
        input_shape=data.input_shape,
        mean=data.mean,
        std=data.std,
        dataset=params.get("dataset", data.name),
        test_accuracy=0.0,
        seed=data.seed,
        data_digest=params.get("data_digest") if params.get("data_digest") not in (None, "None") else None,
    )
    check_fits(trained_on, data, uri)
    test_accuracy = evaluate(module, data, "test")["test_accuracy"]
    return module, trained_on.model_copy(update={"test_accuracy": test_accuracy})
