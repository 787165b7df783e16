"""A teacher logged to MLflow (`models:/NAME@ALIAS`, `runs:/ID/model`): its module and what its run says."""

from __future__ import annotations

from mlflow.tracking import MlflowClient
from torch import nn

from kdsweep.errors import ConfigError, one_line
from kdsweep.teachers.checkpoint import FIELD
from kdsweep.tracking.models import load_logged_model
from kdsweep.tracking.teacher_run import source_run_id

MLFLOW_SCHEMES = ("models:/", "runs:/")


def load_mlflow_model(uri: str) -> tuple[nn.Module, str | None, str | None]:
    """The module, and the dataset and data digest its run records (None where it records none).

    A teacher logged by kdsweep carries the digest of the data it was trained on (a param of its
    run): the caller checks it is this sweep's. Any other model is checked on the data only.
    """
    try:
        module = load_logged_model(uri)
        params = MlflowClient().get_run(source_run_id(MlflowClient(), uri)).data.params
    except Exception as error:  # unknown name/alias/run, unreachable store: MLflow raises many kinds
        raise ConfigError(FIELD, f"cannot load {uri} from MLflow ({one_line(error)})") from None
    digest = params.get("data_digest")
    return module, params.get("dataset"), digest if digest not in (None, "None") else None
