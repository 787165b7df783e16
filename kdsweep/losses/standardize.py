"""Logit standardization (Sun et al., CVPR 2024): z-score each sample's logits before the temperature softmax.

A shared temperature asks the student to match the teacher's logit range as well as its logit
relations; z-scoring each side separately removes range and offset, so only the relations are
distilled. It feeds the soft term only: cross-entropy keeps the raw student logits.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kdsweep.losses.base import LossParams

# Added to the standard deviation, as in the paper's code (sunshangquan/logit-standardization-KD).
STD_EPS = 1e-7


def standardize(logits: Tensor) -> Tensor:
    """(z - mean) / (std + 1e-7) over the classes of each row, std unbiased (torch.std's default, as in the paper).

    The variance is clamped to the dtype's smallest normal number before its square root: for
    all-equal logits the square root's gradient would otherwise be 1/0, times 0, = NaN. The value
    changes by at most 1e-19 in the denominator, far below the 1e-7 added to it. A constant row
    still has gradients of order 1/1e-7, as in the paper's code: finite, large, rare in practice.
    """
    centered = logits - logits.mean(dim=1, keepdim=True)
    variance = logits.var(dim=1, keepdim=True)
    std = variance.clamp_min(torch.finfo(variance.dtype).tiny).sqrt()
    return centered / (std + STD_EPS)


def soft_logits(logits: Tensor, params: LossParams) -> Tensor:
    """The logits a soft (teacher-matching) term takes: standardized when params.standardize."""
    return standardize(logits) if params.standardize else logits
