"""Distillation losses: classic KD (Hinton et al. 2015) and Decoupled KD (Zhao et al. 2022).

Pure tensor math; every loss works in log-space so that extreme logits give
finite values and finite gradients. Losses are registered by name so that a
search space can choose between them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class LossParams:
    """Hyper-parameters shared by all registered losses."""

    temperature: float
    alpha: float  # kd: weight of the soft term; dkd: weight of TCKD
    beta: float = 8.0  # dkd only: weight of NCKD
    warmup: float = 1.0  # dkd only: linear warm-up factor in [0, 1], see dkd_warmup()


@dataclass(frozen=True)
class LossTerms:
    """The back-propagated total plus its parts, kept separately for logging."""

    total: Tensor  # what is back-propagated
    ce: Tensor  # cross-entropy with the hard labels (unweighted)
    kd: Tensor  # kd: T^2 * KL; dkd: warmup * (alpha*TCKD + beta*NCKD) * T^2


LossFn = Callable[[Tensor, Tensor | None, Tensor, LossParams], LossTerms]

_LOSSES: dict[str, LossFn] = {}


def register_loss(name: str) -> Callable[[LossFn], LossFn]:
    """Decorator: make a loss selectable by ``name`` through get_loss()."""

    def decorator(fn: LossFn) -> LossFn:
        _LOSSES[name] = fn
        return fn

    return decorator


def get_loss(name: str) -> LossFn:
    """Look up a registered loss; an unknown name says what exists and what was probably meant."""
    try:
        return _LOSSES[name]
    except KeyError:
        choices = list_losses()
        message = f"unknown loss {name!r}; choose from: {', '.join(choices)}"
        close = difflib.get_close_matches(name, choices, n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        raise ValueError(message) from None


def list_losses() -> list[str]:
    """Names of all registered losses, sorted."""
    return sorted(_LOSSES)


def needs_teacher(name: str, params: LossParams) -> bool:
    """Whether the teacher must be run; only kd with alpha == 0 (plain CE) can skip it."""
    return not (name == "kd" and params.alpha == 0)


def _require_teacher(teacher_logits: Tensor | None, name: str) -> Tensor:
    if teacher_logits is None:
        raise ValueError(
            f"loss {name!r} needs teacher_logits with these parameters, got None "
            "(only kd with alpha=0 runs without a teacher)"
        )
    return teacher_logits


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
def kd_terms(
    student_logits: Tensor, teacher_logits: Tensor | None, targets: Tensor, params: LossParams
) -> LossTerms:
    """Hinton et al. 2015: total = alpha * T^2 * KL + (1 - alpha) * CE.

    alpha weighs the soft term: alpha=0 is plain CE (the teacher may be None
    and the kd term is 0), alpha=1 is pure soft-target training.
    """
    ce = F.cross_entropy(student_logits, targets)
    if params.alpha == 0:
        return LossTerms(total=ce, ce=ce, kd=ce.new_zeros(()))
    teacher_logits = _require_teacher(teacher_logits, "kd")
    kd = soft_target_loss(student_logits, teacher_logits, params.temperature)
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
def dkd_terms(
    student_logits: Tensor, teacher_logits: Tensor | None, targets: Tensor, params: LossParams
) -> LossTerms:
    """Decoupled KD (Zhao et al., CVPR 2022, as in mdistiller).

    total = CE + warmup * (alpha * TCKD + beta * NCKD) * T^2, where
      TCKD = KL(b_t || b_s) over the binary [p_target, 1 - p_target] at temperature T,
      NCKD = KL(p̂_t || p̂_s) over the softmax of the non-target logits at temperature T,
    both batchmean. Splitting the KL this way lets NCKD ("dark knowledge")
    be weighted independently of the teacher's confidence in the target.
    """
    teacher_logits = _require_teacher(teacher_logits, "dkd")
    ce = F.cross_entropy(student_logits, targets)
    T = params.temperature
    log_b_s, log_other_s = _dkd_log_probs(student_logits, targets, T)
    log_b_t, log_other_t = _dkd_log_probs(teacher_logits, targets, T)
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
