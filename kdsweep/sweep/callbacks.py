"""Tune tells only the driver how a trial ended: close its MLflow run with that outcome, and at the end
make every run hold what its trial reported, whatever happened to the tracking server or the driver.

Tune pickles its callbacks into the experiment state (`tuner.pkl`, possibly on shared storage such as
S3) and restores them with `--resume`: so the callback holds no tracking URI, server address or
credential, only the sweep's name; whatever closes runs is the current invocation's `RunCloser`,
which the driver registers under that name before it tunes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS

from kdsweep.data import Dataset
from kdsweep.errors import one_line
from kdsweep.outcome import Outcome, outcome_of, trial_error
from kdsweep.space import TrialTemplate
from kdsweep.sweep.baselines import trial_config
from kdsweep.sweep.trainable import STATE_FILE, log_final_student, open_trial_run
from kdsweep.tracking.pending import Pending
from kdsweep.tracking.runs import SweepTracker, TrackingContext

_CLOSERS: dict[str, RunCloser] = {}  # sweep name -> this process's closer; never pickled
TRIAL_EXTRAS = ("node_id", "mlflow_run_id", "tracking_unsaved", "trial_id", "done")  # reported, not metrics


class RunCloser:
    """Closes trials' runs with their outcomes, and repairs them at the end: a run the trial could not
    create or finish (tracking server away, driver killed, sweep interrupted) gets the epochs Tune
    recorded, the student from the trial's last checkpoint, and its outcome."""

    def __init__(
        self,
        tracker: SweepTracker,
        tracking: TrackingContext,
        template: TrialTemplate,
        epochs: int,
        data: Dataset,
        log=print,
    ) -> None:
        self.tracker, self.tracking, self.data = tracker, tracking, data
        self.template, self.epochs = template, epochs  # the sweep's, and its epoch budget
        # On a thread of its own: Tune's event loop, which every trial's report waits on, never waits for MLflow.
        self.pending, self.log = Pending(log, background=True, wake=tracker.server.moved), log
        # Each trial's MLflow run, once reconciled: a trial reports its run id only once its run exists, and the
        # run is opened in the background, so a trial stopped after a fast first epoch may never have reported it.
        self.run_ids: dict[str, str] = {}

    def register(self, sweep: str) -> None:
        _CLOSERS[sweep] = self

    def close(self, trial, outcome: Outcome) -> None:
        self.pending.add(f"the outcome of trial {trial.trial_id}", lambda: self._close(trial, outcome))

    def _close(self, trial, outcome: Outcome, run_id: str | None = None) -> None:
        run_id = run_id or (trial.last_result or {}).get("mlflow_run_id") or self.tracker.run_for_trial(trial.trial_id)
        if run_id:  # a trial that never started logged nothing
            error = (trial_error(trial) or "error") if outcome is Outcome.ERROR else None
            self.tracker.close_trial(run_id, outcome, error)

    def reconcile(self, trials, results: dict[str, Any]) -> dict[str, str]:
        """Every trial's run complete and closed; waits up to the tracking patience for a server that is
        away. `results`: Tune's recorded results per trial id. Returns what MLflow still lacks, per trial."""
        runs: dict[str, tuple] = {}
        self.pending.add("the sweep's runs", lambda: runs.update(self.tracker.trial_runs()))
        for trial in trials:
            self.pending.add(f"trial {trial.trial_id}", lambda t=trial: self._repair(t, runs, results))
        self.pending.flush(self.tracking.patience_s)
        self.pending.close()
        self.run_ids.update({trial_id: found[0] for trial_id, found in runs.items() if found[0]})
        unsaved = self.pending.unsaved()
        return {
            t.trial_id: "; ".join(
                [
                    (t.last_result or {}).get("tracking_unsaved") or "what it reported while the server was away",
                    "its final status",
                ]
            )
            for t in trials
            if f"trial {t.trial_id}" in unsaved and t.last_result
        }

    def _repair(self, trial, runs: dict[str, tuple], results: dict[str, Any]) -> None:
        last = trial.last_result or {}
        outcome = outcome_of(trial, self.epochs)
        run_id, status, logged, epoch, has_model = runs.get(trial.trial_id, (None, None, None, 0, False))
        wants_model = outcome is Outcome.FINISHED
        complete = epoch >= last.get("epoch", 0) and (has_model or not wants_model)
        if run_id and complete:
            if status == "RUNNING" or logged != str(outcome):
                self._close(trial, outcome, run_id)
            return
        if not last:
            return  # never reported an epoch: nothing to record
        config = trial_config(self.template, trial.config or {})
        tracker = open_trial_run(self.tracking, trial.trial_id, trial.config or {}, config, self.data)
        frame = results.get(trial.trial_id)
        keys = [k for k in last if k not in AUTO_RESULT_KEYS and k not in TRIAL_EXTRAS and not k.startswith("config/")]
        for _, row in frame.iterrows() if frame is not None else []:
            tracker.log_epoch({k: row[k] for k in keys if k in row and _finite(row[k])})  # epochs it has are skipped
        weights = self._last_student(trial) if wants_model and trial.checkpoint is not None else None
        if weights is not None:
            tracker.pending.flush()  # the run must be open before it is asked whether it has the model
            if not tracker.has_model:
                log_final_student(tracker, config, weights, self.data)
        unsaved = tracker.finish()
        if unsaved:
            raise ConnectionError(f"MLflow still lacks {unsaved}")  # keeps this repair pending
        self.run_ids[trial.trial_id] = tracker.run_id
        self._close(trial, outcome, tracker.run_id)

    def _last_student(self, trial) -> dict | None:
        """The student of the trial's last checkpoint, on the CPU (saved on a GPU node, read here on a head
        that may have none); None, said at once, when it cannot be read: no tracking server coming back
        would fix that, so it must not wait in the pending queue as if MLflow were away."""
        try:
            with trial.checkpoint.as_directory() as directory:
                return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)["student"]
        except Exception as error:  # torch's and pickle's errors, a missing file: whatever it is, not MLflow's
            self.log(f"trial {trial.trial_id}: its last checkpoint cannot be read ({one_line(error)}); no model logged")
            return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class CloseRuns(tune.Callback):
    def __init__(self, sweep: str) -> None:
        self.sweep = sweep

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        closer = _CLOSERS[self.sweep]
        closer.close(trial, outcome_of(trial, closer.epochs, ended=True))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        closer = _CLOSERS[self.sweep]
        closer.close(trial, outcome_of(trial, closer.epochs, errored=True))
