"""How a trial ended, decided in one place for the leaderboard, MLflow and selection."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from kdsweep.errors import one_line

TAG_OUTCOME = "kdsweep.outcome"


class Outcome(str, Enum):
    FINISHED = "FINISHED"  # ran its whole budget
    STOPPED = "STOPPED"  # cut short by the scheduler (ASHA): not a failure, but no model to ship
    DIVERGED = "DIVERGED"  # a non-finite loss: an outcome of its hyperparameters, never retried
    COLLAPSED = "COLLAPSED"  # val accuracy at chance level after its warm-up: ended, never retried
    ERROR = "ERROR"  # failed for good after its retries
    INTERRUPTED = "INTERRUPTED"  # the sweep was stopped (Ctrl-C) or lost its driver before it ended: --resume
    INFEASIBLE = "INFEASIBLE"  # its student is over the deploy budget: never trained, never retried, never champion

    def __str__(self) -> str:
        return self.value


# What MLflow records for each outcome (its run statuses are fewer); the outcome itself goes in a tag.
# A trial ASHA stopped ended as planned: FINISHED, not KILLED, which MLflow's UI draws as a failure
# (the same red icon as FAILED). KILLED is left for a trial a user interrupted.
MLFLOW_STATUS = {
    Outcome.FINISHED: "FINISHED",
    Outcome.DIVERGED: "FINISHED",
    Outcome.COLLAPSED: "FINISHED",
    Outcome.STOPPED: "FINISHED",
    Outcome.ERROR: "FAILED",
    Outcome.INTERRUPTED: "KILLED",
    Outcome.INFEASIBLE: "FINISHED",
}


def trial_outcome(last: Mapping[str, Any], errored: bool, epochs: int, ended: bool = True) -> Outcome:
    """From a trial's last report, whether it errored, the sweep's epoch budget, and whether Tune ended it
    (a trial still running or pending when the sweep stopped did not end: it was interrupted)."""
    if errored:
        return Outcome.ERROR
    if not ended:
        return Outcome.INTERRUPTED
    if last.get("diverged"):
        return Outcome.DIVERGED
    if last.get("collapsed"):
        return Outcome.COLLAPSED
    return Outcome.FINISHED if last.get("epoch", 0) >= epochs else Outcome.STOPPED


# Tune's statuses of a trial that will not run again; any other (PENDING, RUNNING, PAUSED) after the
# sweep returned means the sweep was interrupted before it.
ENDED = ("TERMINATED", "ERROR")


def outcome_of(trial, epochs: int, errored: bool = False, ended: bool = False) -> Outcome:
    """A Tune trial's outcome, from its status and last report. `errored`/`ended`: Tune is reporting that it
    failed or completed (in those callbacks its status is not updated yet)."""
    errored = errored or trial.status == "ERROR"
    return trial_outcome(trial.last_result or {}, errored, epochs, ended=ended or errored or trial.status in ENDED)


def trial_error(trial) -> str | None:
    """The error a Tune trial failed with, as one line (its traceback's last), or None."""
    path = Path(trial.error_file) if trial.error_file else None
    return one_line(path.read_text(), last=True) if path and path.exists() else None


def ending_reason(last: Mapping[str, Any]) -> str | None:
    """Why a trial ended itself (DIVERGED, COLLAPSED: the loop checks train_loss and val_accuracy), for its
    MLflow run and the leaderboard; None for any other trial."""
    if last.get("diverged"):
        return f"non-finite train_loss at epoch {int(last.get('epoch', 0))}"
    if last.get("collapsed"):
        return (
            f"val_accuracy {last.get('val_accuracy', float('nan')):.4f} at chance level "
            f"(<= {last.get('chance_level', float('nan')):.4f}) at epochs {int(last.get('epoch', 0)) - 1}-"
            f"{int(last.get('epoch', 0))}, after its warm-up"
        )
    return None
