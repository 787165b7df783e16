"""THE trial: one plain config dict -> data, student, loss, training loop, evaluation, reports.

The same function serves a Ray Tune trial (search.py wraps it in a few lines), the teacher's own
training (a trial with alpha=0 and no teacher), and the command line:

    python -m kdsweep.distill --dataset digits --student resnet8 --temperature 4 --alpha 0.9
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from torch import nn

from kdsweep.data import Batch, DataSpec, Dataset, Views, eval_batches, load_dataset, train_batches
from kdsweep.losses import LossParams, dkd_warmup, get_loss, needs_teacher
from kdsweep.models import create_model, load_pretrained, measure_cost


class TrialConfig(BaseModel):
    """Everything one trial needs; the keys of a Tune config. Validated once, frozen after."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: DataSpec = DataSpec()
    student: str = "resnet8"
    width: int | None = Field(default=None, gt=0)  # width-configurable students only
    pretrained: str | None = None  # torchvision weights to start from, e.g. IMAGENET1K_V1
    loss: Literal["kd", "dkd"] = "kd"
    temperature: float = Field(default=4.0, gt=0)
    alpha: float = Field(default=0.9, ge=0)  # kd: weight of the soft term, <= 1; dkd: TCKD weight
    beta: float = Field(default=8.0, ge=0)  # dkd only: NCKD weight
    dkd_warmup_epochs: int = Field(default=0, ge=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(default=0.05, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    step_size: int = Field(default=30, gt=0)  # step schedule: epochs between decays
    gamma: float = Field(default=0.1, gt=0, le=1)
    batch_size: int = Field(default=64, gt=0)
    epochs: int = Field(default=10, gt=0)
    view_epochs: int | None = Field(default=None, gt=0)  # augmented views repeat every view_epochs epochs; None: fresh every epoch
    seed: int = 0
    num_threads: int | None = Field(default=None, gt=0)  # default: the CPUs this process may use
    measure_latency: bool = True
    fail_once_at_epoch: int | None = Field(default=None, gt=0)  # chaos testing: crash once there, to exercise retries

    @model_validator(mode="after")
    def _alpha_range(self) -> "TrialConfig":
        if self.loss == "kd" and self.alpha > 1:
            raise ValueError("alpha: for loss 'kd' alpha is the soft-term weight and must be in [0, 1]")
        return self

    @property
    def loss_params(self) -> LossParams:
        return LossParams(temperature=self.temperature, alpha=self.alpha, beta=self.beta)

    @property
    def needs_teacher(self) -> bool:
        return needs_teacher(self.loss, self.loss_params)


class TeacherOutputs(Protocol):
    """Where a trial gets teacher logits: a live module (online) or the shared cache."""

    def train_logits(self, batch: Batch, views: Views | None, epoch: int) -> torch.Tensor: ...

    def eval_logits(self, data: Dataset, split: str, device: torch.device) -> torch.Tensor: ...


class OnlineTeacher:
    """Runs the teacher forward on every training batch: exact, and as costly as it sounds."""

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        self.module = module.to(device).eval()
        self.device = device
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with autocast(self.device):
            return self.module(images).float()

    def train_logits(self, batch: Batch, views: Views | None, epoch: int) -> torch.Tensor:
        return self.forward(batch.images)

    def eval_logits(self, data: Dataset, split: str, device: torch.device) -> torch.Tensor:
        batches = eval_batches(data, getattr(data, split), 512, device)
        return torch.cat([self.forward(b.images) for b in batches])


# A report gets the epoch's metrics and a callable that returns the state to checkpoint (called
# only by reporters that save checkpoints, so plain calls do not pay for copying state).
Report = Callable[[dict[str, float], Callable[[], dict[str, Any]]], None]


@dataclass
class TrialResult:
    metrics: dict[str, float]
    student: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device):
    """bf16 autocast on CUDA (no loss scaling needed), a no-op on CPU where fp32 is faster."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def setup_process(config: TrialConfig, device: torch.device) -> None:
    threads = config.num_threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)


def build_optimizer(config: TrialConfig, model: nn.Module) -> tuple[torch.optim.Optimizer, Any]:
    if config.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True
        )
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    elif config.schedule == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    return optimizer, scheduler


def run_trial(
    config: dict[str, Any] | TrialConfig,
    report: Report | None = None,
    teacher: nn.Module | TeacherOutputs | None = None,
    data: Dataset | None = None,
    resume_state: dict[str, Any] | None = None,
) -> TrialResult:
    """Train one student. `teacher` is a module (run online) or a logit source (the shared cache).

    `data` may be passed in so that a sweep decodes its dataset once; `resume_state` is a state
    returned through `report` (a checkpoint) to continue after its epoch.
    """
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.model_validate(config)
    device = pick_device()
    setup_process(cfg, device)
    data = data if data is not None else load_dataset(cfg.data)
    teacher_outputs = _teacher_outputs(cfg, teacher, device)

    student = create_model(cfg.student, data.num_classes, data.in_channels, data.image_size, cfg.width)
    if cfg.pretrained and resume_state is None:
        load_pretrained(student, cfg.student, cfg.pretrained)
    cost = measure_cost(student, data.input_shape) if cfg.measure_latency else None
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    student = student.to(device, memory_format=memory_format)
    optimizer, scheduler = build_optimizer(cfg, student)
    start_epoch = 1
    if resume_state is not None:
        student.load_state_dict(resume_state["student"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        start_epoch = resume_state["epoch"] + 1

    teacher_val = teacher_outputs.eval_logits(data, "val", device) if teacher_outputs else None
    static = {"params": cost.params, "flops": cost.flops, "latency_ms": cost.latency_ms} if cost else {}
    loss_fn = get_loss(cfg.loss)
    history: list[dict[str, float]] = []
    metrics: dict[str, float] = {}
    for epoch in range(start_epoch, cfg.epochs + 1):
        started = time.perf_counter()
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout etc.: a resumed epoch replays exactly
        if cfg.fail_once_at_epoch == epoch and resume_state is None:
            raise RuntimeError(f"injected failure at epoch {epoch} (fail_once_at_epoch)")
        lr = optimizer.param_groups[0]["lr"]
        params = LossParams(cfg.temperature, cfg.alpha, cfg.beta, dkd_warmup(epoch, cfg.dkd_warmup_epochs))
        train = train_one_epoch(student, data, cfg, epoch, device, optimizer, loss_fn, params, teacher_outputs)
        scheduler.step()
        metrics = {"epoch": epoch, "lr": lr, **train, **evaluate(student, data, "val", device, teacher_val), **static}
        metrics["epoch_seconds"] = time.perf_counter() - started
        diverged = not math.isfinite(train["train_loss"])
        if diverged:  # an outcome of the hyperparameters, not a crash: retrying would diverge again
            metrics["diverged"] = 1.0
        history.append(metrics)
        if report is not None:
            epoch_done = epoch

            def state() -> dict[str, Any]:
                # A copy: training goes on mutating the live tensors after the report.
                return copy.deepcopy({
                    "student": student.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch_done,
                })

            report(metrics, state)
        if diverged:
            break
    return TrialResult(metrics, student, history)


def _teacher_outputs(cfg: TrialConfig, teacher, device: torch.device) -> TeacherOutputs | None:
    if not cfg.needs_teacher:
        return None
    if teacher is None:
        raise ValueError(f"loss '{cfg.loss}' with alpha={cfg.alpha} needs a teacher, and none was given")
    if isinstance(teacher, nn.Module):
        return OnlineTeacher(teacher, device)
    return teacher


def train_one_epoch(
    student: nn.Module,
    data: Dataset,
    cfg: TrialConfig,
    epoch: int,
    device: torch.device,
    optimizer: torch.optim.Optimizer,
    loss_fn,
    params: LossParams,
    teacher: TeacherOutputs | None,
) -> dict[str, float]:
    student.train()
    totals = torch.zeros(3, dtype=torch.float64)
    seen = 0
    for batch, views in train_batches(data, cfg.batch_size, epoch, cfg.seed, device, cfg.view_epochs):
        teacher_logits = teacher.train_logits(batch, views, epoch) if teacher is not None else None
        with autocast(device):
            logits = student(batch.images)
        terms = loss_fn(logits.float(), teacher_logits, batch.labels, params)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        n = len(batch.labels)
        totals += torch.stack([terms.total.detach(), terms.ce.detach(), terms.kd.detach()]).double().cpu() * n
        seen += n
    total, ce, kd = (totals / seen).tolist()
    return {"train_loss": total, "train_ce": ce, "train_kd": kd}


@torch.no_grad()
def predict(model: nn.Module, data: Dataset, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of a whole split, in order."""
    model.eval()
    logits, labels = [], []
    for batch in eval_batches(data, getattr(data, split), 512, device):
        with autocast(device):
            logits.append(model(batch.images).float())
        labels.append(batch.labels)
    return torch.cat(logits), torch.cat(labels)


def evaluate(
    model: nn.Module, data: Dataset, split: str, device: torch.device, teacher_logits: torch.Tensor | None = None
) -> dict[str, float]:
    """Accuracy, macro precision/recall/F1 (scikit-learn), CE loss and agreement with the teacher."""
    logits, labels = predict(model, data, split, device)
    predicted = logits.argmax(1).cpu().numpy()
    truth = labels.cpu().numpy()
    precision, recall, f1, _ = precision_recall_fscore_support(truth, predicted, average="macro", zero_division=0)
    metrics = {
        f"{split}_accuracy": float(accuracy_score(truth, predicted)),
        f"{split}_macro_precision": float(precision),
        f"{split}_macro_recall": float(recall),
        f"{split}_macro_f1": float(f1),
        f"{split}_loss": float(nn.functional.cross_entropy(logits, labels)),
    }
    if teacher_logits is not None:
        agree = (teacher_logits.argmax(1).cpu().numpy() == predicted).mean()
        metrics["teacher_agreement"] = float(agree)
    return metrics


if __name__ == "__main__":
    from kdsweep.trial_cli import main

    raise SystemExit(main())
