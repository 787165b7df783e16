"""Teacher files: a state dict plus plain metadata, read with `weights_only=True`.

A file carrying a pickled payload is refused, never executed; so is one whose classes or input
shape do not match the data.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdsweep.data import Dataset
from kdsweep.errors import ConfigError
from kdsweep.models import create_model
from kdsweep.teachers.teacher import TeacherMeta

FORMAT = "kdsweep-teacher/1"
FIELD = "teacher.checkpoint"


def save_teacher(path: Path, module: nn.Module, meta: TeacherMeta) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "meta": asdict(meta), "state_dict": module.state_dict()}
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a concurrent sweep never reads half a file


def load_teacher(path: str, data: Dataset) -> tuple[nn.Module, TeacherMeta]:
    """Load a kdsweep teacher file, refusing pickled payloads and mismatched classes or shapes."""
    if not Path(path).is_file():
        raise ConfigError(FIELD, f"file '{path}' does not exist")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise ConfigError(FIELD, f"'{path}' is not a readable checkpoint (not a torch.save file)")
    try:
        payload: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(
            FIELD, f"'{path}' refused: it holds objects other than tensors and plain data (loaded weights_only=True)"
        ) from None
    except Exception as error:  # truncated or not a torch file at all
        raise ConfigError(FIELD, f"'{path}' is not a readable checkpoint ({error.__class__.__name__})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(FIELD, f"'{path}' is not a kdsweep teacher file (save one with python -m kdsweep.teacher)")
    meta_dict = dict(payload["meta"])
    meta_dict["input_shape"] = tuple(meta_dict["input_shape"])
    meta_dict["mean"], meta_dict["std"] = tuple(meta_dict["mean"]), tuple(meta_dict["std"])
    meta = TeacherMeta(**meta_dict)
    if meta.num_classes != data.num_classes:
        raise ConfigError(FIELD, f"'{path}' predicts {meta.num_classes} classes but {data.name} has {data.num_classes}")
    if tuple(meta.input_shape) != data.input_shape:
        raise ConfigError(FIELD, f"'{path}' expects inputs {meta.input_shape} but {data.name} has {data.input_shape}")
    module = create_model(meta.arch, meta.num_classes, meta.input_shape[0], meta.input_shape[1])
    module.load_state_dict(payload["state_dict"])
    return module.eval(), meta
