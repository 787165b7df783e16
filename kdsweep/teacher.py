"""`python -m kdsweep.teacher`: train a teacher (or evaluate a given one), save it, log it to MLflow.

Sweeps on the same dataset then reuse it: from the cache on disk automatically, or explicitly with
`teacher.checkpoint: PATH` or `teacher.checkpoint: models:/NAME@ALIAS` in the search space. A teacher
from elsewhere (a state_dict, TorchScript, ONNX: docs/teacher.md) is evaluated and logged the same way.

    python -m kdsweep.teacher --dataset digits --teacher-arch resnet18 --teacher-epochs 10
    python -m kdsweep.teacher --dataset digits --teacher-checkpoint mine.pth --teacher-arch resnet18
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import ValidationError

from kdsweep.cli import ArgumentParser, add_dataset, add_teacher, add_tracking_uri, run_command, teacher_fields
from kdsweep.data import DataSpec, load_dataset
from kdsweep.errors import ConfigError, from_validation_error
from kdsweep.models import require_model
from kdsweep.teachers import TeacherSpec, cache_path, prepare_teacher, save_teacher
from kdsweep.teachers.from_mlflow import MLFLOW_SCHEMES
from kdsweep.tracking.server import open_store
from kdsweep.tracking.store import display_uri, resolve_tracking_uri
from kdsweep.tracking.teacher_run import log_teacher


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m kdsweep.teacher", description="Train or evaluate a teacher, save it, log it to MLflow."
    )
    add_dataset(p, default="digits")
    p.add_argument("--seed", type=int, default=0, help="the data split's and the teacher's seed")
    add_teacher(p)
    p.add_argument("--output", default=None, help="also save the teacher file here (it is always kept in the cache)")
    add_tracking_uri(p)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        spec = TeacherSpec(**teacher_fields(args), seed=args.seed)
    except ValidationError as error:
        raise from_validation_error(error, "teacher.") from None
    require_model("teacher.arch", spec.arch)
    if args.output and spec.checkpoint:
        raise ConfigError(
            "--output", "saves a teacher kdsweep trains; the one --teacher-checkpoint names is a file already"
        )
    data = load_dataset(DataSpec(name=args.dataset, seed=args.seed))
    # A file is checked before MLflow is touched; a model in MLflow is found through the store.
    from_file = spec.checkpoint and not spec.checkpoint.startswith(MLFLOW_SCHEMES)
    found = prepare_teacher(spec, data) if from_file else None
    with open_store(args.tracking_uri) as uri:
        teacher = found or prepare_teacher(spec, data)
        if args.output:
            save_teacher(Path(args.output), teacher.module, teacher.meta)
        run_id, reference = log_teacher(uri, teacher, data)
    size = f", {reference['params']:,.0f} params" if "params" in reference else ""  # an ONNX file's are not counted
    print(f"teacher {teacher.meta.arch} on {data.name}: test_accuracy {teacher.meta.test_accuracy:.4f}{size}")
    if args.output or not spec.checkpoint:
        print(f"saved: {args.output or cache_path(spec, data)}")
    logged = f"model runs:/{run_id}/model" if teacher.form == "pytorch" else "its file under the run's artifacts"
    print(f"MLflow run {run_id} in {display_uri(resolve_tracking_uri(args.tracking_uri))}; {logged}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
