"""What every loss shares: its parameters, the terms it returns, and the registry by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from kdsweep.registry import Registry


@dataclass(frozen=True)
class LossParams:
    """Hyper-parameters shared by all registered losses."""

    temperature: float
    # Our alpha always weighs the (first) soft term; papers name their weights differently:
    alpha: float  # kd: weight of the soft term; dkd: weight of TCKD (DKD's alpha); dist: inter-class (DIST's beta)
    beta: float = 8.0  # dkd: weight of NCKD (DKD's beta); dist: intra-class (DIST's gamma); unused by kd
    warmup: float = 1.0  # dkd only: linear warm-up factor in [0, 1], see dkd_warmup()
    standardize: bool = False  # every loss: z-score the logits of the soft term, see standardize.py


@dataclass(frozen=True)
class LossTerms:
    """The back-propagated total plus its parts, kept separately for logging."""

    total: Tensor  # what is back-propagated
    ce: Tensor  # cross-entropy with the hard labels (unweighted)
    kd: Tensor  # kd: T^2 * KL; dkd: warmup * (alpha*TCKD + beta*NCKD) * T^2; dist: (alpha*inter + beta*intra) * T^2


LossFn = Callable[[Tensor, Tensor | None, Tensor, LossParams], LossTerms]

_LOSSES: Registry[LossFn] = Registry("loss")


def register_loss(name: str) -> Callable[[LossFn], LossFn]:
    """Decorator: make a loss selectable by ``name`` through get_loss()."""
    return _LOSSES.register(name)


def get_loss(name: str) -> LossFn:
    """Look up a registered loss; an unknown name says what exists and what was probably meant."""
    return _LOSSES.get(name)


def list_losses() -> list[str]:
    """Names of all registered losses, sorted."""
    return _LOSSES.names()


def needs_teacher(name: str, params: LossParams) -> bool:
    """Whether the teacher must be run; only kd with alpha == 0 (plain CE) can skip it."""
    return not (name == "kd" and params.alpha == 0)


def require_teacher(teacher_logits: Tensor | None, name: str) -> Tensor:
    if teacher_logits is None:
        raise ValueError(
            f"loss {name!r} needs teacher_logits with these parameters, got None "
            "(only kd with alpha=0 runs without a teacher)"
        )
    return teacher_logits
