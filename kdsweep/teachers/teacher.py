"""A teacher as the sweep holds it: the module, what it was trained for, and where it came from."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class TeacherMeta:
    arch: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str
    test_accuracy: float
    seed: int


@dataclass
class Teacher:
    """Not what trials read logits from (that is a TeacherOutputs): the model itself, for logging and caching."""

    module: nn.Module
    meta: TeacherMeta
    source: str  # "trained:<path>", "cache:<path>" or "checkpoint:<path>": the file is its identity
    history: list[dict[str, float]] | None = None
