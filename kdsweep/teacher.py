"""`python -m kdsweep.teacher`: train a teacher (or evaluate a given one), save it, log it to MLflow.

Sweeps on the same dataset then reuse it: from the cache on disk automatically, or explicitly with
`teacher.checkpoint: PATH` or `teacher.checkpoint: models:/NAME@ALIAS` in the search space.

    python -m kdsweep.teacher --dataset digits --teacher-arch resnet18 --teacher-epochs 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import ValidationError

from kdsweep.cli import ArgumentParser, add_dataset, add_teacher, add_tracking_uri, run_command, teacher_fields
from kdsweep.data import DataSpec, load_dataset
from kdsweep.errors import from_validation_error
from kdsweep.models import require_model
from kdsweep.teachers import TeacherSpec, cache_path, prepare_teacher, save_teacher
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
    require_model("teacher.arch", args.teacher_arch)
    try:
        spec = TeacherSpec(**teacher_fields(args), seed=args.seed)
    except ValidationError as error:
        raise from_validation_error(error, "teacher.") from None
    data = load_dataset(DataSpec(name=args.dataset, seed=args.seed))
    with open_store(args.tracking_uri) as uri:
        teacher = prepare_teacher(spec, data)
        if args.output:
            save_teacher(Path(args.output), teacher.module, teacher.meta)
        run_id, reference = log_teacher(uri, teacher, data)
    print(
        f"teacher {teacher.meta.arch} on {data.name}: test_accuracy {teacher.meta.test_accuracy:.4f}, "
        f"{reference.get('params', 0):,.0f} params"
    )
    if args.output or not spec.checkpoint:
        print(f"saved: {args.output or cache_path(spec, data)}")
    print(f"MLflow run {run_id} in {display_uri(resolve_tracking_uri(args.tracking_uri))}; model runs:/{run_id}/model")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
