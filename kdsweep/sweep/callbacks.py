"""Tune tells only the driver how a trial ended: close its MLflow run with that outcome."""

from __future__ import annotations

from pathlib import Path

from ray import tune

from kdsweep.errors import one_line
from kdsweep.outcome import trial_outcome
from kdsweep.tracking.runs import SweepTracker


class CloseRuns(tune.Callback):
    def __init__(self, tracker: SweepTracker, epochs: int) -> None:
        self.tracker, self.epochs = tracker, epochs

    def _run_id(self, trial) -> str | None:
        return (trial.last_result or {}).get("mlflow_run_id") or self.tracker.run_for_trial(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        run_id = self._run_id(trial)
        if run_id:
            self.tracker.close_trial(run_id, trial_outcome(trial.last_result or {}, False, self.epochs))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        run_id = self._run_id(trial)
        if run_id:
            error_file = trial.error_file
            error = Path(error_file).read_text() if error_file and Path(error_file).exists() else "error"
            self.tracker.close_trial(run_id, trial_outcome({}, True, self.epochs), one_line(error, last=True))
