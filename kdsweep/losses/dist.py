"""DIST (Huang et al., NeurIPS 2022): match the teacher's class-probability relations, not its probabilities.

With a much stronger teacher an exact KL match is too hard a target; DIST asks only that the
student's probabilities be linearly correlated with the teacher's, across the classes of each
sample (inter-class) and across the samples of the batch for each class (intra-class).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdsweep.losses.base import LossParams, LossTerms, register_loss, require_teacher
from kdsweep.losses.standardize import soft_logits

# In the denominator of the cosine, as in the official code (hunto/DIST_KD).
COSINE_EPS = 1e-8


def pearson_distance(a: Tensor, b: Tensor) -> Tensor:
    """1 - Pearson correlation between the rows of a and b, averaged over the rows.

    eps sits outside the product of norms, as in the official code: a constant row (all-equal
    probabilities) has correlation 0, not NaN, and the norm's gradient at 0 is defined as 0. Its
    gradient is then the other row over eps: finite, but of order 1e7 (official behaviour, kept).
    """
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    correlation = (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + COSINE_EPS)
    return 1 - correlation.mean()


@register_loss("dist")
def dist_terms(student_logits: Tensor, teacher_logits: Tensor | None, targets: Tensor, params: LossParams) -> LossTerms:
    """DIST: total = CE + (alpha * inter + beta * intra) * T^2, where with p = softmax(z / T)
      inter = pearson_distance(p_s, p_t): per sample, over classes, averaged over the batch,
      intra = pearson_distance(p_s^T, p_t^T): per class, over the batch, averaged over classes.

    alpha and beta are the paper's beta and gamma (both 1 in the paper). CE has weight 1, as in
    the paper and in dkd: the soft terms are added to it, not traded against it. No warm-up
    (params.warmup is dkd's). intra is a batch statistic: it needs the teacher's logits of the
    very samples of the student's batch, and with a batch of one it is the constant 1.
    """
    teacher_logits = require_teacher(teacher_logits, "dist")
    ce = F.cross_entropy(student_logits, targets)
    T = params.temperature
    p_s = F.softmax(soft_logits(student_logits, params) / T, dim=1)
    p_t = F.softmax(soft_logits(teacher_logits, params) / T, dim=1)
    inter = pearson_distance(p_s, p_t)
    intra = pearson_distance(p_s.T, p_t.T)
    kd = (params.alpha * inter + params.beta * intra) * T**2
    return LossTerms(total=ce + kd, ce=ce, kd=kd)
