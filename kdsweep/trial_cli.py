"""`python -m kdsweep.distill`: one trial from the command line, with per-epoch progress and a table."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from kdsweep.data import DataSpec, load_dataset
from kdsweep.distill import TrialConfig, evaluate, pick_device, run_trial
from kdsweep.errors import ConfigError, from_validation_error
from kdsweep.losses import list_losses
from kdsweep.models import list_models, require_model
from kdsweep.teacher import TeacherSpec, prepare_teacher


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kdsweep.distill", description="Run one distillation trial.")
    p.add_argument("--dataset", default="digits", help="registered dataset or ImageFolder directory (default: digits)")
    p.add_argument("--data-root", default=None, help="where torchvision datasets are downloaded/read")
    p.add_argument("--student", default="resnet8", help=f"student architecture: {', '.join(list_models('student'))}")
    p.add_argument("--width", type=int, default=None, help="width of small_cnn")
    p.add_argument("--teacher", default="resnet18", help="teacher architecture, trained on the fly unless cached")
    p.add_argument("--teacher-checkpoint", default=None, help="a kdsweep teacher file instead of training one")
    p.add_argument("--teacher-epochs", type=int, default=10)
    p.add_argument("--loss", default="kd", help=f"distillation loss: {', '.join(list_losses())}")
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.9, help="kd: weight of the soft term (0 = plain CE)")
    p.add_argument("--beta", type=float, default=8.0, help="dkd: weight of the non-target term")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def build(args: argparse.Namespace) -> tuple[TrialConfig, TeacherSpec]:
    for field, name in (("student", args.student), ("teacher", args.teacher)):
        require_model(field, name)
    try:
        config = TrialConfig(
            data=DataSpec(name=args.dataset, seed=args.seed, root=args.data_root),
            student=args.student, width=args.width, loss=args.loss, temperature=args.temperature,
            alpha=args.alpha, beta=args.beta, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
            optimizer=args.optimizer, weight_decay=args.weight_decay, seed=args.seed,
        )
        teacher = TeacherSpec(arch=args.teacher, checkpoint=args.teacher_checkpoint, epochs=args.teacher_epochs, seed=args.seed)
    except ValidationError as error:
        raise from_validation_error(error) from None
    return config, teacher


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config, teacher_spec = build(args)
        data = load_dataset(config.data)
        teacher = prepare_teacher(teacher_spec, data) if config.needs_teacher else None
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"student {config.student} on {data.name}: loss {config.loss}, T={config.temperature}, alpha={config.alpha}")

    def progress(metrics: dict[str, float], state) -> None:
        agreement = f"  teacher_agreement {metrics['teacher_agreement']:.4f}" if "teacher_agreement" in metrics else ""
        print(
            f"epoch {metrics['epoch']:>3}/{config.epochs}: train_loss {metrics['train_loss']:.4f}"
            f" (ce {metrics['train_ce']:.4f}, kd {metrics['train_kd']:.4f})  val_accuracy {metrics['val_accuracy']:.4f}"
            f"  val_macro_f1 {metrics['val_macro_f1']:.4f}{agreement}  ({metrics['epoch_seconds']:.1f}s)",
            flush=True,
        )

    result = run_trial(config, report=progress, teacher=teacher.module if teacher else None, data=data)
    final = dict(result.metrics)
    final.update(evaluate(result.student, data, "test", pick_device()))
    if teacher is not None:
        final["teacher_test_accuracy"] = teacher.meta.test_accuracy
    print("\nfinal")
    for key in ("val_accuracy", "val_macro_precision", "val_macro_recall", "val_macro_f1", "val_loss",
                "teacher_agreement", "test_accuracy", "teacher_test_accuracy", "params", "flops", "latency_ms"):
        if key in final:
            value = final[key]
            shown = f"{value:,.0f}" if key in ("params", "flops") else f"{value:.4f}"
            print(f"  {key:<22} {shown:>14}")
    return 0
