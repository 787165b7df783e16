"""Where the teacher comes from and how trials get its outputs: the validated `teacher:` section."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, field_validator, model_validator


class TeacherInput(BaseModel):
    """The preprocessing a teacher brought from elsewhere was trained with (`teacher.input`).

    Its inputs are converted to it from the students' (the dataset's statistics), so a teacher
    trained on other statistics, another size or another number of channels sees what it was
    trained on. Every field left out is the dataset's own; mean and std are on the pixel scale
    kdsweep loads the dataset at (0-1 for images, as torchvision's ToTensor).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: tuple[float, ...] | None = None
    std: tuple[PositiveFloat, ...] | None = None
    image_size: int | None = Field(default=None, gt=0)  # resized to it (bilinear)
    channels: Literal[1, 3] | None = None  # 1 <-> 3: gray repeated, or RGB to luma

    @model_validator(mode="after")
    def _one_value_per_channel(self) -> TeacherInput:
        counts = {len(values) for values in (self.mean, self.std) if values is not None}
        if len(counts | ({self.channels} if self.channels else set())) > 1:
            raise ValueError("mean, std and channels must agree on the number of channels")
        return self


class TeacherSpec(BaseModel):
    """Where the teacher comes from, and how to train it when it has to be trained."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: str = "resnet18"
    # A kdsweep teacher file, a state_dict (.pt/.pth/.safetensors, with arch), a TorchScript or an ONNX
    # file, or models:/NAME@ALIAS; otherwise train (or reuse). docs/teacher.md: bringing your teacher.
    checkpoint: str | None = None
    small_input_stem: bool | Literal["auto"] = "auto"  # which stem a state_dict's arch is built with (auto: by size)
    input: TeacherInput | None = None  # a brought teacher's own preprocessing; None: the dataset's
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
