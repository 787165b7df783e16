"""Teacher files: a state dict plus plain metadata, read with `weights_only=True`.

A file carrying a pickled payload is refused, never executed; so is one whose classes or input
shape do not match the data.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from kdsweep.data import Dataset
from kdsweep.errors import ConfigError, from_validation_error, one_line
from kdsweep.models import create_model, is_model
from kdsweep.teachers.teacher import TeacherMeta

FORMAT = "kdsweep-teacher/2"  # /2: the metadata names the data (its digest) and the training settings
FIELD = "teacher.checkpoint"


def save_teacher(path: Path, module: nn.Module, meta: TeacherMeta) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "meta": meta.model_dump(), "state_dict": module.state_dict()}
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a concurrent sweep never reads half a file


def load_teacher(path: str, data: Dataset) -> tuple[nn.Module, TeacherMeta]:
    """Load a kdsweep teacher file, refusing pickled payloads and mismatched classes or shapes."""
    return teacher_from_payload(read_weights(path), path, data)


def read_weights(path: str) -> Any:
    """A torch.save file's tensors and plain data, loaded weights_only: a pickled object is refused, never run."""
    if not Path(path).is_file():
        raise ConfigError(FIELD, f"file '{path}' does not exist")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise ConfigError(FIELD, f"'{path}' is not a readable checkpoint (not a torch.save file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(
            FIELD, f"'{path}' refused: it holds objects other than tensors and plain data (loaded weights_only=True)"
        ) from None
    except Exception as error:  # truncated or not a torch file at all
        raise ConfigError(FIELD, f"'{path}' is not a readable checkpoint ({error.__class__.__name__})") from error


def is_teacher_file(payload: Any) -> bool:
    """Whether what `read_weights` read is a kdsweep teacher file (of any format version)."""
    return isinstance(payload, dict) and str(payload.get("format", "")).startswith("kdsweep-teacher/")


def teacher_from_payload(payload: Any, path: str, data: Dataset) -> tuple[nn.Module, TeacherMeta]:
    """The module and metadata of a kdsweep teacher file read by `read_weights`."""
    if not is_teacher_file(payload):
        raise ConfigError(FIELD, f"'{path}' is not a kdsweep teacher file (save one with python -m kdsweep.teacher)")
    if payload["format"] != FORMAT:
        raise ConfigError(
            FIELD,
            f"'{path}' is an older kdsweep teacher file ({payload['format']}) that does not say "
            "which data it was trained on: train it again with python -m kdsweep.teacher",
        )
    try:
        meta = TeacherMeta.model_validate(payload.get("meta"))
    except ValidationError as error:
        problem = from_validation_error(error)
        raise ConfigError(FIELD, f"'{path}' has malformed metadata ({problem})") from None
    check_fits(meta, data, f"'{path}'")
    if not is_model(meta.arch):
        raise ConfigError(FIELD, f"'{path}' holds a '{meta.arch}', which is not a registered model here")
    module = create_model(meta.arch, meta.num_classes, meta.input_shape[0], meta.input_shape[1])
    try:
        module.load_state_dict(payload.get("state_dict") or {})
    except (RuntimeError, TypeError) as error:  # missing, unexpected or mis-shaped keys
        raise ConfigError(FIELD, f"'{path}' does not hold the weights of a {meta.arch} ({one_line(error)})") from None
    return module.eval(), meta


def check_fits(meta: TeacherMeta, data: Dataset, what: str) -> None:
    """Bad input unless the teacher was trained on exactly this data (or, not knowing, at least fits it)."""
    if meta.num_classes != data.num_classes:
        raise ConfigError(FIELD, f"{what} predicts {meta.num_classes} classes but {data.name} has {data.num_classes}")
    if tuple(meta.input_shape) != data.input_shape:
        raise ConfigError(FIELD, f"{what} expects inputs {meta.input_shape} but {data.name} has {data.input_shape}")
    check_same_data(meta, data, what)


def check_same_data(meta: TeacherMeta, data: Dataset, what: str) -> None:
    """Bad input when the teacher says it was trained on other splits than this sweep's."""
    if meta.data_digest is not None and meta.data_digest != data.digest:
        raise ConfigError(
            FIELD,
            f"{what} was trained on other data than this sweep's ({meta.dataset}, splits {meta.data_digest}; this "
            f"sweep: {data.name}, splits {data.digest}): it may have seen this sweep's validation or test images. "
            "Leave teacher.checkpoint unset to train one for this data",
        )
