"""Batch-1 latency on CPU threads (one by default): warm up, then the median of several rounds' medians.

The median of round medians shrugs off what a shared machine does to a few calls or to a whole
round (another process waking up), where a mean or a single long run would not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

ROUNDS = 7
WARMUP_SECONDS, WARMUP_CALLS = 0.05, 10


def batch1_latency_ms(call: Callable[[], object], seconds: float = 1.0, threads: int = 1) -> float:
    """Median over ROUNDS rounds of each round's median call time, in milliseconds.

    Args:
        call: one batch-1 inference on fixed inputs (a runner's `bind(image)`).
        seconds: about how long to measure, warm-up excluded; each round gets an equal share.
        threads: torch's intra-op threads meanwhile (an ONNX Runtime session has its own, set when built).
    """
    with torch_threads(threads), torch.inference_mode():
        calls, start = 0, time.perf_counter()
        while calls < WARMUP_CALLS or time.perf_counter() - start < WARMUP_SECONDS:
            call()
            calls += 1
        per_call = (time.perf_counter() - start) / calls
        per_round = max(3, int(seconds / ROUNDS / per_call))
        medians = []
        for _ in range(ROUNDS):
            times = []
            for _ in range(per_round):
                begin = time.perf_counter()
                call()
                times.append(time.perf_counter() - begin)
            medians.append(statistics.median(times))
    return statistics.median(medians) * 1e3


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op pool at `threads` threads, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
