"""`teacher.checkpoint`: the teacher a user already has, in whichever form they have it.

A kdsweep teacher file; a model in MLflow (models:/, runs:/); a state_dict (.pt, .pth or
.safetensors) of the model `teacher.arch` names; a TorchScript file; an ONNX file (logit cache
only). Each is checked on the data where the sweep's driver runs, before Ray or MLflow start:
logits of shape [batch, classes] for the dataset's classes, and, unless kdsweep trained it on this
very data, a test accuracy clearly above chance (else its classes or its preprocessing are wrong).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdsweep.data import Dataset, eval_batches
from kdsweep.errors import ConfigError, one_line
from kdsweep.models import create_model, has_stem_variants, require_model
from kdsweep.models.torchvision_small import uses_small_stem
from kdsweep.teachers.checkpoint import FIELD, check_same_data, is_teacher_file, read_weights, teacher_from_payload
from kdsweep.teachers.from_mlflow import MLFLOW_SCHEMES, load_mlflow_model
from kdsweep.teachers.preprocess import InputStats, teacher_input, with_input
from kdsweep.teachers.runtimes import OnnxTeacher, TorchScriptTeacher
from kdsweep.teachers.spec import TeacherSpec
from kdsweep.teachers.teacher import Teacher, TeacherMeta
from kdsweep.trial import evaluate

# A brought teacher is refused when its test accuracy is within this fraction of the way from chance
# (1 / classes) to 1: wrongly ordered classes or wrong preprocessing land there, a weak teacher does not.
NEAR_CHANCE = 0.1
SHOWN = 3  # differing keys named in a state_dict mismatch


def load_checkpoint(spec: TeacherSpec, data: Dataset) -> Teacher:
    """The teacher `spec.checkpoint` names, checked on `data`; bad input raises ConfigError."""
    where = str(spec.checkpoint)
    if where.startswith(MLFLOW_SCHEMES):
        _built_already(spec, where)
        module, dataset, digest = load_mlflow_model(where)
        return checked(module, where, "pytorch", where, spec, data, dataset, digest)
    path = Path(where)
    if not path.is_file():
        raise ConfigError(FIELD, f"file '{where}' does not exist")
    if path.suffix == ".onnx" or is_torchscript(path):
        _built_already(spec, where)
        form = "onnx" if path.suffix == ".onnx" else "torchscript"
        return checked(_runtime(form, path), where, form, path.name, spec, data)
    payload = read_safetensors(path) if path.suffix == ".safetensors" else read_weights(where)
    if is_teacher_file(payload):
        _built_already(spec, where)
        if spec.input is not None:
            raise ConfigError("teacher.input", f"'{where}' is a kdsweep teacher file, which knows its own input")
        module, meta = teacher_from_payload(payload, where, data)
        return Teacher(module, meta, f"checkpoint:{where}")
    return checked(from_state_dict(payload, spec, data, where), where, "pytorch", spec.arch, spec, data)


def checked(
    module: nn.Module,
    where: str,
    form: str,
    arch: str,
    spec: TeacherSpec,
    data: Dataset,
    dataset: str | None = None,
    digest: str | None = None,
) -> Teacher:
    """A brought module fed its own input (`teacher.input`), checked on `data`, as the sweep's Teacher."""
    if form == "onnx" and spec.mode == "online":
        raise ConfigError(
            "teacher.mode",
            f"online runs the teacher in every trial and needs a PyTorch teacher; '{where}' is "
            "ONNX: use teacher.mode: cached (its logits computed once, by ONNX Runtime)",
        )
    target = teacher_input(spec.input, data)
    module = with_input(module.eval(), target, data)
    check_logits(module, where, target, data)
    meta = TeacherMeta(
        arch=arch,
        num_classes=data.num_classes,
        input_shape=target.shape,
        mean=target.mean,
        std=target.std,
        dataset=dataset or data.name,
        test_accuracy=0.0,
        seed=data.seed,
        data_digest=digest,
    )
    check_same_data(meta, data, where)
    test_accuracy = evaluate(module, data, "test")["test_accuracy"]
    if digest is None and near_chance(test_accuracy, data.num_classes):
        raise ConfigError(
            FIELD,
            f"{where} scores {test_accuracy:.3f} on the test split of {data.name}, near chance "
            f"({1 / data.num_classes:.3f}): is its class i the dataset's class i (an ImageFolder's are its sorted "
            f"folder names), and does teacher.input give the mean, std and image size it was trained with "
            f"(now mean {_rounded(target.mean)}, std {_rounded(target.std)}, {target.image_size} px)?",
        )
    return Teacher(module, meta.model_copy(update={"test_accuracy": test_accuracy}), f"checkpoint:{where}", form=form)


def near_chance(accuracy: float, num_classes: int, margin: float = NEAR_CHANCE) -> bool:
    """accuracy < chance + margin * (1 - chance), chance = 1 / num_classes."""
    chance = 1 / num_classes
    return accuracy < chance + margin * (1 - chance)


