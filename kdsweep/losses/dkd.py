"""Decoupled knowledge distillation (Zhao et al., CVPR 2022): target and non-target KL weighted apart."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdsweep.losses.base import LossParams, LossTerms, register_loss, require_teacher
from kdsweep.losses.standardize import soft_logits


def _dkd_log_probs(logits: Tensor, targets: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Log of the binary [p_target, 1 - p_target] (N, 2) and of the non-target softmax (N, C-1).

    The target column is removed by indexing rather than masked to -inf, so no
    -inf (and hence no 0 * inf = NaN in KL values or gradients) ever appears.
    With d = z_target - logsumexp(z_other), p_target = sigmoid(d), so
    log p_target = logsigmoid(d) and log(1 - p_target) = logsigmoid(-d)
    = logsumexp(z_other) - logsumexp(z): exact in log-space, never log(1 - p).
    """
    z = logits / temperature
    is_target = F.one_hot(targets, num_classes=z.shape[1]).bool()
    z_target = z[is_target]  # (N,): one True per row
    z_other = z[~is_target].reshape(z.shape[0], -1)
    d = z_target - torch.logsumexp(z_other, dim=1)
    log_binary = torch.stack([F.logsigmoid(d), F.logsigmoid(-d)], dim=1)
    return log_binary, F.log_softmax(z_other, dim=1)


@register_loss("dkd")
def dkd_terms(student_logits: Tensor, teacher_logits: Tensor | None, targets: Tensor, params: LossParams) -> LossTerms:
    """Decoupled KD (Zhao et al., CVPR 2022, as in mdistiller).

    total = CE + warmup * (alpha * TCKD + beta * NCKD) * T^2, where
      TCKD = KL(b_t || b_s) over the binary [p_target, 1 - p_target] at temperature T,
      NCKD = KL(p̂_t || p̂_s) over the softmax of the non-target logits at temperature T,
    both batchmean. Splitting the KL this way lets NCKD ("dark knowledge")
    be weighted independently of the teacher's confidence in the target.
    With params.standardize both KLs compare z-scored logits; CE keeps the raw ones.
    """
    teacher_logits = require_teacher(teacher_logits, "dkd")
    ce = F.cross_entropy(student_logits, targets)
    T = params.temperature
    log_b_s, log_other_s = _dkd_log_probs(soft_logits(student_logits, params), targets, T)
    log_b_t, log_other_t = _dkd_log_probs(soft_logits(teacher_logits, params), targets, T)
    tckd = F.kl_div(log_b_s, log_b_t, reduction="batchmean", log_target=True)
    nckd = F.kl_div(log_other_s, log_other_t, reduction="batchmean", log_target=True)
    # T^2 for the same gradient-scale reason as in soft_target_loss().
    kd = params.warmup * (params.alpha * tckd + params.beta * nckd) * T**2
    return LossTerms(total=ce + kd, ce=ce, kd=kd)


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    temperature: float,
    alpha: float,
    beta: float,
    warmup: float = 1.0,
) -> Tensor:
    """Total DKD loss; see dkd_terms()."""
    params = LossParams(temperature=temperature, alpha=alpha, beta=beta, warmup=warmup)
    return dkd_terms(student_logits, teacher_logits, targets, params).total


def dkd_warmup(epoch: int, warmup_epochs: int) -> float:
    """DKD's linear warm-up factor min(epoch / warmup_epochs, 1), epochs counted from 1.

    The distillation term starts small because a large early KD loss on a
    freshly initialised student destabilises training. warmup_epochs <= 0
    disables the warm-up (factor 1).
    """
    if warmup_epochs <= 0:
        return 1.0
    return min(epoch / warmup_epochs, 1.0)
