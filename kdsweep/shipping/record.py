"""An export's results on the run that logged the model (for a registered version: its source run).

Files go under `export/` with fixed names, so a second export replaces the first; metrics are
prefixed by format (`onnx_max_abs_diff`, `onnx_latency_ms`, `torchscript_...`), and the check's
verdict is the tag `kdsweep.<format>.check`, so a failed check is visible next to the model.
"""

from __future__ import annotations

import time
from pathlib import Path

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

ARTIFACT_DIR = "export"


def check_tag(format_name: str) -> str:
    return f"kdsweep.{format_name}.check"


def record_export(
    client: MlflowClient, run_id: str, metrics: dict[str, float], tags: dict[str, str], files: list[Path]
) -> None:
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()],
        tags=[RunTag(key, value[:MAX_TAG_VAL_LENGTH]) for key, value in tags.items()],
    )
    for path in files:
        client.log_artifact(run_id, str(path), ARTIFACT_DIR)
