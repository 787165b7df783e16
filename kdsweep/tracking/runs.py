"""The runs of a sweep: the driver's parent run and final statuses, and each trial's own child run.

Who writes what: the driver creates the parent run and closes each child run with its final
status (Tune tells only the driver that ASHA stopped a trial). The trial itself creates or
continues its child run, found by the tag `kdsweep.trial_id`, so a retried or resumed trial
writes into the run it started, and uploads its student over HTTP when the store is a server.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

from kdsweep.data import Dataset
from kdsweep.outcome import MLFLOW_STATUS, TAG_OUTCOME, Outcome, ending_reason
from kdsweep.tracking.address import ServerAddress
from kdsweep.tracking.datasets import log_dataset
from kdsweep.tracking.models import log_model
from kdsweep.tracking.pending import Pending, describe
from kdsweep.tracking.ui import CLASSIC_ML, EXPERIMENT_KIND_TAG

TAG_ROLE = "kdsweep.role"  # parent | trial | teacher
TAG_SWEEP = "kdsweep.sweep"
TAG_TRIAL_ID = "kdsweep.trial_id"
TAG_MODEL_URI = "kdsweep.model_uri"
TAG_STOPPED_EARLY = "kdsweep.stopped_early"
TAG_TEACHER_RUN = "kdsweep.teacher_run_id"
TAG_TEACHER_KEY = "kdsweep.teacher_key"
TAG_TEACHER_NODE = "kdsweep.teacher_node_id"
TAG_ERROR = "kdsweep.error"
TAG_BASELINE = "kdsweep.baseline"  # on a scratch baseline's run: its key (kdsweep.sweep.baselines.baseline_key)
TAG_CONFIRMATION = "kdsweep.confirmation"  # "true" on a confirmation trial's run: a top configuration, another seed
TAG_COMPARED_AT = "kdsweep.vs_scratch_epoch"  # the epoch kd_gain and gap_closed compare
TAG_PARENT = "mlflow.parentRunId"
TAG_INFEASIBLE = "kdsweep.infeasible"  # on an INFEASIBLE run: the deploy limits its student exceeds
TEACHERS_EXPERIMENT = "kdsweep-teachers"
REFERENCE_METRICS = ("test_accuracy", "params", "latency_ms")
BEST_METRIC, BEST_EPOCH = "best_val_accuracy", "best_epoch"  # a trial's running best, next to the last value
RESOLVED_CONFIG = "search_space/resolved.json"  # the validated SweepConfig, on the parent: what selection re-reads


@dataclass(frozen=True)
class TrackingContext:
    """What a trial needs to find its run; sent to every trial with the Tune config (not pickled into
    Tune's experiment state: `tune.with_parameters` keeps it in the object store)."""

    uri: str  # where the tracking server first answered (a restarted private one is found from it)
    experiment_id: str
    parent_run_id: str
    patience_s: float = 300.0  # how long the driver waits at the sweep's end for an unreachable tracking server


def _versions() -> dict[str, str]:
    import ray
    import torch

    import kdsweep

    versions = {
        "kdsweep.version": kdsweep.__version__,
        "ray.version": ray.__version__,
        "torch.version": torch.__version__,
        "mlflow.version": mlflow.__version__,
    }
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip()
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


def every_page(fetch) -> list:
    """All pages of an MLflow search (a page holds at most 1000): `fetch(page_token=...)` returns one."""
    items, token = [], None
    while True:
        page = fetch(page_token=token)
        items.extend(page)
        token = page.token
        if not token:
            return items


def tag_equals(tag: str, value: str) -> str:
    """An MLflow search filter `tags.<tag> = <value>` that matches `value` exactly.

    MLflow's filter grammar has no escapes (a quoted value is read as what lies between its quotes,
    so `'it''s'` and `'it\\'s'` silently match nothing): a value is quoted with a quote character it
    does not contain. Values with both kinds are not representable; kdsweep filters on ids and hashes.
    """
    quote = "'" if "'" not in value else '"'
    if quote in value:
        raise ValueError(f"an MLflow filter cannot match a value with both kinds of quote: {value!r}")
    return f"tags.`{tag}` = {quote}{value}{quote}"


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment `name`, made if new, and marked as classic ML (one made elsewhere keeps its kind)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: CLASSIC_ML})
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, CLASSIC_ML)
    return experiment.experiment_id


