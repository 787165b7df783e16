"""What the teacher bought a student: its accuracy against the same student trained from scratch.

    kd_gain    = accuracy - baseline
    gap_closed = (accuracy - baseline) / (teacher - baseline)

both on the validation split and at the same epoch: a trial that ASHA stopped at epoch 3 is compared
with its baseline's epoch 3, not with a baseline that trained three times as long. gap_closed is 1 when
the student matches the teacher, 0 when distillation did nothing, negative when it hurt. When the
teacher is no better than the baseline (by less than one validation sample) the gap is not a number
worth dividing by: gap_closed is undefined and the comparison says so.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gain:
    epoch: int  # where the trial and its baseline are compared
    baseline: float  # the baseline's val_accuracy at that epoch
    kd_gain: float
    gap_closed: float | None  # None: see `note`
    note: str | None = None


def gain(accuracy: float, baseline: float, teacher_accuracy: float, resolution: float, epoch: int) -> Gain:
    """`resolution`: one validation sample's share of the accuracy (1 / its size)."""
    kd_gain = accuracy - baseline
    if teacher_accuracy - baseline < resolution:
        note = f"teacher ({teacher_accuracy:.4f}) no better than scratch ({baseline:.4f}): no gap to close"
        return Gain(epoch, baseline, kd_gain, None, note)
    return Gain(epoch, baseline, kd_gain, kd_gain / (teacher_accuracy - baseline))


def versus_baseline(
    history: dict[int, float], accuracy: float, epoch: int, teacher_accuracy: float, resolution: float
) -> Gain | str:
    """The trial's `accuracy` at `epoch` against its baseline's `history` (val_accuracy by epoch);
    why not, when it cannot be compared."""
    if epoch not in history:
        reached = max(history, default=0)
        return f"its baseline reached epoch {reached}, not {epoch}"
    return gain(accuracy, history[epoch], teacher_accuracy, resolution, epoch)
