"""A sweep read back from MLflow: its parent run (by experiment, or by id), the config it logged, and its
trials as selection sees them. Only reads: choosing and registering the champion is kdsweep.champion."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from kdsweep.config import SweepConfig
from kdsweep.errors import ConfigError, did_you_mean
from kdsweep.outcome import TAG_OUTCOME
from kdsweep.plugins import import_plugins
from kdsweep.selection import TrialRun
from kdsweep.tracking.runs import (
    RESOLVED_CONFIG,
    TAG_BASELINE,
    TAG_ERROR,
    TAG_MODEL_URI,
    TAG_PARENT,
    TAG_ROLE,
    every_page,
    latest_parent,
    tag_equals,
)


def trial_run(run: Run) -> TrialRun:
    """A child run as selection sees it; its outcome from the tag the driver set when it closed the run."""
    tags = run.data.tags
    return TrialRun(
        run.info.run_id,
        run.info.run_name or run.info.run_id,
        tags.get(TAG_OUTCOME, run.info.status),
        dict(run.data.params),
        dict(run.data.metrics),
        tags.get(TAG_MODEL_URI),
        tags.get(TAG_ERROR),
        TAG_BASELINE in tags,
    )


def sweep_config(client: MlflowClient, parent: Run) -> SweepConfig:
    """The resolved config the sweep logged on its parent run: what it trained on, exactly."""
    with tempfile.TemporaryDirectory() as directory:
        try:
            path = client.download_artifacts(parent.info.run_id, RESOLVED_CONFIG, directory)
        except Exception:  # MLflow raises several kinds for a missing artifact
            raise ConfigError(
                "--parent-run-id", f"run '{parent.info.run_id}' has no {RESOLVED_CONFIG}: not a kdsweep sweep"
            ) from None
        config = SweepConfig.model_validate_json(Path(path).read_text())
    import_plugins(config.plugins)
    return config


def validation_size(run: Run) -> int | None:
    """How many images the run's validation split holds (from the dataset it recorded), None if unknown."""
    inputs = run.inputs.dataset_inputs if run.inputs else []
    return json.loads(inputs[0].dataset.profile).get("val") if inputs and inputs[0].dataset.profile else None


def _get_run(client: MlflowClient, run_id: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException:
        raise ConfigError("--parent-run-id", f"no run '{run_id}' in this store") from None


def _latest_parent(client: MlflowClient, experiment_ids: list[str], where: str) -> Run:
    found = latest_parent(client, experiment_ids)
    if found is None:
        raise ConfigError("--experiment", f"no sweep in {where} (no run tagged {TAG_ROLE}=parent)")
    return found


def default_experiment(client: MlflowClient, parent_run_id: str | None = None) -> str:
    """The experiment of `parent_run_id`, else of the most recent sweep in the store."""
    if parent_run_id:
        return client.get_experiment(_get_run(client, parent_run_id).info.experiment_id).name
    ids = [e.experiment_id for e in every_page(lambda page_token: client.search_experiments(page_token=page_token))]
    return client.get_experiment(
        _latest_parent(client, ids, f"the store {client.tracking_uri}").info.experiment_id
    ).name


def find_parent(client: MlflowClient, experiment_name: str, parent_run_id: str | None) -> Run:
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        names = [e.name for e in every_page(lambda page_token: client.search_experiments(page_token=page_token))]
        raise ConfigError(
            "--experiment",
            f"no experiment named '{experiment_name}' in {client.tracking_uri}{did_you_mean(experiment_name, names)}",
        )
    if not parent_run_id:
        return _latest_parent(client, [experiment.experiment_id], f"'{experiment_name}'")
    run = _get_run(client, parent_run_id)
    if run.info.experiment_id != experiment.experiment_id or run.data.tags.get(TAG_ROLE) != "parent":
        raise ConfigError(
            "--parent-run-id", f"run '{parent_run_id}' is not a sweep's parent run in '{experiment_name}'"
        )
    return run


def sweep_runs(client: MlflowClient, parent: Run) -> list[TrialRun]:
    """Every trial of the sweep under `parent`, as selection sees it."""
    children = every_page(
        lambda page_token: client.search_runs(
            [parent.info.experiment_id], tag_equals(TAG_PARENT, parent.info.run_id), page_token=page_token
        )
    )
    return [trial_run(run) for run in children]
