"""The trial function: metrics, teacher use, determinism, resuming from a checkpointed state."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError

from kdsweep import distill
from kdsweep.data import Batch, DataSpec, load_dataset, split_images
from kdsweep.losses import LossTerms, get_loss
from kdsweep.models import create_model
from kdsweep.teachers import OnlineTeacher, build_teacher_cache
from kdsweep.trial import TrialConfig, evaluate, place, predict, reported_metrics, run_trial
from kdsweep.trial.loop import LossTotals, build_optimizer, train_one_epoch

TINY = {
    "student": "small_cnn",
    "width": 4,
    "epochs": 2,
    "batch_size": 32,
    "lr": 0.05,
    "measure_latency": False,
    "stop_at_chance": False,  # tiny data: near-chance accuracy is the rule here (test_collapse.py)
}


def tiny_model(data) -> torch.nn.Module:
    torch.manual_seed(1)
    return create_model("small_cnn", data.num_classes, data.in_channels, data.image_size, width=8).eval()


def tiny_teacher(data) -> OnlineTeacher:
    return OnlineTeacher(tiny_model(data))


def test_trial_reports_every_epoch_with_all_metrics(tiny_data):
    reports = []
    result = run_trial(
        TrialConfig(**{**TINY, "measure_latency": True}),
        tiny_data,
        logit_source=tiny_teacher(tiny_data),
        report=lambda m, state: reports.append((m, state())),
    )
    assert [m["epoch"] for m, _ in reports] == [1, 2]
    metrics = reports[-1][0]
    for key in ("val_accuracy", "val_macro_precision", "val_macro_recall", "val_macro_f1", "teacher_agreement"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["val_loss"] > 0
    assert metrics["train_loss"] > 0
    assert metrics["train_kd"] > 0
    assert metrics["params"] == sum(p.numel() for p in result.student.parameters())
    assert metrics["flops"] > 0
    assert metrics["latency_ms"] > 0
    assert reports[-1][1]["epoch"] == 2
    assert "student" in reports[-1][1]
    # train_loss is alpha * kd + (1 - alpha) * ce, averaged the same way
    assert metrics["train_loss"] == pytest.approx(0.9 * metrics["train_kd"] + 0.1 * metrics["train_ce"], rel=1e-6)


@pytest.mark.parametrize(("distils", "measures_cost"), [(True, True), (False, False)])
def test_a_trial_reports_exactly_the_metrics_an_objective_may_name(tiny_data, distils, measures_cost):
    config = TrialConfig(**{**TINY, "epochs": 1, "alpha": 0.9 if distils else 0.0, "measure_latency": measures_cost})
    result = run_trial(config, tiny_data, logit_source=tiny_teacher(tiny_data) if distils else None)
    assert set(result.metrics) == set(reported_metrics(distils, measures_cost))


def test_alpha_zero_trains_without_a_teacher(tiny_data):
    result = run_trial(TrialConfig(**{**TINY, "alpha": 0.0}), tiny_data)
    assert result.metrics["train_kd"] == 0.0
    assert result.metrics["train_loss"] == pytest.approx(result.metrics["train_ce"])
    assert "teacher_agreement" not in result.metrics


def test_kd_without_a_teacher_is_refused(tiny_data):
    with pytest.raises(ValueError, match="needs a teacher"):
        run_trial(TrialConfig(**TINY), tiny_data)


def test_same_seed_gives_identical_students_on_cpu(tiny_data):
    teacher = tiny_teacher(tiny_data)
    first = run_trial(TrialConfig(**TINY), tiny_data, logit_source=teacher)
    second = run_trial(TrialConfig(**TINY), tiny_data, logit_source=teacher)
    assert first.metrics["train_loss"] == second.metrics["train_loss"]
    for a, b in zip(first.student.state_dict().values(), second.student.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resuming_from_a_checkpointed_epoch_matches_an_uninterrupted_run(tiny_data):
    teacher = tiny_teacher(tiny_data)
    config = TrialConfig(**{**TINY, "epochs": 3})
    states = {}
    full = run_trial(
        config, tiny_data, logit_source=teacher, report=lambda m, state: states.__setitem__(m["epoch"], state())
    )
    resumed = run_trial(config, tiny_data, logit_source=teacher, resume_state=states[1])
    assert [h["epoch"] for h in resumed.history] == [2, 3]
    assert resumed.metrics["train_loss"] == pytest.approx(full.metrics["train_loss"], rel=1e-6)
    for a, b in zip(full.student.state_dict().values(), resumed.student.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


class DeviceRecorder(torch.nn.Module):
    """A model that notes the device of every input it is given."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.seen = inner, set()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen.add(images.device.type)
        return self.inner(images)


