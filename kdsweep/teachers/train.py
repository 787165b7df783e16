"""Train a teacher with the very trial function the students use (alpha=0: plain cross-entropy)."""

from __future__ import annotations

from kdsweep.data import Dataset
from kdsweep.errors import ConfigError
from kdsweep.models import PretrainedUnavailable
from kdsweep.teachers.spec import TeacherSpec
from kdsweep.teachers.store import training_settings
from kdsweep.teachers.teacher import Teacher, TeacherMeta
from kdsweep.trial import TrialConfig, evaluate, run_trial


def train_teacher(spec: TeacherSpec, data: Dataset, log=print) -> Teacher:
    config = TrialConfig(
        student=spec.arch,
        pretrained=spec.weights,
        alpha=0.0,
        optimizer=spec.optimizer,
        lr=spec.lr,
        batch_size=spec.batch_size,
        epochs=spec.epochs,
        seed=spec.seed,
        measure_latency=False,
    )

    def progress(metrics: dict[str, float], state) -> None:
        log(
            f"teacher {spec.arch} epoch {metrics['epoch']:>3}/{spec.epochs}: train_loss {metrics['train_loss']:.4f}"
            f"  val_accuracy {metrics['val_accuracy']:.4f}  ({metrics['epoch_seconds']:.1f}s)"
        )

    try:  # the weights are fetched before the first epoch: a failure there is bad input
        result = run_trial(config, data, report=progress)
    except PretrainedUnavailable as error:
        raise ConfigError("teacher.weights", str(error)) from None
    test_accuracy = evaluate(result.student, data, "test")["test_accuracy"]
    log(f"teacher {spec.arch}: test_accuracy {test_accuracy:.4f}")
    meta = TeacherMeta(
        num_classes=data.num_classes,
        input_shape=data.input_shape,
        mean=data.mean,
        std=data.std,
        dataset=data.name,
        test_accuracy=test_accuracy,
        data_digest=data.digest,
        **training_settings(spec),
    )
    return Teacher(result.student.cpu().eval(), meta, "trained", result.history)
