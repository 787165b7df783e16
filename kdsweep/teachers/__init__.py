"""The teacher: found (a file, MLflow, the cache on disk) or trained once, then one logit source for trials."""

from kdsweep.teachers.cache import TeacherLogitCache, build_teacher_cache
from kdsweep.teachers.checkpoint import load_teacher, save_teacher
from kdsweep.teachers.online import OnlineTeacher
from kdsweep.teachers.prepare import prepare_teacher, teacher_outputs
from kdsweep.teachers.spec import TeacherSpec
from kdsweep.teachers.store import cache_path
from kdsweep.teachers.teacher import Teacher, TeacherMeta

__all__ = [
    "OnlineTeacher",
    "Teacher",
    "TeacherLogitCache",
    "TeacherMeta",
    "TeacherSpec",
    "build_teacher_cache",
    "cache_path",
    "load_teacher",
    "prepare_teacher",
    "save_teacher",
    "teacher_outputs",
]
