"""A trial that has learned nothing: validation accuracy at chance level once its warm-up is over.

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


def chance_level(labels: torch.Tensor) -> float:
    """The accuracy of always answering the most frequent class, plus three standard deviations of a
    guess at that rate on this many samples: at or below it nothing measurable was learned."""
    counts = torch.bincount(labels)
    n, p = len(labels), float(counts.max()) / len(labels)
    return p + SIGMAS * math.sqrt(p * (1 - p) / n)


def judged_from(config: TrialConfig) -> int:
    """The first epoch a trial can collapse at: after its DKD warm-up, and never its first epoch."""
    return max(2, config.dkd_warmup_epochs + 1)
