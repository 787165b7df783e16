"""One trial: TrialConfig -> data, student, loss, training loop, evaluation, a report every epoch."""

from kdsweep.trial.config import DISTILLATION_FIELDS, NOT_TRAINING, TrialConfig
from kdsweep.trial.device import autocast, model_device, pick_device, place
from kdsweep.trial.evaluate import evaluate, predict
from kdsweep.trial.loop import Report, TrialResult, reported_metrics, run_trial
from kdsweep.trial.outputs import TeacherOutputs

__all__ = [
    "DISTILLATION_FIELDS",
    "NOT_TRAINING",
    "Report",
    "TeacherOutputs",
    "TrialConfig",
    "TrialResult",
    "autocast",
    "evaluate",
    "model_device",
    "pick_device",
    "place",
    "predict",
    "reported_metrics",
    "run_trial",
]
