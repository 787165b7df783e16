"""Everything one trial needs, validated once where it enters (the Tune boundary, a command's flags)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kdsweep.losses import LossParams, get_loss, needs_teacher

# What distillation adds to training a student. Its baseline (the same student trained from scratch)
# has these at their defaults and alpha = 0: no teacher.
DISTILLATION_FIELDS = ("teacher", "loss", "temperature", "alpha", "beta", "dkd_warmup_epochs", "standardize")
# Settings that do not change what a trial learns: two trials that differ only in them train alike.
NOT_TRAINING = ("num_threads", "measure_latency")


class TrialConfig(BaseModel):
    """The keys of a Tune config. Frozen: nothing downstream changes or re-validates it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    student: str = "resnet8"
    width: int | None = Field(default=None, gt=0)  # width-configurable students only
    # Pretrained weights to start from: true for the model's default (torchvision's, timm's), or their name
    # (torchvision's IMAGENET1K_V1, a timm tag such as lamb_in1k).
    pretrained: str | bool | None = None
    teacher: str | None = None  # in a sweep: which of its teachers (by name) this trial distils from
    loss: str = "kd"  # a registered loss (kdsweep.losses)
    temperature: float = Field(default=4.0, gt=0)
    # Loss weights as in kdsweep.losses.LossParams; the defaults are kd's alpha and dkd's beta (DIST uses 1 and 1).
    alpha: float = Field(default=0.9, ge=0)  # kd: weight of the soft term, <= 1; dkd: TCKD; dist: inter-class
    beta: float = Field(default=8.0, ge=0)  # dkd: NCKD weight; dist: intra-class weight
    dkd_warmup_epochs: int = Field(default=0, ge=0)
    standardize: bool = False  # z-score the logits of every loss's soft term (Sun et al. 2024)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(default=0.05, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    step_size: int = Field(default=30, gt=0)  # step schedule: epochs between decays
    gamma: float = Field(default=0.1, gt=0, le=1)
    batch_size: int = Field(default=64, gt=0)
    epochs: int = Field(default=10, gt=0)
    seed: int = 0
    num_threads: int | None = Field(default=None, gt=0)  # default: the CPUs this process may use
    measure_latency: bool = True
    stop_at_chance: bool = True  # end the trial, COLLAPSED, when val accuracy is at chance after warm-up

    @field_validator("loss")
    @classmethod
    def _registered_loss(cls, name: str) -> str:
        get_loss(name)  # the registry's own error: what exists, what was meant
        return name

    @model_validator(mode="after")
    def _alpha_range(self) -> TrialConfig:
        if self.loss == "kd" and self.alpha > 1:
            raise ValueError("alpha: for loss 'kd' alpha is the soft-term weight and must be in [0, 1]")
        return self

    @property
    def loss_params(self) -> LossParams:
        """The loss's parameters at full strength (the trial loop sets dkd's warm-up per epoch)."""
        return LossParams(temperature=self.temperature, alpha=self.alpha, beta=self.beta, standardize=self.standardize)

    def scratch(self) -> TrialConfig:
        """The same student with the same training, without the teacher: its baseline."""
        kept = {k: v for k, v in self.model_dump(exclude_unset=True).items() if k not in DISTILLATION_FIELDS}
        return TrialConfig.model_validate({**kept, "alpha": 0.0})

    @property
    def needs_teacher(self) -> bool:
        return needs_teacher(self.loss, self.loss_params)
