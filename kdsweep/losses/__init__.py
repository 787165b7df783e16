"""Distillation losses, one per file: classic KD (Hinton et al. 2015), Decoupled KD (Zhao et al. 2022), DIST
(Huang et al. 2022); any of them on standardized logits (Sun et al. 2024).

Pure tensor math; extreme logits give finite values and finite gradients (kd and dkd work in
log-space, dist takes no logarithm at all). Losses are registered by name (`base.register_loss`)
so that a search space can choose between them.
"""

from kdsweep.losses.base import (
    LossFn,
    LossParams,
    LossTerms,
    get_loss,
    list_losses,
    needs_teacher,
    register_loss,
)
from kdsweep.losses.dist import dist_terms, pearson_distance
from kdsweep.losses.dkd import dkd_loss, dkd_terms, dkd_warmup
from kdsweep.losses.kd import kd_loss, kd_terms, soft_target_loss
from kdsweep.losses.standardize import soft_logits, standardize

__all__ = [
    "LossFn",
    "LossParams",
    "LossTerms",
    "dist_terms",
    "dkd_loss",
    "dkd_terms",
    "dkd_warmup",
    "get_loss",
    "kd_loss",
    "kd_terms",
    "list_losses",
    "needs_teacher",
    "pearson_distance",
    "register_loss",
    "soft_logits",
    "soft_target_loss",
    "standardize",
]
