"""How a trial ended, decided in one place for the leaderboard, MLflow and selection."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

TAG_OUTCOME = "kdsweep.outcome"


class Outcome(str, Enum):
    FINISHED = "FINISHED"  # ran its whole budget
    STOPPED = "STOPPED"  # cut short by the scheduler (ASHA): not a failure, but no model to ship
    DIVERGED = "DIVERGED"  # a non-finite loss: an outcome of its hyperparameters, never retried
    ERROR = "ERROR"  # failed for good after its retries

    def __str__(self) -> str:
        return self.value


# What MLflow records for each outcome (its run statuses are fewer); the outcome itself goes in a tag.
# A trial ASHA stopped ended as planned: FINISHED, not KILLED, which MLflow's UI draws as a failure
# (the same red icon as FAILED). KILLED is left for a trial a user interrupted.
MLFLOW_STATUS = {
    Outcome.FINISHED: "FINISHED",
    Outcome.DIVERGED: "FINISHED",
    Outcome.STOPPED: "FINISHED",
    Outcome.ERROR: "FAILED",
}


def trial_outcome(last: Mapping[str, Any], errored: bool, epochs: int) -> Outcome:
    """From a trial's last report, whether it errored, and the sweep's epoch budget."""
    if errored:
        return Outcome.ERROR
    if last.get("diverged"):
        return Outcome.DIVERGED
    return Outcome.FINISHED if last.get("epoch", 0) >= epochs else Outcome.STOPPED
