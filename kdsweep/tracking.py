"""Everything MLflow: the sweep's parent run, one child run per trial, the teacher's run, students as models.

Who writes what: the driver creates the parent run and the teacher run, and closes each child run
with its final status (Tune tells only the driver that ASHA stopped a trial). The trial itself
creates or continues its child run, found by the tag `kdsweep.trial_id`, so a retried or resumed
trial writes into the run it started, and uploads its student over HTTP when the store is a server.

The default store is `./mlflow.db` (sqlite, with artifacts in `./mlruns`), which `mlflow ui` in the
same directory opens. During a sweep a private server on 127.0.0.1 fronts it (`tracking_service`),
so only one process ever writes the database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import mlflow
import torch
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from kdsweep.errors import ConfigError

TAG_ROLE = "kdsweep.role"  # parent | trial | teacher
TAG_SWEEP = "kdsweep.sweep"
TAG_TRIAL_ID = "kdsweep.trial_id"
TAG_MODEL_URI = "kdsweep.model_uri"
TAG_STOPPED_EARLY = "kdsweep.stopped_early"
TAG_TEACHER_RUN = "kdsweep.teacher_run_id"
TAG_TEACHER_KEY = "kdsweep.teacher_key"
TAG_PARENT = "mlflow.parentRunId"
TEACHERS_EXPERIMENT = "kdsweep-teachers"
REFERENCE_METRICS = ("test_accuracy", "params", "latency_ms")


def resolve_tracking_uri(uri: str | None = None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else ./mlflow.db (what `mlflow ui` opens by default)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri if uri else f"sqlite:///{Path('mlflow.db').resolve()}"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for private servers and test clusters)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def tracking_service(uri: str, log=print) -> Iterator[str]:
    """The URI trials log to. A local sqlite store is put behind a private `mlflow server` on
    127.0.0.1 for the sweep's duration, so that concurrent trials never write the database file
    at once ("database is locked"); artifacts still go straight to ./mlruns next to it."""
    if not uri.startswith("sqlite:///"):
        yield uri
        return
    database = Path(uri.removeprefix("sqlite:///"))
    artifacts = database.parent / "mlruns"
    port = free_port()
    log_file = open(database.parent / f".mlflow-server-{port}.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", uri, "--default-artifact-root", str(artifacts), "--no-serve-artifacts"],
        stdout=log_file, stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # no job workers: 7 fewer processes
    )
    served = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                check_reachable(served, timeout=2)
                break
            except ConfigError:
                if server.poll() is not None or time.time() > deadline:
                    raise ConfigError("--tracking-uri", f"could not serve {uri} (see {log_file.name})") from None
                time.sleep(0.5)
        log(f"MLflow: {uri} served to the trials at {served}")
        yield served
    finally:
        server.terminate()
        server.wait(timeout=30)
        log_file.close()
        Path(log_file.name).unlink(missing_ok=True)


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail before any trial starts when the tracking server cannot be reached."""
    if uri.startswith(("http://", "https://")):
        import urllib.request

        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
                if response.status != 200:
                    raise OSError(f"HTTP {response.status}")
        except OSError as error:
            reason = getattr(error, "reason", error)
            raise ConfigError("--tracking-uri", f"cannot reach the MLflow server at {display_uri(uri)} ({reason})") from None
        return
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as error:  # any store that cannot be opened
        raise ConfigError("--tracking-uri", f"cannot open the MLflow store {display_uri(uri)} ({error.__class__.__name__}: {error})") from None


def use_store(uri: str) -> None:
    """Check the store is there, and make it the one `models:/` URIs (a teacher's) resolve against."""
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)


@dataclass(frozen=True)
class TrackingContext:
    """What a trial needs to find its run; sent to every trial with the Tune config."""

    uri: str
    experiment_id: str
    parent_run_id: str


def _versions() -> dict[str, str]:
    import ray
    import torch

    import kdsweep

    versions = {"kdsweep.version": kdsweep.__version__, "ray.version": ray.__version__,
                "torch.version": torch.__version__, "mlflow.version": mlflow.__version__}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip()
        if commit:
            versions["mlflow.source.git.commit"] = commit
    except OSError:
        pass
    return versions


def flat_params(prefix: str, values: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(f"{name}.", value))
        else:
            out[name] = str(value)
    return out