def test_a_model_and_the_batches_it_sees_are_always_on_one_device(tiny_data):
    """On a GPU node a model is placed on CUDA while the data arrives on the CPU; `meta` stands in for
    that other device here. Whoever places a model, its batches follow it, and so does the teacher."""
    other = torch.device("meta")
    model = place(DeviceRecorder(tiny_model(tiny_data)), other)
    logits, labels = predict(model, tiny_data, "val")
    assert model.seen == {"meta"}
    assert logits.device == labels.device == other
    teacher = OnlineTeacher(DeviceRecorder(tiny_model(tiny_data)))  # prepared on the driver's CPU
    batch = Batch(
        split_images(tiny_data, tiny_data.train)[:16].to(other), tiny_data.train.labels[:16].to(other), torch.arange(16)
    )
    assert teacher.train_logits(batch, None, 1).device == other
    assert teacher.module.seen == {"meta"}
    assert teacher.eval_logits(tiny_data, "val", other).shape == (len(tiny_data.val), tiny_data.num_classes)


def test_a_student_agrees_fully_with_itself_as_teacher(tiny_data):
    model = tiny_model(tiny_data)
    logits = torch.cat([model(b) for b in split_images(tiny_data, tiny_data.val).split(64)]).detach()
    metrics = evaluate(model, tiny_data, "val", teacher_logits=logits)
    assert metrics["teacher_agreement"] == 1.0


def test_dkd_trial_runs_with_warmup(tiny_data):
    config = TrialConfig(**{**TINY, "loss": "dkd", "alpha": 1.0, "beta": 8.0, "dkd_warmup_epochs": 2})
    result = run_trial(config, tiny_data, logit_source=tiny_teacher(tiny_data))
    assert result.metrics["train_kd"] > 0
    assert result.metrics["val_accuracy"] >= 0.0


def test_distillation_on_digits_reaches_high_accuracy():
    data = load_dataset(DataSpec(name="digits"))
    teacher = run_trial(TrialConfig(student="small_cnn", width=16, alpha=0.0, epochs=6, measure_latency=False), data)
    assert teacher.metrics["val_accuracy"] >= 0.9
    config = TrialConfig(student="resnet8", epochs=8, temperature=4, alpha=0.9, measure_latency=False)
    student = run_trial(config, data, logit_source=OnlineTeacher(teacher.student))
    assert student.metrics["val_accuracy"] >= 0.9
    assert student.metrics["teacher_agreement"] >= 0.9


@pytest.mark.parametrize(
    ("change", "field"),
    [({"alpha": 1.5}, "alpha"), ({"temperature": 0}, "temperature"), ({"lr": -1}, "lr"), ({"colour": 1}, "colour")],
)
def test_trial_config_rejects_bad_values(change, field):
    with pytest.raises(ValidationError, match=field):
        TrialConfig.model_validate({**TINY, **change})


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdsweep.distill", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # the command as a user runs it, in a subprocess
def test_cli_runs_one_trial_and_prints_the_final_table():
    out = run_cli(
        "--dataset",
        "digits",
        "--student",
        "small_cnn",
        "--width",
        "4",
        "--teacher-arch",
        "resnet8",
        "--teacher-epochs",
        "1",
        "--epochs",
        "2",
        "--temperature",
        "4",
        "--alpha",
        "0.9",
    )
    assert out.returncode == 0, out.stderr
    assert "epoch   2/2" in out.stdout
    assert "test_accuracy" in out.stdout
    assert "latency_ms" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--student", "mobilnet_v2"], "student: unknown model 'mobilnet_v2'; did you mean 'mobilenet_v2'?"),
        (["--alpha", "1.5"], "alpha"),
        (["--temperature", "-1"], "temperature"),
        (["--dataset", "/no/such/dir"], "data.name: directory '/no/such/dir' does not exist"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args, message, capsys):
    # In-process: the same main() the command runs (a subprocess start costs seconds per case).
    assert distill.main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_an_epochs_steps_never_read_a_value_back_from_the_device(tiny_data):
    """On a GPU a per-batch `.item()`/`.cpu()`/`if tensor` makes the host wait for every step. On `meta`
    (no data) any such read raises: an epoch of KD from a real teacher cache, trained there, must go
    through every batch and read its losses only at the end."""
    meta = torch.device("meta")
    config = TrialConfig(**{**TINY, "alpha": 0.5})
    cache = build_teacher_cache(tiny_model(tiny_data), tiny_data, 1, torch.device("cpu"), memory_limit_mb=16)
    student = place(tiny_model(tiny_data), meta)
    optimizer, _ = build_optimizer(config, student)
    params = config.loss_params
    totals = train_one_epoch(student, tiny_data, config, 1, 1, optimizer, get_loss("kd"), params, cache)
    assert totals.sums.device == meta
    assert totals.seen == len(tiny_data.train)
    with pytest.raises(NotImplementedError, match="meta"):
        totals.means()  # the one read-back, which a real device answers


def test_loss_totals_are_sample_weighted_means():
    totals = LossTotals(torch.device("cpu"))
    totals.add(LossTerms(torch.tensor(1.0), torch.tensor(0.5), torch.tensor(2.0)), 3)
    totals.add(LossTerms(torch.tensor(3.0), torch.tensor(1.5), torch.tensor(0.0)), 1)
    # (1*3 + 3*1) / 4 = 1.5; (0.5*3 + 1.5) / 4 = 0.75; (2*3 + 0) / 4 = 1.5
    assert totals.means() == {"train_loss": 1.5, "train_ce": 0.75, "train_kd": 1.5}
