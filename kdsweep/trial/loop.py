"""THE trial: a TrialConfig and a dataset -> a student, trained and evaluated epoch by epoch.

The same function serves a Ray Tune trial (kdsweep.sweep.trainable), the teacher's own training
(alpha=0: plain cross-entropy, no teacher), the benchmarks and `python -m kdsweep.distill`.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from kdsweep.data import Dataset, on_device, train_batches
from kdsweep.losses import LossFn, LossParams, LossTerms, dkd_warmup, get_loss
from kdsweep.models import ModelCost, create_model, load_pretrained, measure_cost
from kdsweep.seeds import epoch_seed
from kdsweep.trial.collapse import chance_level, has_collapsed
from kdsweep.trial.config import TrialConfig
from kdsweep.trial.device import autocast, model_device, pick_device, place
from kdsweep.trial.evaluate import evaluate
from kdsweep.trial.outputs import TeacherOutputs

# What run_trial reports every epoch: the names an objective may rank by, checked before a sweep starts.
EPOCH_METRICS = (
    "epoch",
    "lr",
    "epoch_seconds",
    "train_loss",
    "train_ce",
    "train_kd",
    "val_accuracy",
    "val_macro_precision",
    "val_macro_recall",
    "val_macro_f1",
    "val_loss",
)
DISTILLING_METRICS = ("teacher_agreement",)  # only from a trial that runs a teacher
COST_METRICS = ("params", "flops", "latency_ms")  # only with measure_latency


def reported_metrics(distils: bool, measures_cost: bool) -> tuple[str, ...]:
    """The metrics of every report of a trial that distils (or not) and measures its cost (or not)."""
    return EPOCH_METRICS + (DISTILLING_METRICS if distils else ()) + (COST_METRICS if measures_cost else ())


# A report gets the epoch's metrics and a callable that returns the state to checkpoint (called
# only by reporters that save checkpoints, so plain calls do not pay for copying state).
Report = Callable[[dict[str, float], Callable[[], dict[str, Any]]], None]


@dataclass
class TrialResult:
    metrics: dict[str, float]
    student: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)


def run_trial(
    config: TrialConfig,
    data: Dataset,
    logit_source: TeacherOutputs | None = None,
    report: Report | None = None,
    resume_state: dict[str, Any] | None = None,
    cost: ModelCost | None = None,
) -> TrialResult:
    """Train one student on `data`, distilling from the teacher behind `logit_source` when its loss needs one.

    Args:
        config: the validated trial (student, loss, optimiser, epochs, seed, ...).
        data: the loaded dataset; a sweep decodes it once and shares it with every trial.
        logit_source: where teacher logits come from (online or the shared cache); its view schedule
            applies to every trial that gets it, distilling or not, so baselines see the same images.
        report: called after every epoch with its metrics and a callable returning the state to
            checkpoint.
        resume_state: such a state, to continue after its epoch (a crashed or resumed trial).
        cost: the student's cost, reported every epoch with measure_latency: a sweep's is measured once per
            architecture before its trials (kdsweep.sweep.cost_stage); a lone trial's (None) is measured here.

    Example:
        >>> data = load_dataset(DataSpec(name="digits"))
        >>> result = run_trial(TrialConfig(student="small_cnn", alpha=0.0, epochs=2, measure_latency=False), data)
        >>> result.metrics["val_accuracy"]  # scratch training, 2 epochs
        0.875
    """
    device = pick_device()
    _setup_process(config, device)
    data = on_device(data, device)  # on a GPU: the splits go there once, not a batch at a time
    if config.needs_teacher and logit_source is None:
        raise ValueError(f"loss '{config.loss}' with alpha={config.alpha} needs a teacher, and none was given")
    distill_from = logit_source if config.needs_teacher else None
    view_epochs = logit_source.view_epochs if logit_source is not None else None

    student = create_model(config.student, data.num_classes, data.in_channels, data.image_size, config.width)
    if config.pretrained and resume_state is None:
        load_pretrained(student, config.student, config.pretrained)
    if config.measure_latency and cost is None:
        cost = measure_cost(student, data.input_shape)
    student = place(student, device)
    optimizer, scheduler = build_optimizer(config, student)
    start_epoch = 1
    if resume_state is not None:
        student.load_state_dict(resume_state["student"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        start_epoch = resume_state["epoch"] + 1

    teacher_val = distill_from.eval_logits(data, "val", device) if distill_from else None
    static = cost.metrics() if config.measure_latency and cost is not None else {}
    loss_fn = get_loss(config.loss)
    chance = chance_level(data.val.labels)
    history: list[dict[str, float]] = []
    metrics: dict[str, float] = {}
    for epoch in range(start_epoch, config.epochs + 1):
        started = time.perf_counter()
        torch.manual_seed(epoch_seed(config.seed, epoch))  # dropout etc.: a resumed epoch replays exactly
        lr = optimizer.param_groups[0]["lr"]
        params = replace(config.loss_params, warmup=dkd_warmup(epoch, config.dkd_warmup_epochs))
        totals = train_one_epoch(student, data, config, epoch, view_epochs, optimizer, loss_fn, params, distill_from)
        train = totals.means()
        scheduler.step()
        metrics = {"epoch": epoch, "lr": lr, **train, **evaluate(student, data, "val", teacher_val), **static}
        metrics["epoch_seconds"] = time.perf_counter() - started
        diverged = not math.isfinite(train["train_loss"])
        if diverged:  # an outcome of the hyperparameters, not a crash: retrying would diverge again
            # The non-finite values stay in the report: Tune fails a trial whose report lacks the
            # metric its scheduler ranks on (val_loss diverges too). MLflow and the leaderboard drop them.
            metrics["diverged"] = 1.0
        history.append(metrics)
        accuracies = {m["epoch"]: m["val_accuracy"] for m in history}
        collapsed = config.stop_at_chance and not diverged and has_collapsed(accuracies, config, chance)
        if collapsed:  # learned nothing after its warm-up: the rest of its budget is better spent elsewhere
            metrics.update(collapsed=1.0, chance_level=chance)
        if report is not None:
            report(metrics, _checkpoint(student, optimizer, scheduler, epoch))
        if diverged or collapsed:
            break
    return TrialResult(metrics, student, history)


def _setup_process(config: TrialConfig, device: torch.device) -> None:
    torch.set_num_threads(config.num_threads or len(os.sched_getaffinity(0)))
    torch.manual_seed(config.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # a trial's shapes are fixed: pick the fastest convolutions once


def _checkpoint(student: nn.Module, optimizer, scheduler, epoch: int) -> Callable[[], dict[str, Any]]:
    def state() -> dict[str, Any]:
        # A copy: training goes on mutating the live tensors after the report.
        return copy.deepcopy(
            {
                "student": student.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
            }
        )

    return state


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


def train_one_epoch(
    student: nn.Module,
    data: Dataset,
    config: TrialConfig,
    epoch: int,
    view_epochs: int | None,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    params: LossParams,
    logit_source: TeacherOutputs | None,
) -> LossTotals:
    """One epoch of training whose steps never wait for the device: nothing per batch reads a value
    back (`.item()`, `.cpu()`, `if tensor`), so a GPU runs ahead of the Python that feeds it."""
    student.train()
    device = model_device(student)
    totals = LossTotals(device)
    for batch, views in train_batches(data, config.batch_size, epoch, config.seed, device, view_epochs):
        teacher_logits = logit_source.train_logits(batch, views, epoch) if logit_source is not None else None
        with autocast(device):
            logits = student(batch.images)
        terms = loss_fn(logits.float(), teacher_logits, batch.labels, params)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        totals.add(terms, len(batch.labels))
    return totals


class LossTotals:
    """An epoch's sample-weighted loss sums, kept on the training device: a batch adds to them without
    waiting for the device (no `.item()`, `.cpu()`); the epoch reads them back once, in `means`."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)
        self.seen = 0

    def add(self, terms: LossTerms, n: int) -> None:
        self.sums += torch.stack([terms.total.detach(), terms.ce.detach(), terms.kd.detach()]).double() * n
        self.seen += n

    def means(self) -> dict[str, float]:
        total, ce, kd = (self.sums / self.seen).tolist()
        return {"train_loss": total, "train_ce": ce, "train_kd": kd}