def latest_parent(client: MlflowClient, experiment_ids: list[str]):
    """The most recent sweep's parent run in these experiments, or None."""
    found = client.search_runs(
        experiment_ids, tag_equals(TAG_ROLE, "parent"), order_by=["attributes.start_time DESC"], max_results=1
    )
    return found[0] if found else None


def find_trial_run(client: MlflowClient, experiment_id: str, trial_id: str):
    """The run a Tune trial logs to, or None before the trial first started."""
    found = client.search_runs([experiment_id], tag_equals(TAG_TRIAL_ID, trial_id), max_results=1)
    return found[0] if found else None


# ---------------------------------------------------------------- the driver's side


class SweepTracker:
    """The parent run of one sweep (reused by --resume) and the runs' final statuses."""

    def __init__(self, uri: str, experiment_name: str) -> None:
        self.uri = uri  # where the server first answered: what trials are given
        self.server = ServerAddress(uri)
        self.experiment_id = experiment_id(self.client, experiment_name)
        self.experiment_name = experiment_name
        self.parent_run_id: str | None = None

    def start_parent(self, config, data: Dataset, resume: bool) -> TrackingContext:
        if resume:
            previous = latest_parent(self.client, [self.experiment_id])
            if previous:
                self.parent_run_id = previous.info.run_id
                self.client.update_run(self.parent_run_id, status="RUNNING")
        if self.parent_run_id is None:
            tags = {
                TAG_ROLE: "parent",
                TAG_SWEEP: self.experiment_name,
                "dataset": config.data.name,
                "teacher": ", ".join(spec.arch for spec in config.teacher_specs.values()),
                "space_file": config.space_file or "",
                **_versions(),
            }
            run = self.client.create_run(
                self.experiment_id, tags=tags, run_name=f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
            )
            self.parent_run_id = run.info.run_id
            sections = {"objective", "budget", "confirm", "scheduler", "searcher", "resources"}
            params = {
                **flat_params("data.", config.data.model_dump()),
                **flat_params("", config.model_dump(include=sections)),
            }
            params["fixed"] = json.dumps(config.fixed, sort_keys=True)
            self.client.log_batch(
                self.parent_run_id, params=[Param(k, v[:MAX_PARAM_VAL_LENGTH]) for k, v in params.items()]
            )
            if config.space_file:
                self.client.log_artifact(self.parent_run_id, config.space_file, "search_space")
            resolved = config.model_dump_json(indent=2, exclude={"run": {"tracking_uri"}})  # may carry credentials
            self.client.log_text(self.parent_run_id, resolved, RESOLVED_CONFIG)
            log_dataset(self.client, self.parent_run_id, data)
        return TrackingContext(self.uri, self.experiment_id, self.parent_run_id, config.run.tracking_patience_s)

    @property
    def client(self) -> MlflowClient:
        return self.server.client

    def link_teacher(
        self, teacher_run_id: str, reference: dict[str, float], node_id: str, teacher_name: str | None = None
    ) -> None:
        """The teacher's reference metrics on the parent, so students can be compared with it, and the
        node that prepared the teacher for this sweep (trained it, computed its logit cache). One of
        several teachers is named (`teacher_name`): kdsweep.teacher_run_id.NAME, teacher.NAME.val_accuracy, ..."""
        suffix, prefix = (f".{teacher_name}", f"teacher.{teacher_name}.") if teacher_name else ("", "teacher_")
        self.client.set_tag(self.parent_run_id, TAG_TEACHER_RUN + suffix, teacher_run_id)
        self.client.set_tag(self.parent_run_id, TAG_TEACHER_NODE + suffix, node_id)
        now = int(time.time() * 1000)
        self.client.log_batch(
            self.parent_run_id, metrics=[Metric(f"{prefix}{k}", float(v), now, 0) for k, v in reference.items()]
        )

    def log_infeasible(self, student: str, width: int | None, cost: dict[str, float], why: list[str]) -> None:
        """One run per student architecture over the deploy budget: its figures and the limits it exceeds,
        outcome INFEASIBLE (kdsweep.feasibility); it is never trained, so it has no trial id and no model."""
        name = student + (f"w{width}" if width else "")
        tags = {TAG_PARENT: self.parent_run_id, TAG_ROLE: "infeasible", TAG_INFEASIBLE: "; ".join(why)}
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=f"{name}-infeasible")
        now = int(time.time() * 1000)
        params = [Param("student", student)] + ([Param("width", str(width))] if width else [])
        metrics = [Metric(key, float(value), now, 0) for key, value in cost.items()]
        self.client.log_batch(run.info.run_id, metrics=metrics, params=params)
        self.close_trial(run.info.run_id, Outcome.INFEASIBLE)

    def close_trial(self, run_id: str, outcome: Outcome, error: str | None = None) -> None:
        """The run's MLflow status for `outcome`, with the outcome (and any error) in tags."""
        self.client.set_tag(run_id, TAG_OUTCOME, str(outcome))
        if outcome is Outcome.STOPPED:  # so that early-stopped runs can be filtered out
            self.client.set_tag(run_id, TAG_STOPPED_EARLY, "true")
        if error:
            self.client.set_tag(run_id, TAG_ERROR, error[:MAX_TAG_VAL_LENGTH])
        self.client.set_terminated(run_id, status=MLFLOW_STATUS[outcome])

    def trial_runs(self) -> dict[str, tuple[str, str, str | None, int, bool]]:
        """This sweep's child runs: trial id -> (run id, MLflow status, outcome tag, last epoch, has a model)."""
        found = every_page(
            lambda page_token: self.client.search_runs(
                [self.experiment_id], f"tags.`{TAG_PARENT}` = '{self.parent_run_id}'", page_token=page_token
            )
        )
        return {
            run.data.tags[TAG_TRIAL_ID]: (
                run.info.run_id,
                run.info.status,
                run.data.tags.get(TAG_OUTCOME),
                int(run.data.metrics.get("epoch", 0)),
                TAG_MODEL_URI in run.data.tags,
            )
            for run in found
            if TAG_TRIAL_ID in run.data.tags
        }

    def finished_baselines(self) -> dict[str, dict[int, float]]:
        """The experiment's finished scratch baselines, any sweep's: key -> val_accuracy by epoch."""
        found = every_page(
            lambda page_token: self.client.search_runs(
                [self.experiment_id], tag_equals(TAG_OUTCOME, str(Outcome.FINISHED)), page_token=page_token
            )
        )
        return {
            run.data.tags[TAG_BASELINE]: {
                m.step: m.value for m in self.client.get_metric_history(run.info.run_id, "val_accuracy")
            }
            for run in found
            if TAG_BASELINE in run.data.tags
        }

    def log_gains(self, run_id: str, kd_gain: float, gap_closed: float | None, epoch: int) -> None:
        """What the teacher bought this trial, at the epoch where it was compared with its baseline."""
        now = int(time.time() * 1000)
        metrics = [Metric("kd_gain", kd_gain, now, epoch)]
        if gap_closed is not None:
            metrics.append(Metric("gap_closed", gap_closed, now, epoch))
        self.client.log_batch(run_id, metrics=metrics, tags=[RunTag(TAG_COMPARED_AT, str(epoch))])

    def run_for_trial(self, trial_id: str) -> str | None:
        found = find_trial_run(self.client, self.experiment_id, trial_id)
        return found.info.run_id if found else None

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_run_id, status=status)


