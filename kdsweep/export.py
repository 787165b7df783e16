"""`python -m kdsweep.export`: a logged student -> an ONNX or TorchScript file, checked against PyTorch.

python -m kdsweep.export models:/digits@champion --format onnx --quantize int8
"""

from __future__ import annotations

import argparse

from kdsweep.cli import ArgumentParser, add_shipping, add_tracking_uri, run_command, ship_spec
from kdsweep.shipping import FORMATS, ship_model
from kdsweep.tracking.server import open_store


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m kdsweep.export",
        description="Export a sweep's student, check it against PyTorch on the validation split, time it, log it.",
    )
    p.add_argument("model_uri", metavar="MODEL_URI", help="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/ID/model")
    p.add_argument("--format", default="onnx", choices=list(FORMATS), help="onnx (default) or torchscript")
    add_shipping(p)
    add_tracking_uri(p)
    return p


def run(args: argparse.Namespace) -> int:
    """0 with the written file's path printed last; 1 when the check failed (nothing written)."""
    spec = ship_spec(args, args.format, "--format")  # an unwritable --output fails here, before any work
    with open_store(args.tracking_uri) as uri:
        shipped = ship_model(uri, args.model_uri, spec)
    if not shipped.passed:
        return 1
    print(shipped.path)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
