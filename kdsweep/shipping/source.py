"""A model URI -> what shipping needs: the run that logged it, the data its sweep trained on, the model twice.

Twice: as MLflow loads it (the reference the check compares against: what `models:/` serves) and
rebuilt as the registry's nn.Module holding those weights (what the exporters trace: a torch.export
graph traced by torch.jit keeps the example's batch size in some models, e.g. ShuffleNet's shuffle).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from torch import nn

from kdsweep.data import Dataset, eval_batches, load_dataset
from kdsweep.errors import ConfigError, did_you_mean, one_line
from kdsweep.models import create_model
from kdsweep.sweep_record import sweep_config
from kdsweep.tracking.models import LoggedModel, load_logged_model
from kdsweep.tracking.runs import TAG_PARENT, TAG_ROLE
from kdsweep.tracking.store import display_uri
from kdsweep.trial import TrialConfig

URI_FORMS = "models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME/latest, models:/MODEL_ID or runs:/RUN_ID/PATH"


@dataclass(frozen=True)
class Origin:
    """The run that logged a model, and how to name the model to a user and as a file."""

    run: Run
    label: str  # "version 2 of 'digits' (run small_cnn-...)" or "run small_cnn-... (ID)"
    stem: str  # the default output file name, before the suffix


@dataclass(frozen=True)
class ModelSource:
    uri: str
    origin: Origin
    data: Dataset
    logged: LoggedModel  # as MLflow loads it: the reference
    module: nn.Module  # rebuilt from the model registry with the logged weights, in eval mode: what is exported

    @property
    def run_id(self) -> str:
        return self.origin.run.info.run_id

    def example(self, size: int) -> torch.Tensor:
        """The first `size` validation images: real inputs for tracing and for latency."""
        return next(eval_batches(self.data, self.data.val, size, torch.device("cpu"))).images


def load_source(client: MlflowClient, uri: str, field: str = "MODEL_URI") -> ModelSource:
    """The model at `uri`, its run, its sweep's data; bad input (named `field`) when any is missing."""
    origin = find_origin(client, uri, field)
    parent_id = origin.run.data.tags.get(TAG_PARENT)
    parent = _run(client, parent_id, field) if parent_id else None
    if parent is None or parent.data.tags.get(TAG_ROLE) != "parent":
        raise ConfigError(
            field, f"{origin.label} was not logged by a kdsweep sweep's trial, so the data to check it on is unknown"
        )
    data = load_dataset(sweep_config(client, parent).data)  # imports the sweep's plugins, too
    try:
        logged = load_logged_model(uri, client.tracking_uri)
    except Exception as error:  # MLflow raises many kinds for a model it cannot find or read
        raise ConfigError(field, f"cannot load {uri} ({one_line(error)})") from None
    return ModelSource(uri, origin, data, logged, rebuild(origin.run, logged, data, field))


def find_origin(client: MlflowClient, uri: str, field: str) -> Origin:
    """The run that logged the model at `uri`: the run itself, a registered version's source run, or a
    logged model's source run."""
    scheme, sep, rest = uri.partition(":/")
    path = rest.lstrip("/")
    if sep and scheme == "runs" and path:
        run = _run(client, path.split("/")[0], field)
        name = run.info.run_name or run.info.run_id
        return Origin(run, f"run {name} ({run.info.run_id})", name)
    if sep and scheme == "models" and path:
        if "/" in path:
            name, _, suffix = path.partition("/")
            version = _version(client, name, suffix, field)
        elif "@" in path:
            name, _, alias = path.rpartition("@")
            version = _aliased(client, name, alias, field)
        else:
            try:
                model = client.get_logged_model(path)
            except MlflowException:
                raise ConfigError(field, f"no model '{path}' in {display_uri(client.tracking_uri)}") from None
            run = _run(client, model.source_run_id, field)
            name = run.info.run_name or run.info.run_id
            return Origin(run, f"model {path} of run {name} ({run.info.run_id})", name)
        run = _run(client, version.run_id, field)
        return Origin(
            run, f"version {version.version} of '{name}' (run {run.info.run_name})", f"{name}-v{version.version}"
        )
    raise ConfigError(field, f"'{uri}' is not a model URI (use {URI_FORMS})")


def rebuild(run: Run, logged: LoggedModel, data: Dataset, field: str) -> nn.Module:
    """The trial's student, built by name as the trial built it, holding the logged weights."""
    params = run.data.params
    # A sweep logs only the trial fields it set; the trial's own defaults fill the rest, as in the trial.
    given = {key: params[key] for key in ("student", "width") if params.get(key) not in (None, "None")}
    config = TrialConfig.model_validate(given)
    try:
        module = create_model(config.student, data.num_classes, data.in_channels, data.image_size, config.width)
        module.load_state_dict(logged.module.state_dict(), strict=True)
    except (ValueError, RuntimeError) as error:  # unknown name (a plugin not importable here), other weights
        raise ConfigError(field, f"cannot rebuild the trial's {config.student} ({one_line(error)})") from None
    return module.eval()


def _run(client: MlflowClient, run_id: str, field: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException:
        raise ConfigError(field, f"no run '{run_id}' in {display_uri(client.tracking_uri)}") from None


def _registered(client: MlflowClient, name: str, field: str):
    try:
        return client.get_registered_model(name)
    except MlflowException:
        names = [model.name for model in client.search_registered_models(max_results=1000)]
        raise ConfigError(
            field, f"no registered model '{name}' in {display_uri(client.tracking_uri)}{did_you_mean(name, names)}"
        ) from None


def _aliased(client: MlflowClient, name: str, alias: str, field: str) -> ModelVersion:
    aliases = _registered(client, name, field).aliases
    if alias not in aliases:
        raise ConfigError(
            field, f"registered model '{name}' has no alias '@{alias}' (aliases: {', '.join(aliases) or 'none'})"
        )
    return client.get_model_version(name, aliases[alias])


def _version(client: MlflowClient, name: str, suffix: str, field: str) -> ModelVersion:
    _registered(client, name, field)
    versions = {int(v.version): v for v in client.search_model_versions(f"name = '{name}'")}
    if suffix.lower() == "latest" and versions:
        return versions[max(versions)]
    if suffix.isdigit() and int(suffix) in versions:
        return versions[int(suffix)]
    known = ", ".join(str(v) for v in sorted(versions)) or "none"
    raise ConfigError(field, f"registered model '{name}' has no version '{suffix}' (versions: {known}, or latest)")
