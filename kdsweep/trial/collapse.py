"""A trial that has learned nothing: validation accuracy at chance level for two epochs once its
warm-up is over.

DKD at a high temperature without warm-up, or a too-large learning rate, can leave a student
predicting one class; ASHA would rank it last and let it run to its first rung, and the leaderboard
would show it as a student like any other. Such a trial ends, COLLAPSED, with its reason: the rest of
its budget is better spent on another.
"""

from __future__ import annotations

import math

import torch

from kdsweep.trial.config import TrialConfig

SIGMAS = 3.0  # how far above a guess's accuracy still counts as a guess
# Epochs at chance in a row that make a collapse. One is not enough: on glyphs (47 classes) a resnet20
# distilled at T = 4 was at chance at its 2nd epoch in a sweep (teacher logits from the float16 cache)
# and at 0.21, then 0.70 at its 5th, with the teacher run online; such students start slowly.
EPOCHS_AT_CHANCE = 2


def chance_level(labels: torch.Tensor) -> float:
    """The accuracy of always answering the most frequent class, plus three standard deviations of a
    guess at that rate on this many samples: at or below it nothing measurable was learned."""
    counts = torch.bincount(labels)
    n, p = len(labels), float(counts.max()) / len(labels)
    return p + SIGMAS * math.sqrt(p * (1 - p) / n)


def judged_from(config: TrialConfig) -> int:
    """The first epoch whose accuracy counts: after its DKD warm-up, and never its first epoch."""
    return max(2, config.dkd_warmup_epochs + 1)


def has_collapsed(accuracies: dict[int, float], config: TrialConfig, chance: float) -> bool:
    """Validation accuracy by epoch (this run of the trial's) at or below `chance` for the last
    EPOCHS_AT_CHANCE epochs, all of them judged (see `judged_from`)."""
    last = max(accuracies, default=0)
    recent = range(last - EPOCHS_AT_CHANCE + 1, last + 1)
    return recent.start >= judged_from(config) and all(accuracies.get(e, math.inf) <= chance for e in recent)
