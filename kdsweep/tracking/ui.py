"""Links into MLflow's web UI that open its training view, where a sweep's runs are.

MLflow 3 has two experiment views: the GenAI one (overview, traces) and the training one (the runs
table). The experiment tag `mlflow.experimentKind` names the kind (`custom_model_development` is
the value the UI labels "Machine learning"), and kdsweep sets it; but MLflow 3.17's UI does
not read it when choosing the view (that code sits behind a feature flag this build hard-wires to
the switch): a workflow-type switch does ("GenAI" or "Model training" in the UI), from the link's
`?workflowType=machine_learning` (after the hash), else from what the browser last chose
(localStorage `mlflow.workflowType_v1`), else GenAI. So every link kdsweep prints carries that
query. The sort (`orderByKey`, `orderByAsc`) is read from the query only on the `/runs` route.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlencode

from kdsweep.tracking.store import display_uri

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
CLASSIC_ML = "custom_model_development"  # the value MLflow's UI labels "Machine learning"
TRAINING_VIEW = {"workflowType": "machine_learning"}
MLFLOW_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def ui_base(store: str) -> tuple[str, str | None]:
    """Where a browser finds the UI of `store` (a tracking server, or `mlflow ui` by default), and
    the command that starts `mlflow ui` on it when no server serves it."""
    if store.startswith(("http://", "https://")):
        return display_uri(store).rstrip("/"), None
    if store == f"sqlite:///{Path('mlflow.db').resolve()}":  # what `mlflow ui` opens by default, here
        return MLFLOW_UI, "mlflow ui"
    return MLFLOW_UI, f"mlflow ui --backend-store-uri {display_uri(store)}"


def experiment_url(base: str, experiment_id: str, order_by: str | None = None, mode: str = "max") -> str:
    """The experiment's runs table in the training view; sorted by metric `order_by` (best first
    for `mode`), which also lists the trials flat instead of folded under their parent run."""
    query = dict(TRAINING_VIEW)
    if order_by:
        query.update(orderByKey=f"metrics.`{order_by}`", orderByAsc=str(mode == "min").lower())
    return f"{base}/#/experiments/{experiment_id}/runs?{urlencode(query, quote_via=quote)}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """One run's page; with the query, the page's side navigation (Runs, Models) stays in the training view."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{urlencode(TRAINING_VIEW)}"
