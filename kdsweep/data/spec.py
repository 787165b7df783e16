"""What data a sweep trains on: one validated, frozen section of the search space (`data:`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DataSpec(BaseModel):
    """What to load. `name` is a registered dataset or a directory in ImageFolder layout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "digits"
    seed: int = 0
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)  # only for datasets without their own test split
    root: str | None = None  # download/cache directory for torchvision datasets
    image_size: int = Field(default=32, gt=0)  # imagefolder resize and synthetic size
    channels: int = Field(default=3, gt=0)  # synthetic only
    num_classes: int = Field(default=10, gt=1)  # synthetic only
    num_samples: int = Field(default=512, gt=0)  # synthetic only
    memory_limit_mb: int = Field(default=2048, ge=0)  # larger ImageFolders stream from disk (0: always stream)
    num_workers: int = Field(default=2, ge=0)  # streaming DataLoader workers
