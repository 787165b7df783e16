"""Classic knowledge distillation (Hinton et al. 2015): softened teacher targets plus the hard labels."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdsweep.losses.base import LossParams, LossTerms, register_loss, require_teacher
from kdsweep.losses.standardize import soft_logits


def soft_target_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes, averaged over the batch.

    Both sides go through log_softmax (log_target=True), so no probability is
    ever logged and extreme logits give no NaN/inf. "batchmean" is the true
    mean per-sample KL; "mean" would also divide by the number of classes.
    The T^2 factor keeps the soft-target gradients, which scale as 1/T^2,
    comparable in size to the CE gradients whatever the temperature.
    """
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2


@register_loss("kd")
def kd_terms(student_logits: Tensor, teacher_logits: Tensor | None, targets: Tensor, params: LossParams) -> LossTerms:
    """Hinton et al. 2015: total = alpha * T^2 * KL + (1 - alpha) * CE.

    alpha weighs the soft term: alpha=0 is plain CE (the teacher may be None
    and the kd term is 0), alpha=1 is pure soft-target training. With
    params.standardize the KL compares z-scored logits; CE keeps the raw ones.
    """
    ce = F.cross_entropy(student_logits, targets)
    if params.alpha == 0:
        return LossTerms(total=ce, ce=ce, kd=ce.new_zeros(()))
    teacher_logits = require_teacher(teacher_logits, "kd")
    kd = soft_target_loss(soft_logits(student_logits, params), soft_logits(teacher_logits, params), params.temperature)
    total = params.alpha * kd + (1 - params.alpha) * ce
    return LossTerms(total=total, ce=ce, kd=kd)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | None,
    targets: Tensor,
    temperature: float,
    alpha: float,
) -> Tensor:
    """Total classic KD loss; see kd_terms()."""
    params = LossParams(temperature=temperature, alpha=alpha)
    return kd_terms(student_logits, teacher_logits, targets, params).total
