"""`python -m kdsweep.distill`: one trial from the command line, with per-epoch progress and a final table.

python -m kdsweep.distill --dataset digits --student resnet8 --temperature 4 --alpha 0.9
"""

from __future__ import annotations

import argparse
import contextlib

from pydantic import ValidationError

from kdsweep.cli import ArgumentParser, add_dataset, add_teacher, add_tracking_uri, run_command, teacher_fields
from kdsweep.data import DataSpec, load_dataset
from kdsweep.errors import from_validation_error
from kdsweep.losses import list_losses
from kdsweep.models import list_models, require_model
from kdsweep.teachers import TeacherSpec, prepare_teacher, teacher_outputs
from kdsweep.teachers.from_mlflow import MLFLOW_SCHEMES
from kdsweep.tracking.server import open_store
from kdsweep.trial import TrialConfig, evaluate, run_trial

FINAL_METRICS = (
    "val_accuracy",
    "val_macro_precision",
    "val_macro_recall",
    "val_macro_f1",
    "val_loss",
    "teacher_agreement",
    "test_accuracy",
    "teacher_test_accuracy",
    "params",
    "flops",
    "latency_ms",
)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m kdsweep.distill", description="Run one distillation trial.")
    add_dataset(p, default="digits")
    p.add_argument("--data-root", default=None, help="data.root: where torchvision datasets are downloaded/read")
    p.add_argument(
        "--student", default="resnet8", help=f"student architecture: {', '.join(list_models('student'))}, ..."
    )
    p.add_argument("--width", type=int, default=None, help="width of small_cnn")
    p.add_argument("--loss", default="kd", help=f"distillation loss: {', '.join(list_losses())}")
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument(
        "--alpha",
        type=float,
        default=0.9,
        help="kd: weight of the soft term (0 = plain CE, no teacher); dkd: TCKD; dist: inter",
    )
    p.add_argument("--beta", type=float, default=8.0, help="dkd: weight of the non-target term; dist: intra-class")
    p.add_argument("--standardize", action="store_true", help="z-score the logits of the soft term (Sun et al. 2024)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", default="sgd", help="sgd or adamw")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0, help="the data split's, the trial's and a trained teacher's seed")
    add_teacher(p)
    add_tracking_uri(p)
    return p


def build(args: argparse.Namespace) -> tuple[DataSpec, TrialConfig, TeacherSpec]:
    """The flags as the three validated sections they belong to; bad input names the field."""
    require_model("student", args.student)
    try:
        data = DataSpec(name=args.dataset, seed=args.seed, root=args.data_root)
        trial = TrialConfig(
            student=args.student,
            width=args.width,
            loss=args.loss,
            temperature=args.temperature,
            alpha=args.alpha,
            beta=args.beta,
            standardize=args.standardize,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            weight_decay=args.weight_decay,
            seed=args.seed,
        )
    except ValidationError as error:
        raise from_validation_error(error) from None
    try:
        teacher_spec = TeacherSpec(**teacher_fields(args), seed=args.seed)
    except ValidationError as error:
        raise from_validation_error(error, "teacher.") from None
    require_model("teacher.arch", teacher_spec.arch)
    return data, trial, teacher_spec


def run(args: argparse.Namespace) -> int:
    data_spec, config, teacher_spec = build(args)
    data = load_dataset(data_spec)
    teacher = logit_source = None
    if config.needs_teacher:
        in_mlflow = (teacher_spec.checkpoint or "").startswith(MLFLOW_SCHEMES)
        with open_store(args.tracking_uri) if in_mlflow else contextlib.nullcontext():  # where models:/ resolves
            teacher = prepare_teacher(teacher_spec, data)
        logit_source = teacher_outputs(teacher_spec, teacher, data, config.epochs)
    print(f"student {config.student} on {data.name}: loss {config.loss}, T={config.temperature}, alpha={config.alpha}")

    def progress(metrics: dict[str, float], state) -> None:
        agreement = f"  teacher_agreement {metrics['teacher_agreement']:.4f}" if "teacher_agreement" in metrics else ""
        print(
            f"epoch {metrics['epoch']:>3}/{config.epochs}: train_loss {metrics['train_loss']:.4f}"
            f" (ce {metrics['train_ce']:.4f}, kd {metrics['train_kd']:.4f})  val_accuracy {metrics['val_accuracy']:.4f}"
            f"  val_macro_f1 {metrics['val_macro_f1']:.4f}{agreement}  ({metrics['epoch_seconds']:.1f}s)",
            flush=True,
        )

    result = run_trial(config, data, logit_source=logit_source, report=progress)
    final = {**result.metrics, **evaluate(result.student, data, "test")}
    if teacher is not None:
        final["teacher_test_accuracy"] = teacher.meta.test_accuracy
    print("\nfinal")
    for key in (k for k in FINAL_METRICS if k in final):
        shown = f"{final[key]:,.0f}" if key in ("params", "flops") else f"{final[key]:.4f}"
        print(f"  {key:<22} {shown:>14}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
