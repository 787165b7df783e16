"""A teacher as the sweep holds it: the module, what it was trained on and how, and where it came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict
from torch import nn


class TeacherMeta(BaseModel):
    """Plain metadata, stored in the teacher file and on its MLflow run; validated when read back.

    `input_shape`, `mean` and `std` are the teacher's own input (`teacher.input` for one brought from
    elsewhere): its module is fed the dataset's images converted to it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str
    test_accuracy: float
    seed: int
    data_digest: str | None = None  # Dataset.digest of the splits it was trained on; None: not known
    # How it was trained (None for a teacher that came from elsewhere): part of what makes it this teacher.
    weights: str | bool | None = None
    epochs: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    batch_size: int | None = None


@dataclass
class Teacher:
    """Not what trials read logits from (that is a TeacherOutputs): the model itself, for logging and caching."""

    module: nn.Module
    meta: TeacherMeta
    source: str  # "trained", "trained:<path>", "cache:<path>" or "checkpoint:<path or URI>": its identity
    history: list[dict[str, float]] | None = None
    # What the module runs on: a PyTorch module (a TorchScript file's is one too), or ONNX Runtime (the
    # logit cache only: it cannot run online, and is logged to MLflow as its file).
    form: Literal["pytorch", "torchscript", "onnx"] = "pytorch"