def check_logits(module: nn.Module, where: str, target: InputStats, data: Dataset) -> None:
    """Bad input unless `module` maps a batch of the data to [batch, the dataset's classes] logits."""
    example = next(eval_batches(data, data.val, 2, torch.device("cpu"))).images
    try:
        with torch.no_grad():
            outputs = module(example)
    except Exception as error:  # any framework's own error for an input it cannot take
        raise ConfigError(
            FIELD,
            f"{where} does not take a batch of {len(example)} inputs {target.shape} ({one_line(error)}): teacher.input "
            "gives its input size and channels, and an exported file needs a dynamic batch axis",
        ) from None
    if outputs.ndim != 2 or len(outputs) != len(example):
        raise ConfigError(
            FIELD, f"{where} outputs {list(outputs.shape)} for {len(example)} images: a teacher gives [batch, classes]"
        )
    if outputs.shape[1] != data.num_classes:
        raise ConfigError(FIELD, f"{where} predicts {outputs.shape[1]} classes but {data.name} has {data.num_classes}")


def from_state_dict(state: Any, spec: TeacherSpec, data: Dataset, where: str) -> nn.Module:
    """`teacher.arch` built for the teacher's input (and stem) and loaded with a plain state_dict."""
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise ConfigError(
            FIELD, f"'{where}' is neither a kdsweep teacher file nor a state_dict (save model.state_dict())"
        )
    if "arch" not in spec.model_fields_set:
        raise ConfigError(
            "teacher.arch", f"'{where}' is a state_dict: name the model it holds the weights of (e.g. resnet18)"
        )
    require_model("teacher.arch", spec.arch)
    stem = None if spec.small_input_stem == "auto" else spec.small_input_stem
    if stem is not None and not has_stem_variants(spec.arch):
        raise ConfigError("teacher.small_input_stem", f"{spec.arch} has one stem only: leave it auto")
    target = teacher_input(spec.input, data)
    module = create_model(spec.arch, data.num_classes, target.channels, target.image_size, small_input_stem=stem)
    own = module.state_dict()
    head = [key for key, value in own.items() if value.ndim == 2][-1]  # the classifier's weight
    if head in state and len(state[head]) != len(own[head]):
        raise ConfigError(
            FIELD, f"'{where}' predicts {len(state[head])} classes but {data.name} has {data.num_classes}"
        )
    mismatch = weights_mismatch(own, state)
    if mismatch:
        hint = _stem_hint(spec.arch, state, target, stem, data) if has_stem_variants(spec.arch) else ""
        raise ConfigError(
            FIELD, f"'{where}' does not hold kdsweep's {spec.arch} for inputs {target.shape} ({mismatch}){hint}"
        )
    module.load_state_dict(state)
    return module


def weights_mismatch(own: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str:
    """The first keys where `given` differs from the model's `own` state_dict ("" when it fits)."""
    shapes = [
        f"{k} {list(given[k].shape)} here {list(v.shape)}"
        for k, v in own.items()
        if k in given and given[k].shape != v.shape
    ]
    missing = [key for key in own if key not in given]
    unexpected = [key for key in given if key not in own]
    parts = [
        (f"{what}: " + ", ".join(keys[:SHOWN]) + (", ..." if len(keys) > SHOWN else ""))
        for what, keys in (("shapes differ", shapes), ("missing", missing), ("unexpected", unexpected))
        if keys
    ]
    return "; ".join(parts)


def _stem_hint(arch: str, state: dict, target: InputStats, stem: bool | None, data: Dataset) -> str:
    """Which stem kdsweep built, and whether the file holds the other (and how to ask for it)."""
    small = uses_small_stem(target.image_size, stem)
    built = "the small-input stem (3x3 stride 1, no max-pool)" if small else f"{arch}'s own stem"
    other = create_model(arch, data.num_classes, target.channels, target.image_size, small_input_stem=not small)
    if weights_mismatch(other.state_dict(), state):
        return f"; kdsweep built {built}, teacher.small_input_stem: {str(not small).lower()} builds the other"
    return (
        f"; kdsweep built {built} and the file holds the other: set teacher.small_input_stem: {str(not small).lower()}"
    )


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive (torch.jit.save) holds its code; a torch.save archive only data."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/", 1)[-1].startswith("code/") for name in archive.namelist())


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise ConfigError(FIELD, f"'{path}' is not a readable safetensors file ({one_line(error)})") from None


def _built_already(spec: TeacherSpec, where: str) -> None:
    """Bad input: a stem asked of a model that is no state_dict to build (it would be ignored)."""
    if "small_input_stem" in spec.model_fields_set:
        raise ConfigError("teacher.small_input_stem", f"is for a state_dict; '{where}' holds a model built already")


def _runtime(form: str, path: Path) -> nn.Module:
    kind = OnnxTeacher if form == "onnx" else TorchScriptTeacher
    try:
        return kind(path.read_bytes())
    except Exception as error:  # ONNX Runtime's and torch.jit's own errors for a file they cannot read
        raise ConfigError(FIELD, f"'{path}' is not a readable {form} file ({one_line(error)})") from None


def _rounded(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{value:.3g}" for value in values) + ")"