def experiment_id(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def latest_parent(client: MlflowClient, experiment_ids: list[str]):
    """The most recent sweep's parent run in these experiments, or None."""
    found = client.search_runs(experiment_ids, f"tags.`{TAG_ROLE}` = 'parent'", order_by=["attributes.start_time DESC"], max_results=1)
    return found[0] if found else None


def find_trial_run(client: MlflowClient, experiment_id: str, trial_id: str):
    """The run a Tune trial logs to, or None before the trial first started."""
    found = client.search_runs([experiment_id], f"tags.`{TAG_TRIAL_ID}` = '{trial_id}'", max_results=1)
    return found[0] if found else None


def display_uri(uri: str) -> str:
    """The URI without credentials, for logs."""
    scheme, sep, rest = uri.partition("://")
    return f"{scheme}{sep}{rest.rsplit('@', 1)[-1]}" if sep and "@" in rest.split("/", 1)[0] else uri


# ---------------------------------------------------------------- the driver's side


class SweepTracker:
    """The parent run of one sweep (reused by --resume) and the runs' final statuses."""

    def __init__(self, uri: str, experiment_name: str) -> None:
        self.uri = uri
        self.client = MlflowClient(uri)
        self.experiment_id = experiment_id(self.client, experiment_name)
        self.experiment_name = experiment_name
        self.parent_run_id: str | None = None

    def start_parent(self, config, resume: bool) -> TrackingContext:
        if resume:
            previous = latest_parent(self.client, [self.experiment_id])
            if previous:
                self.parent_run_id = previous.info.run_id
                self.client.update_run(self.parent_run_id, status="RUNNING")
        if self.parent_run_id is None:
            tags = {TAG_ROLE: "parent", TAG_SWEEP: self.experiment_name, "dataset": config.data.name,
                    "teacher": config.teacher.arch, "space_file": config.space_file or "", **_versions()}
            run = self.client.create_run(self.experiment_id, tags=tags, run_name=f"sweep-{time.strftime('%Y%m%d-%H%M%S')}")
            self.parent_run_id = run.info.run_id
            params = {**flat_params("data.", asdict(config.data)), **flat_params("", config.model_dump(
                include={"objective", "budget", "scheduler", "searcher", "resources"}))}
            params["fixed"] = json.dumps(config.fixed, sort_keys=True)
            self.client.log_batch(self.parent_run_id, params=[Param(k, v[:6000]) for k, v in params.items()])
            if config.space_file:
                self.client.log_artifact(self.parent_run_id, config.space_file, "search_space")
            resolved = config.model_dump_json(indent=2, exclude={"run": {"tracking_uri"}})  # may carry credentials
            self.client.log_text(self.parent_run_id, resolved, "search_space/resolved.json")
        return TrackingContext(self.uri, self.experiment_id, self.parent_run_id)

    def link_teacher(self, teacher_run_id: str, reference: dict[str, float]) -> None:
        """The teacher's reference metrics on the parent, so students can be compared with it."""
        self.client.set_tag(self.parent_run_id, TAG_TEACHER_RUN, teacher_run_id)
        now = int(time.time() * 1000)
        self.client.log_batch(self.parent_run_id, metrics=[Metric(f"teacher_{k}", float(v), now, 0) for k, v in reference.items()])

    def close_trial(self, run_id: str, status: str, error: str | None = None) -> None:
        """FINISHED, KILLED (stopped early by the scheduler: tagged so it can be filtered out) or FAILED."""
        if status == "KILLED":
            self.client.set_tag(run_id, TAG_STOPPED_EARLY, "true")
        if error:
            self.client.set_tag(run_id, "kdsweep.error", error[:5000])
        self.client.set_terminated(run_id, status=status)

    def run_for_trial(self, trial_id: str) -> str | None:
        found = find_trial_run(self.client, self.experiment_id, trial_id)
        return found.info.run_id if found else None

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_run_id, status=status)


def log_teacher(uri: str, teacher, data) -> tuple[str, dict[str, float]]:
    """The teacher's own run (training curve, test accuracy, size, latency, model), made once per
    teacher; returns its run id and the reference metrics students are compared with."""
    from kdsweep.models import measure_cost

    client = MlflowClient(uri)
    teachers = experiment_id(client, TEACHERS_EXPERIMENT)
    key = teacher.source.split(":", 1)[-1]  # the teacher file: one run per file, however often reused
    if key.startswith(("models:/", "runs:/")):  # already in MLflow: link to the run that logged it
        return source_run_id(client, key), {"test_accuracy": teacher.meta.test_accuracy}
    found = client.search_runs([teachers], f"tags.`{TAG_TEACHER_KEY}` = '{key}'", max_results=1)
    if found:
        reference = {k: found[0].data.metrics[k] for k in REFERENCE_METRICS if k in found[0].data.metrics}
        return found[0].info.run_id, reference
    cost = measure_cost(teacher.module, data.input_shape)
    run = client.create_run(teachers, tags={TAG_ROLE: "teacher", TAG_TEACHER_KEY: key, "source": teacher.source},
                            run_name=f"teacher-{teacher.meta.arch}-{teacher.meta.dataset}")
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, int(m["epoch"])) for m in (teacher.history or [])
               for k, v in m.items() if k in ("train_loss", "val_accuracy", "val_loss")]
    metrics += [Metric("test_accuracy", teacher.meta.test_accuracy, now, 0), Metric("params", cost.params, now, 0),
                Metric("flops", cost.flops, now, 0), Metric("latency_ms", cost.latency_ms, now, 0)]
    params = [Param(k, str(v)) for k, v in asdict(teacher.meta).items()]
    client.log_batch(run_id, metrics=metrics, params=params)
    log_student_model(uri, run_id, teacher.module, data)
    client.set_terminated(run_id)
    reference = {"test_accuracy": teacher.meta.test_accuracy, "params": cost.params, "latency_ms": cost.latency_ms}
    return run_id, reference


