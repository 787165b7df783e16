"""Where the teacher comes from and how trials get its outputs: the validated `teacher:` section."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TeacherSpec(BaseModel):
    """Where the teacher comes from, and how to train it when it has to be trained."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: str = "resnet18"
    checkpoint: str | None = None  # a kdsweep teacher file or models:/NAME@ALIAS; otherwise train (or reuse)
    weights: str | bool | None = (
        None  # start training from pretrained weights: true or a name, as a trial's `pretrained`
    )
    epochs: int = Field(default=10, gt=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # as a trial's
    lr: float = Field(default=0.05, gt=0)
    batch_size: int = Field(default=64, gt=0)
    seed: int = 0
    cache_dir: str | None = None  # trained teachers are kept here, keyed by dataset/arch/seed/epochs
    mode: Literal["online", "cached", "off"] = "cached"  # cached: logits computed once per sweep; off: alpha=0 only
    cache_limit_mb: int = Field(default=1024, gt=0)  # a bigger cache holds fewer view epochs, or falls back to online

    @field_validator("mode", mode="before")
    @classmethod
    def _bare_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` (and `--set teacher.mode=off`) as false
