"""`python -m kdsweep.teacher`: train a teacher (or evaluate a given one), save it, log it to MLflow.

Sweeps on the same dataset then reuse it: from the cache automatically, or explicitly with
`teacher.checkpoint: PATH` or `teacher.checkpoint: models:/NAME@ALIAS` in the search space.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from kdsweep.data import DataSpec, load_dataset
from kdsweep.errors import ConfigError, from_validation_error
from kdsweep.models import list_models, require_model
from kdsweep.teacher import TeacherSpec, cache_path, prepare_teacher, save_teacher
from kdsweep.tracking import log_teacher, resolve_tracking_uri, use_store


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kdsweep.teacher", description="Train or evaluate a teacher and save it.")
    p.add_argument("--dataset", default="digits", help="registered dataset or ImageFolder directory")
    p.add_argument("--arch", default="resnet18", help=f"teacher architecture: {', '.join(list_models('teacher'))}, ...")
    p.add_argument("--checkpoint", default=None, help="evaluate this kdsweep teacher file or models:/ URI instead of training")
    p.add_argument("--weights", default=None, help="start from torchvision's pretrained weights, e.g. IMAGENET1K_V1")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="also save the teacher file here (it is always kept in the cache)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        require_model("--arch", args.arch)
        try:
            spec = TeacherSpec(arch=args.arch, checkpoint=args.checkpoint, weights=args.weights, epochs=args.epochs, lr=args.lr,
                               batch_size=args.batch_size, seed=args.seed)
        except ValidationError as error:
            raise from_validation_error(error, "--") from None
        uri = resolve_tracking_uri(args.tracking_uri)
        use_store(uri)
        data = load_dataset(DataSpec(name=args.dataset, seed=args.seed))
        teacher = prepare_teacher(spec, data)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.output:
        save_teacher(Path(args.output), teacher.module, teacher.meta)
    run_id, reference = log_teacher(uri, teacher, data)
    print(f"teacher {teacher.meta.arch} on {data.name}: test_accuracy {teacher.meta.test_accuracy:.4f}, "
          f"{reference.get('params', 0):,.0f} params")
    if args.output or not spec.checkpoint:
        print(f"saved: {args.output or cache_path(spec, data)}")
    print(f"MLflow run {run_id} ({uri}); model runs:/{run_id}/model")
    return 0