def source_run_id(client: MlflowClient, model_uri: str) -> str:
    """The run that logged a model: runs:/ID/..., models:/NAME@ALIAS, models:/NAME/VERSION, models:/m-ID."""
    if model_uri.startswith("runs:/"):
        return model_uri.removeprefix("runs:/").split("/", 1)[0]
    reference = model_uri.removeprefix("models:/")
    if "@" in reference:
        name, alias = reference.split("@", 1)
        return client.get_model_version_by_alias(name, alias).run_id
    if "/" in reference:
        name, version = reference.split("/", 1)
        return client.get_model_version(name, version).run_id
    return client.get_logged_model(reference).source_run_id


# ---------------------------------------------------------------- the trial's side


class TrialTracker:
    """The child run of one trial: found by trial id (a retry continues it), else created."""

    def __init__(self, context: TrackingContext, trial_id: str, run_name: str, params: dict[str, Any]) -> None:
        self.context = context
        self.client = MlflowClient(context.uri)
        found = find_trial_run(self.client, context.experiment_id, trial_id)
        self.logged_epoch = 0
        if found:
            self.run_id = found.info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            # A crash between logging an epoch and checkpointing it replays that epoch: log it once.
            self.logged_epoch = int(found.data.metrics.get("epoch", 0))
            return
        tags = {TAG_ROLE: "trial", TAG_TRIAL_ID: trial_id, TAG_PARENT: context.parent_run_id}
        run = self.client.create_run(context.experiment_id, tags=tags, run_name=run_name)
        self.run_id = run.info.run_id
        flat = flat_params("", params)
        self.client.log_batch(self.run_id, params=[Param(k, v[:6000]) for k, v in flat.items()])

    def log_epoch(self, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        step = int(metrics["epoch"])
        if step <= self.logged_epoch:
            return
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_student(self, student, data, confusion) -> str:
        uri = log_student_model(self.context.uri, self.run_id, student, data)
        self.client.set_tag(self.run_id, TAG_MODEL_URI, uri)
        self.client.log_figure(self.run_id, confusion, "confusion_matrix_val.png")
        return uri


class LoggedModel(torch.nn.Module):
    """A model loaded from MLflow, usable like any module: MLflow 3 saves a torch.export graph, whose
    mode was fixed at export and which refuses `.eval()`/`.train()`, so those become no-ops here."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images)

    def train(self, mode: bool = True) -> "LoggedModel":
        return self


def load_logged_model(model_uri: str, tracking_uri: str | None = None) -> LoggedModel:
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return LoggedModel(mlflow.pytorch.load_model(model_uri, map_location="cpu"))


def log_student_model(uri: str, run_id: str, module, data) -> str:
    """Log as an MLflow PyTorch model with a signature and an input example; returns its model URI."""
    import copy

    import numpy as np
    import torch
    from mlflow.models import infer_signature

    model = copy.deepcopy(module).cpu().eval().to(memory_format=torch.contiguous_format)
    example = data.val.images[:2].cpu().numpy().astype(np.float32) if hasattr(data.val, "images") else \
        np.zeros((2, *data.input_shape), dtype=np.float32)
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    mlflow.set_tracking_uri(uri)
    status = MlflowClient(uri).get_run(run_id).info.status
    with mlflow.start_run(run_id=run_id, nested=True):
        info = mlflow.pytorch.log_model(
            model, name="model", signature=infer_signature(example, output), input_example=example,
            pip_requirements=_requirements(),  # given, not inferred: inference costs seconds per model
        )
    MlflowClient(uri).update_run(run_id, status=status)  # leaving start_run marked it FINISHED: the driver decides
    return info.model_uri


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("torch", "torchvision", "numpy", "mlflow")]


def confusion_figure(labels, predicted, num_classes: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    figure, axes = plt.subplots(figsize=(6, 6))
    ConfusionMatrixDisplay.from_predictions(labels, predicted, labels=list(range(num_classes)), ax=axes, colorbar=False)
    axes.set_title("validation confusion matrix")
    plt.close(figure)
    return figure
