"""What a model costs on the edge: parameters, FLOPs (torch.utils.flop_counter) and batch-1 CPU latency."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class ModelCost:
    params: int
    flops: int  # for one input; torch's counter counts a multiply-add as 2 FLOPs
    latency_ms: float  # median batch-1 CPU latency (a sweep's: in its deploy target, once per architecture)

    def metrics(self) -> dict[str, float]:
        """What a trial reports of its student's cost, every epoch."""
        return {"params": self.params, "flops": self.flops, "latency_ms": self.latency_ms}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    example = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example)
    model.train(was_training)
    return int(counter.get_total_flops())


def cpu_latency_ms(model: nn.Module, input_shape: tuple[int, int, int], min_run_time: float = 0.2) -> float:
    """Median batch-1 latency on one CPU thread, after warm-up (Timer's blocked_autorange)."""
    # torch.utils.benchmark imports cpp_extension, which warns about CUDA on CPU-only machines.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils.benchmark import Timer

    cpu_model = copy.deepcopy(model).cpu().eval()
    example = torch.zeros(1, *input_shape)
    with torch.no_grad():
        for _ in range(3):
            cpu_model(example)
        timer = Timer(stmt="model(x)", globals={"model": cpu_model, "x": example}, num_threads=1)
        measurement = timer.blocked_autorange(min_run_time=min_run_time)
    return measurement.median * 1e3


def measure_cost(model: nn.Module, input_shape: tuple[int, int, int]) -> ModelCost:
    return ModelCost(count_params(model), count_flops(model, input_shape), cpu_latency_ms(model, input_shape))