# ---------------------------------------------------------------- the trial's side


class TrialTracker:
    """The child run of one trial: found by trial id (a retry continues it), else created with its
    parameters and its dataset.

    Every call goes through a `Pending` queue: while the tracking server is unreachable the trial
    trains on, and what it logged arrives, in order, when the server is back (or is named by `finish`).
    `background`: the calls run on the queue's own thread (a trial's: its training never waits for
    them); otherwise each is tried when made (the driver repairing a run at its end).
    """

    def __init__(
        self,
        context: TrackingContext,
        trial_id: str,
        run_name: str,
        params: dict[str, Any],
        data: Dataset,
        log=print,
        tags: dict[str, str] | None = None,
        background: bool = False,
    ) -> None:
        self.context = context
        self.server = ServerAddress(context.uri)
        self.run_id: str | None = None
        self.logged_epoch = 0
        self.best: tuple[float, int] | None = None  # (best val_accuracy so far, its epoch)
        self.has_model = False
        self.pending = Pending(log, background, wake=self.server.moved)
        self.pending.add("the trial's run", lambda: self._open(trial_id, run_name, params, data, tags or {}))

    @property
    def client(self) -> MlflowClient:
        return self.server.client

    def _open(self, trial_id: str, run_name: str, params: dict[str, Any], data: Dataset, tags: dict[str, str]) -> None:
        found = find_trial_run(self.client, self.context.experiment_id, trial_id)
        if found:
            self.client.update_run(found.info.run_id, status="RUNNING")
            # A crash between logging an epoch and checkpointing it replays that epoch: log it once.
            logged = found.data.metrics
            self.logged_epoch = int(logged.get("epoch", 0))
            if BEST_METRIC in logged:
                self.best = (logged[BEST_METRIC], int(logged[BEST_EPOCH]))
            self.has_model = TAG_MODEL_URI in found.data.tags
            self.run_id = found.info.run_id
            return
        tags = {**tags, TAG_ROLE: "trial", TAG_TRIAL_ID: trial_id, TAG_PARENT: self.context.parent_run_id}
        run = self.client.create_run(self.context.experiment_id, tags=tags, run_name=run_name)
        flat = flat_params("", params)
        self.client.log_batch(run.info.run_id, params=[Param(k, v[:MAX_PARAM_VAL_LENGTH]) for k, v in flat.items()])
        log_dataset(self.client, run.info.run_id, data)
        self.run_id = run.info.run_id

    def log_epoch(self, metrics: dict[str, float]) -> None:
        """The epoch's metrics at step=epoch, and the running best val_accuracy with its epoch: logged
        every epoch, so a trial ASHA stops has them too."""
        now = int(time.time() * 1000)
        step = int(metrics["epoch"])
        # A non-finite value (a diverged epoch's losses) is no measurement: never logged, so that
        # selection and MLflow's own search never compare one.
        batch = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ]

        def log() -> None:  # in order, after the run is open: the best so far is known then
            if step <= self.logged_epoch:
                return
            best = []
            accuracy = metrics.get("val_accuracy")
            if accuracy is not None and math.isfinite(accuracy):
                if self.best is None or accuracy > self.best[0]:  # ties keep the earlier epoch
                    self.best = (float(accuracy), step)
                best = [Metric(BEST_METRIC, self.best[0], now, step), Metric(BEST_EPOCH, self.best[1], now, step)]
            self.client.log_batch(self.run_id, metrics=batch + best)
            reason = ending_reason(metrics)
            if reason:  # the driver closes the run as DIVERGED or COLLAPSED; only the trial knows why
                self.client.set_tag(self.run_id, TAG_ERROR, reason)
            self.logged_epoch = step

        self.pending.add(f"metrics of epoch {step}", log)

    def log_student(self, student, data, confusion) -> None:
        def log() -> None:
            uri = log_model(self.server.url, self.run_id, student, data)
            self.client.set_tag(self.run_id, TAG_MODEL_URI, uri)
            self.client.log_figure(self.run_id, confusion, "confusion_matrix_val.png")
            self.has_model = True

        self.pending.add("the student model", log)

    def finish(self) -> str | None:
        """Wait for what is still pending while the server answers, never for one that fails (the
        driver repairs the run from Tune's record at the sweep's end); what was not stored, or None."""
        self.pending.flush(while_failing=False)
        self.pending.close()
        return describe(self.pending.unsaved()) or None
