"""A loaded dataset as MLflow's dataset tracking records it: what it is, never the data itself.

One entry per run: the name, `Dataset.digest` (so runs on the very same splits share one entry,
and the UI's Dataset column and filter group them), the split sizes in the profile, and the
`DataSpec` that produced the splits as its source.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlflow.entities import Dataset as MlflowDataset
from mlflow.entities import DatasetInput, InputTag
from mlflow.tracking import MlflowClient

from kdsweep.data import Dataset, list_datasets

CONTEXT_TAG = "mlflow.data.context"  # MLflow's tag for what a run did with a dataset
TRAINING = "training"  # trials, the teacher and the sweep train (and select) on these splits


def mlflow_dataset(data: Dataset) -> MlflowDataset:
    """Registered datasets are made by code (source type `code`); any other name is an ImageFolder
    directory (source type `local`, whose `uri` the UI shows)."""
    spec = data.spec.model_dump(mode="json")
    if data.name in list_datasets():
        name, source_type, source = data.name, "code", {"kdsweep.data": spec}
    else:
        name, source_type, source = Path(data.name).name, "local", {"uri": data.name, "kdsweep.data": spec}
    profile = {
        "train": len(data.train),
        "val": len(data.val),
        "test": len(data.test),
        "num_classes": data.num_classes,
        "input_shape": list(data.input_shape),
    }
    return MlflowDataset(
        name=name,
        digest=data.digest,
        source_type=source_type,
        source=json.dumps(source, sort_keys=True),
        profile=json.dumps(profile),
    )


def log_dataset(client: MlflowClient, run_id: str, data: Dataset, context: str = TRAINING) -> None:
    """Record that `run_id` used `data` (MLflow keeps one entry per name and digest in an experiment)."""
    tags = [InputTag(CONTEXT_TAG, context)]
    client.log_inputs(run_id, datasets=[DatasetInput(mlflow_dataset(data), tags=tags)])
