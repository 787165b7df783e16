"""Prepare the teacher once: load a checkpoint, or train one and keep it for later sweeps.

A teacher is trained by the very trial function the students use (alpha=0: plain cross-entropy),
so there is one training loop in kdsweep. Checkpoints are a state dict plus plain metadata and are
read with `weights_only=True`: a file carrying a pickled payload is refused, never executed.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from kdsweep.data import Dataset
from kdsweep.distill import TrialConfig, evaluate, pick_device, run_trial
from kdsweep.errors import ConfigError
from kdsweep.models import create_model


class TeacherSpec(BaseModel):
    """Where the teacher comes from, and how to train it when it has to be trained."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: str = "resnet18"
    checkpoint: str | None = None  # a kdsweep teacher file; otherwise train (or reuse a cached one)
    epochs: int = Field(default=10, gt=0)
    optimizer: str = "sgd"
    lr: float = Field(default=0.05, gt=0)
    batch_size: int = Field(default=64, gt=0)
    seed: int = 0
    cache_dir: str | None = None  # trained teachers are kept here, keyed by dataset/arch/seed/epochs


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
    module: nn.Module
    meta: TeacherMeta
    source: str  # "trained", "cache:<path>" or "checkpoint:<path>"
    history: list[dict[str, float]] | None = None


def default_cache_dir() -> Path:
    return Path(os.environ.get("KDSWEEP_CACHE", Path.home() / ".cache" / "kdsweep" / "teachers"))


def cache_path(spec: TeacherSpec, data: Dataset) -> Path:
    dataset = data.name if "/" not in data.name else "folder-" + hashlib.sha1(data.name.encode()).hexdigest()[:10]
    root = Path(spec.cache_dir) if spec.cache_dir else default_cache_dir()
    return root / f"{dataset}-{spec.arch}-seed{spec.seed}-data{data.seed}-e{spec.epochs}.pt"


def prepare_teacher(spec: TeacherSpec, data: Dataset, log=print) -> Teacher:
    """The sweep's teacher: from `spec.checkpoint`, from the cache, or trained now (and cached)."""
    if spec.checkpoint:
        module, meta = load_teacher(spec.checkpoint, data)
        return Teacher(module, meta, f"checkpoint:{spec.checkpoint}")
    path = cache_path(spec, data)
    if path.exists():
        module, meta = load_teacher(str(path), data)
        log(f"teacher: reusing {spec.arch} trained earlier on {data.name} ({path})")
        return Teacher(module, meta, f"cache:{path}")
    teacher = train_teacher(spec, data, log)
    save_teacher(path, teacher.module, teacher.meta)
    log(f"teacher: saved to {path} (reused by later sweeps on this dataset)")
    return teacher


def train_teacher(spec: TeacherSpec, data: Dataset, log=print) -> Teacher:
    config = TrialConfig(
        data=_data_spec_of(data),
        student=spec.arch,
        alpha=0.0,
        optimizer=spec.optimizer,
        lr=spec.lr,
        batch_size=spec.batch_size,
        epochs=spec.epochs,
        seed=spec.seed,
        measure_latency=False,
    )

    def progress(metrics: dict[str, float], state) -> None:
        log(
            f"teacher {spec.arch} epoch {metrics['epoch']:>3}/{spec.epochs}: train_loss {metrics['train_loss']:.4f}"
            f"  val_accuracy {metrics['val_accuracy']:.4f}  ({metrics['epoch_seconds']:.1f}s)"
        )

    result = run_trial(config, report=progress, data=data)
    test_accuracy = evaluate(result.student, data, "test", pick_device())["test_accuracy"]
    log(f"teacher {spec.arch}: test_accuracy {test_accuracy:.4f}")
    meta = TeacherMeta(spec.arch, data.num_classes, data.input_shape, data.mean, data.std, data.name, test_accuracy, spec.seed)
    return Teacher(result.student.cpu().eval(), meta, "trained", result.history)


def _data_spec_of(data: Dataset):
    from kdsweep.data import DataSpec

    # The dataset object is passed to run_trial directly; this spec only records what it is.
    return DataSpec(name=data.name, seed=data.seed)


def save_teacher(path: Path, module: nn.Module, meta: TeacherMeta) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": "kdsweep-teacher/1", "meta": asdict(meta), "state_dict": module.state_dict()}
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a concurrent sweep never reads half a file


def load_teacher(path: str, data: Dataset) -> tuple[nn.Module, TeacherMeta]:
    """Load a kdsweep teacher file, refusing pickled payloads and mismatched classes or shapes."""
    field = "teacher.checkpoint"
    if not Path(path).is_file():
        raise ConfigError(field, f"file '{path}' does not exist")
    try:
        payload: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ConfigError(
            field, f"'{path}' refused: it is not a plain weights file (weights_only=True load failed: {str(error).splitlines()[0]})"
        ) from error
    except Exception as error:  # truncated or not a torch file at all
        raise ConfigError(field, f"'{path}' is not a readable checkpoint ({error.__class__.__name__})") from error
    if not isinstance(payload, dict) or payload.get("format") != "kdsweep-teacher/1":
        raise ConfigError(field, f"'{path}' is not a kdsweep teacher file (save one with python -m kdsweep.teacher)")
    meta_dict = dict(payload["meta"])
    meta_dict["input_shape"] = tuple(meta_dict["input_shape"])
    meta_dict["mean"], meta_dict["std"] = tuple(meta_dict["mean"]), tuple(meta_dict["std"])
    meta = TeacherMeta(**meta_dict)
    if meta.num_classes != data.num_classes:
        raise ConfigError(field, f"'{path}' predicts {meta.num_classes} classes but {data.name} has {data.num_classes}")
    if tuple(meta.input_shape) != data.input_shape:
        raise ConfigError(field, f"'{path}' expects inputs {meta.input_shape} but {data.name} has {data.input_shape}")
    module = create_model(meta.arch, meta.num_classes, meta.input_shape[0], meta.input_shape[1])
    module.load_state_dict(payload["state_dict"])
    return module.eval(), meta
