"""The teacher stage of a sweep: find or train the teacher once, then hand trials ONE logit source.

`prepare_teacher` gives the Teacher (module + metadata + where it came from: for logging and the
cache on disk); `teacher_outputs` turns it into what every trial reads logits from, the logit cache
or the module run online, which carries its own view schedule.
"""

from __future__ import annotations

from kdsweep.data import Dataset
from kdsweep.errors import ConfigError
from kdsweep.teachers.brought import load_checkpoint
from kdsweep.teachers.cache import build_teacher_cache
from kdsweep.teachers.checkpoint import load_teacher, save_teacher
from kdsweep.teachers.online import OnlineTeacher
from kdsweep.teachers.spec import TeacherSpec
from kdsweep.teachers.store import cache_path
from kdsweep.teachers.teacher import Teacher
from kdsweep.teachers.train import train_teacher
from kdsweep.trial import TeacherOutputs, pick_device


def find_teacher(spec: TeacherSpec, data: Dataset, log=print) -> Teacher | None:
    """The teacher `spec.checkpoint` names, or one trained earlier for exactly this data and these
    settings (the cache on disk); None when one must be trained. Bad input raises ConfigError."""
    if spec.checkpoint:
        return load_checkpoint(spec, data)
    for field in ("input", "small_input_stem"):
        if field in spec.model_fields_set:
            raise ConfigError(
                f"teacher.{field}",
                "describes a teacher you bring (teacher.checkpoint); kdsweep trains its own on the dataset's "
                "input, with the stem its image size calls for",
            )
    path = cache_path(spec, data)
    if not path.exists():
        return None
    module, meta = load_teacher(str(path), data)
    log(f"teacher: reusing {spec.arch} trained earlier on exactly this data ({path})")
    return Teacher(module, meta, f"cache:{path}")


def keep_trained(spec: TeacherSpec, teacher: Teacher, data: Dataset, log=print) -> None:
    """Save a teacher trained just now into the cache on disk, for the next sweep on this data."""
    path = cache_path(spec, data)
    save_teacher(path, teacher.module, teacher.meta)
    teacher.source = f"trained:{path}"
    log(f"teacher: saved to {path} (reused by later sweeps on this data)")


def prepare_teacher(spec: TeacherSpec, data: Dataset, log=print) -> Teacher:
    """The teacher, found or trained (and kept) in this process: for the commands that run one trial."""
    teacher = find_teacher(spec, data, log)
    if teacher is None:
        teacher = train_teacher(spec, data, log)
        keep_trained(spec, teacher, data, log)
    return teacher


def teacher_outputs(spec: TeacherSpec, teacher: Teacher, data: Dataset, epochs: int, log=print) -> TeacherOutputs:
    """What every trial reads logits from: the cache when `spec.mode` is cached and it fits, else online."""
    if spec.mode == "cached":
        cache = build_teacher_cache(teacher.module, data, epochs, pick_device(), spec.cache_limit_mb, log=log)
        if cache is not None:
            return cache
    if teacher.form == "onnx":
        raise ConfigError(
            "teacher.mode",
            "the logit cache cannot hold this sweep (logged above), and an ONNX "
            "teacher cannot run online: raise teacher.cache_limit_mb, or bring a PyTorch teacher",
        )
    return OnlineTeacher(teacher.module)
