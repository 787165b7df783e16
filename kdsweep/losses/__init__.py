"""Distillation losses: classic KD (Hinton et al. 2015) and Decoupled KD (Zhao et al. 2022), one per file.

Pure tensor math; every loss works in log-space so that extreme logits give finite values and
finite gradients. Losses are registered by name (`base.register_loss`) so that a search space can
choose between them.
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
from kdsweep.losses.dkd import dkd_loss, dkd_terms, dkd_warmup
from kdsweep.losses.kd import kd_loss, kd_terms, soft_target_loss

__all__ = [
    "LossFn",
    "LossParams",
    "LossTerms",
    "dkd_loss",
    "dkd_terms",
    "dkd_warmup",
    "get_loss",
    "kd_loss",
    "kd_terms",
    "list_losses",
    "needs_teacher",
    "register_loss",
    "soft_target_loss",
]
