"""Prepare the teacher once: load a checkpoint, or train one and keep it for later sweeps.

A teacher is trained by the very trial function the students use (alpha=0: plain cross-entropy),
so there is one training loop in kdsweep. Checkpoints are a state dict plus plain metadata and are
read with `weights_only=True`: a file carrying a pickled payload is refused, never executed.

Its logits are then computed once per sweep for every view a trial can train on (the views are a
pure function of the data seed and the epoch), so trials read them instead of running the teacher.
"""

from __future__ import annotations

import copy
import hashlib
import os
import pickle
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from kdsweep.data import Batch, DataSpec, Dataset, Views, eval_batches, train_batches, view_epoch
from kdsweep.distill import TrialConfig, autocast, evaluate, pick_device, run_trial
from kdsweep.errors import ConfigError
from kdsweep.models import PretrainedUnavailable, create_model


class TeacherSpec(BaseModel):
    """Where the teacher comes from, and how to train it when it has to be trained."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: str = "resnet18"
    checkpoint: str | None = None  # a kdsweep teacher file or models:/NAME@ALIAS; otherwise train (or reuse)
    weights: str | None = None  # start training from torchvision's pretrained weights, e.g. IMAGENET1K_V1
    epochs: int = Field(default=10, gt=0)
    optimizer: str = "sgd"
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
    source: str  # "trained:<path>", "cache:<path>" or "checkpoint:<path>": the file is its identity
    history: list[dict[str, float]] | None = None


def default_cache_dir() -> Path:
    return Path(os.environ.get("KDSWEEP_CACHE", Path.home() / ".cache" / "kdsweep" / "teachers"))


def cache_path(spec: TeacherSpec, data: Dataset) -> Path:
    dataset = data.name if "/" not in data.name else "folder-" + hashlib.sha1(data.name.encode()).hexdigest()[:10]
    root = Path(spec.cache_dir) if spec.cache_dir else default_cache_dir()
    start = f"-{spec.weights}" if spec.weights else ""
    return root / f"{dataset}-{spec.arch}{start}-seed{spec.seed}-data{data.seed}-e{spec.epochs}.pt"


def prepare_teacher(spec: TeacherSpec, data: Dataset, log=print) -> Teacher:
    """The sweep's teacher: from `spec.checkpoint`, from the cache, or trained now (and cached)."""
    if spec.checkpoint:
        load = load_mlflow_teacher if spec.checkpoint.startswith(MLFLOW_SCHEMES) else load_teacher
        module, meta = load(spec.checkpoint, data)
        return Teacher(module, meta, f"checkpoint:{spec.checkpoint}")
    path = cache_path(spec, data)
    if path.exists():
        module, meta = load_teacher(str(path), data)
        log(f"teacher: reusing {spec.arch} trained earlier on {data.name} ({path})")
        return Teacher(module, meta, f"cache:{path}")
    teacher = train_teacher(spec, data, log)
    save_teacher(path, teacher.module, teacher.meta)
    teacher.source = f"trained:{path}"
    log(f"teacher: saved to {path} (reused by later sweeps on this dataset)")
    return teacher


