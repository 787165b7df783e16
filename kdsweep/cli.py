"""What every `python -m kdsweep.X` shares: one parser class, one error wrapper, the same flags for the same things.

A command module has `build_parser()`, `run(args) -> int` and `main(argv) -> int = run_command(...)`.
Bad input anywhere (a flag argparse refuses, a value a section refuses, a missing file) reaches the
user as one line, `error: FIELD: PROBLEM`, and exit code 2; the field is spelled as in the YAML
(`teacher.arch`, `data.name`) or, for flags that map to no YAML field, as the flag.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import yaml

from kdsweep.errors import EXIT_BAD_INPUT, ConfigError
from kdsweep.tracking.store import QUIET_MLFLOW


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors raised as one ConfigError naming the flag instead of usage text."""

    def error(self, message: str) -> None:
        field, _, problem = message.removeprefix("argument ").partition(": ")
        raise ConfigError(field, problem)


def count(text: str) -> int:
    """argparse type of a flag that counts (0 and up): anything else is refused naming the flag."""
    if not text.isdecimal():
        raise argparse.ArgumentTypeError(f"must be a whole number, 0 or more (got '{text}')")
    return int(text)


def run_command(parser: ArgumentParser, run: Callable[[argparse.Namespace], int], argv: list[str] | None) -> int:
    """Parse, run, and turn bad input into `error: FIELD: PROBLEM` on stderr with exit code 2."""
    for key, value in QUIET_MLFLOW.items():  # where the command starts; the trials it spawns inherit it
        os.environ.setdefault(key, value)
    try:
        return run(parser.parse_args(argv))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


def add_tracking_uri(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)"
    )


def add_dataset(parser: ArgumentParser, default: str | None) -> None:
    suffix = f" (default: {default})" if default else ""
    parser.add_argument(
        "--dataset", default=default, help=f"data.name: a registered dataset or an ImageFolder directory{suffix}"
    )


def add_teacher(parser: ArgumentParser) -> None:
    """The teacher's flags, named as in every command: --teacher-<field of the teacher: section>."""
    from kdsweep.models import list_models

    parser.add_argument(
        "--teacher-arch",
        default=None,
        help=f"teacher.arch (default resnet18): {', '.join(list_models('teacher'))}, ...; a state_dict's model",
    )
    parser.add_argument(
        "--teacher-checkpoint",
        default=None,
        help="teacher.checkpoint: a kdsweep teacher file, a state_dict (.pt, .pth, .safetensors; with --teacher-arch), "
        "a TorchScript or ONNX file, or models:/NAME@ALIAS (docs/teacher.md)",
    )
    parser.add_argument(
        "--teacher-small-input-stem",
        choices=["auto", "true", "false"],
        default=None,
        help="teacher.small_input_stem: the stem a state_dict's model is built with (default auto: by image size)",
    )
    parser.add_argument(
        "--teacher-input",
        type=yaml.safe_load,
        default=None,
        metavar="YAML",
        help="teacher.input: a brought teacher's preprocessing, e.g. '{mean: [0.5], std: [0.25], image_size: 32}'",
    )
    parser.add_argument(
        "--teacher-weights",
        default=None,
        help="teacher.weights: start from pretrained weights: true (the model's default) or a name, e.g. IMAGENET1K_V1",
    )
    parser.add_argument("--teacher-epochs", type=int, default=10, help="teacher.epochs (when it is trained)")
    parser.add_argument("--teacher-lr", type=float, default=0.05, help="teacher.lr (when it is trained)")
    parser.add_argument("--teacher-batch-size", type=int, default=64, help="teacher.batch_size (when it is trained)")


def teacher_fields(args: argparse.Namespace) -> dict:
    """The `teacher:` section's fields from the --teacher-* flags; a flag not given leaves its field unset."""
    fields = {
        "arch": args.teacher_arch,
        "checkpoint": args.teacher_checkpoint,
        "small_input_stem": args.teacher_small_input_stem,
        "input": args.teacher_input,
        "weights": True if args.teacher_weights == "true" else args.teacher_weights,
        "epochs": args.teacher_epochs,
        "lr": args.teacher_lr,
        "batch_size": args.teacher_batch_size,
    }
    return {field: value for field, value in fields.items() if value is not None}


def add_shipping(parser: ArgumentParser) -> None:
    """The flags of an export, the same in `export` and `select --export`."""
    from kdsweep.shipping.spec import DEFAULT_LATENCY_SECONDS, DEFAULT_TOLERANCE, QUANTIZATIONS

    parser.add_argument(
        "--output", default=None, metavar="PATH", help="where to write it (default: NAME-vVERSION or the run's name)"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"largest |logit difference| from PyTorch on the validation split (default: {DEFAULT_TOLERANCE:g})",
    )
    parser.add_argument(
        "--quantize", default=None, choices=QUANTIZATIONS, help="also write a static int8 model (onnx only)"
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=DEFAULT_LATENCY_SECONDS,
        help=f"how long to time batch-1 inference (default: {DEFAULT_LATENCY_SECONDS:g})",
    )


def ship_spec(args: argparse.Namespace, format_name: str, format_flag: str):
    """The shipping flags as one validated ShipSpec (the output path is checked writable here)."""
    from pathlib import Path

    from kdsweep.shipping import ShipSpec

    return ShipSpec(
        format_name,
        Path(args.output) if args.output else None,
        args.tolerance,
        args.quantize,
        args.latency_seconds,
        format_flag,
    )
