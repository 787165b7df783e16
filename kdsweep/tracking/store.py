"""Which MLflow store: resolve it (flag, environment, ./mlflow.db), check it is there, never log its secrets."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from kdsweep.disk import check_writable_dir
from kdsweep.errors import ConfigError

# MLflow prints a link after every run it touches and a progress bar for every download: noise in
# kdsweep's output. Commands set these when they start.
QUIET_MLFLOW = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def resolve_tracking_uri(uri: str | None = None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else ./mlflow.db (what `mlflow ui` opens by default)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri if uri else f"sqlite:///{Path('mlflow.db').resolve()}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail before any trial starts when the tracking server cannot be reached."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
                if response.status != 200:
                    raise OSError(f"HTTP {response.status}")
        except OSError as error:
            reason = getattr(error, "reason", error)
            raise ConfigError(
                "--tracking-uri", f"cannot reach the MLflow server at {display_uri(uri)} ({reason})"
            ) from None
        return
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as error:  # any store that cannot be opened
        raise ConfigError(
            "--tracking-uri", f"cannot open the MLflow store {display_uri(uri)} ({error.__class__.__name__}: {error})"
        ) from None


def use_store(uri: str) -> None:
    """Check the store is there (a sqlite file: that its folder takes writes: the database, its journal,
    the artifacts in ./mlruns), and make it the one `models:/` URIs (a teacher's) resolve against."""
    if uri.startswith("sqlite:///"):
        check_writable_dir("--tracking-uri", Path(uri.removeprefix("sqlite:///")).parent, "the MLflow database")
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)


def display_uri(uri: str) -> str:
    """The URI without credentials, for logs."""
    scheme, sep, rest = uri.partition("://")
    return f"{scheme}{sep}{rest.rsplit('@', 1)[-1]}" if sep and "@" in rest.split("/", 1)[0] else uri