def train_teacher(spec: TeacherSpec, data: Dataset, log=print) -> Teacher:
    config = TrialConfig(
        data=DataSpec(name=data.name, seed=data.seed),  # a record only: run_trial gets `data` itself
        student=spec.arch,
        pretrained=spec.weights,
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

    try:  # the weights are fetched before the first epoch: a failure there is bad input
        result = run_trial(config, report=progress, data=data)
    except PretrainedUnavailable as error:
        raise ConfigError("teacher.weights", str(error)) from None
    test_accuracy = evaluate(result.student, data, "test", pick_device())["test_accuracy"]
    log(f"teacher {spec.arch}: test_accuracy {test_accuracy:.4f}")
    meta = TeacherMeta(spec.arch, data.num_classes, data.input_shape, data.mean, data.std, data.name, test_accuracy, spec.seed)
    return Teacher(result.student.cpu().eval(), meta, "trained", result.history)


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
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise ConfigError(field, f"'{path}' is not a readable checkpoint (not a torch.save file)")
    try:
        payload: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(
            field, f"'{path}' refused: it holds objects other than tensors and plain data (loaded weights_only=True)"
        ) from None
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


MLFLOW_SCHEMES = ("models:/", "runs:/")


def load_mlflow_teacher(uri: str, data: Dataset) -> tuple[nn.Module, TeacherMeta]:
    """A teacher logged to MLflow (`models:/NAME@ALIAS`, `runs:/ID/model`), checked against the data."""
    from kdsweep.tracking import load_logged_model

    field = "teacher.checkpoint"
    try:
        module = load_logged_model(uri)
    except Exception as error:  # unknown name/alias/run, unreachable store: MLflow raises many kinds
        raise ConfigError(field, f"cannot load {uri} from MLflow ({str(error).splitlines()[0][:200]})") from None
    example = next(eval_batches(data, data.val, 2, torch.device("cpu"))).images
    try:
        with torch.no_grad():
            outputs = module(example)
    except Exception:
        raise ConfigError(field, f"{uri} does not accept inputs {data.input_shape} of {data.name}") from None
    if outputs.shape[-1] != data.num_classes:
        raise ConfigError(field, f"{uri} predicts {outputs.shape[-1]} classes but {data.name} has {data.num_classes}")
    test_accuracy = evaluate(module, data, "test", torch.device("cpu"))["test_accuracy"]
    meta = TeacherMeta(uri, data.num_classes, data.input_shape, data.mean, data.std, data.name, test_accuracy, data.seed)
    return module, meta


# ---------------------------------------------------------------- the logit cache


@dataclass(frozen=True)
class TeacherLogitCache:
    """The teacher's logits for every view the trials train on, computed once and shared by all.

    `train[e, i]` belongs to sample i in the views of epoch e + 1, and `views[e, i]` is the code of
    that view: the cache key, checked on every batch, so a trial is refused rather than fed logits of
    another image. Arrays are numpy because Ray's object store hands numpy arrays to every trial of
    a node zero-copy, where each trial would get its own copy of a torch tensor.
    """

    train: np.ndarray  # float16, view_epochs x N_train x classes
    views: np.ndarray  # int32, view_epochs x N_train
    val: np.ndarray  # float16, N_val x classes, un-augmented
    test: np.ndarray  # float16, N_test x classes, un-augmented
    pad: int  # the augmentation's crop padding, to encode a batch's views

    @property
    def view_epochs(self) -> int:
        """Trials must set TrialConfig.view_epochs to this, so their views repeat as the cache's do."""
        return len(self.train)

    def train_logits(self, batch: Batch, views: Views | None, epoch: int) -> torch.Tensor:
        if views is None:
            raise ValueError("the teacher cache serves in-memory datasets only; this batch streams from disk")
        slot = view_epoch(epoch, self.view_epochs) - 1
        index = batch.indices.numpy()
        if not np.array_equal(self.views[slot, index], _view_codes(views, self.pad)):
            raise ValueError(
                f"epoch {epoch} trains on views the teacher cache does not hold: "
                f"the trial needs view_epochs={self.view_epochs} and the sweep's dataset"
            )
        return torch.from_numpy(self.train[slot, index]).to(batch.images.device).float()

    def eval_logits(self, data: Dataset, split: str, device: torch.device) -> torch.Tensor:
        logits = getattr(self, split)
        if len(logits) != len(getattr(data, split)):
            raise ValueError(f"the teacher cache holds {len(logits)} {split} logits but the {split} split has {len(getattr(data, split))} samples")
        return torch.from_numpy(logits.astype(np.float32)).to(device)


def _view_codes(views: Views, pad: int) -> np.ndarray:
    """One integer per (crop offset, flip): the finite set of views one image has."""
    return ((views.dy * (2 * pad + 1) + views.dx) * 2 + views.flip.long()).numpy().astype(np.int32)


def build_teacher_cache(
    module: nn.Module,
    data: Dataset,
    epochs: int,
    device: torch.device,
    memory_limit_mb: float,
    batch_size: int | None = None,
    log=print,
) -> TeacherLogitCache | None:
    """The logits of every view of `epochs` epochs, or of as many epochs as `memory_limit_mb` holds.

    None, with the reason logged, when the cache cannot be exact or bounded: data streaming from disk
    (its views are not drawn ahead), one epoch over the limit, or logits beyond float16's range.
    The caller then runs the teacher online.
    """
    if not data.in_memory:
        log("teacher cache: the data streams from disk, so its views cannot be cached; running the teacher online")
        return None
    if data.augment.num_views == 1:
        epochs = 1  # no augmentation: every epoch shows the same images
    samples, classes = len(data.train), data.num_classes
    per_epoch = samples * (2 * classes + 4)  # float16 logits and an int32 view code per sample
    fixed = (len(data.val) + len(data.test)) * classes * 2
    view_epochs = min(epochs, int((memory_limit_mb * 2**20 - fixed) // per_epoch))
    if view_epochs < 1:
        log(f"teacher cache: one epoch needs {_mb(fixed + per_epoch)} > teacher.cache_limit_mb={memory_limit_mb}; running the teacher online")
        return None
    repeat = f" (all {epochs} exceed teacher.cache_limit_mb={memory_limit_mb}: views repeat every {view_epochs} epochs)" if view_epochs < epochs else ""
    log(f"teacher cache: {view_epochs} view epochs x {samples} samples x {classes} classes, float16 = {_mb(fixed + view_epochs * per_epoch)}{repeat}")
    started = time.perf_counter()
    # A GPU wants large batches; a CPU is 20-30% faster on small ones, whose activations stay in its caches.
    batch_size = batch_size or (1024 if device.type == "cuda" else 64)
    cache = _compute_cache(module, data, view_epochs, device, batch_size)
    if not all(np.isfinite(logits).all() for logits in (cache.train, cache.val, cache.test)):
        log("teacher cache: logits do not fit float16 (|logit| > 65504, or NaN); running the teacher online")
        return None
    log(f"teacher cache: built in {time.perf_counter() - started:.1f} s")
    return cache


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 2**10:.1f} KB"


def _compute_cache(module: nn.Module, data: Dataset, view_epochs: int, device: torch.device, batch_size: int) -> TeacherLogitCache:
    # A copy: the caller's module stays where it was, in the mode it was.
    teacher = copy.deepcopy(module).to(device).eval()
    train = np.empty((view_epochs, len(data.train), data.num_classes), np.float16)
    views = np.empty((view_epochs, len(data.train)), np.int32)

    def half(images: torch.Tensor) -> np.ndarray:
        return teacher(images).float().cpu().numpy().astype(np.float16)

    with torch.inference_mode(), autocast(device):
        for epoch in range(1, view_epochs + 1):
            # The trials' own iterator: the images are built exactly as they will be in training.
            for batch, batch_views in train_batches(data, batch_size, epoch, 0, device):
                index = batch.indices.numpy()
                train[epoch - 1, index] = half(batch.images)
                views[epoch - 1, index] = _view_codes(batch_views, data.augment.pad)
        val, test = (
            np.concatenate([half(b.images) for b in eval_batches(data, getattr(data, split), batch_size, device)])
            for split in ("val", "test")
        )
    return TeacherLogitCache(train, views, val, test, data.augment.pad)


def teacher_for_trials(spec: TeacherSpec, teacher: Teacher | None, data: Dataset, epochs: int, log=print) -> nn.Module | TeacherLogitCache | None:
    """What every trial of a sweep gets: the logit cache when `spec.mode` is cached and it fits, else the module."""
    if teacher is None:
        return None
    if spec.mode == "cached":
        cache = build_teacher_cache(teacher.module, data, epochs, pick_device(), spec.cache_limit_mb, log=log)
        if cache is not None:
            return cache
    return teacher.module


if __name__ == "__main__":
    from kdsweep.teacher_cli import main

    raise SystemExit(main())
