"""MLflow calls that outlive a tracking server going away: kept in order, retried with backoff.

A trial must never wait on (or fail because of) a server that is down: each call is tried when it is
made; when one fails, it and everything after it wait, and the next try comes 1 s later, then 2, 4,
... up to a minute, at the trial's next report. At its end a trial waits a bounded time for the rest
(`run.tracking_patience_s`) and says exactly what it could not store.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from kdsweep.errors import one_line

FIRST_DELAY_S, MAX_DELAY_S = 1.0, 60.0
# Inside a sweep, MLflow's client must fail fast (its default is 7 retries with exponential backoff,
# minutes of blocking per call) and let this queue decide when to try again.
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


class Pending:
    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.calls: deque[tuple[str, Callable[[], None]]] = deque()
        self.log = log
        self.next_try = 0.0
        self.delay = FIRST_DELAY_S
        self.failing = False

    def add(self, what: str, call: Callable[[], None]) -> None:
        """`what` names it for the user ("metrics of epoch 3"), should it never be stored."""
        self.calls.append((what, call))
        self.flush()

    def flush(self, patience_s: float = 0.0) -> bool:
        """Try what is pending, for up to `patience_s` seconds; True when nothing is left."""
        deadline = time.monotonic() + patience_s
        while self.calls:
            now = time.monotonic()
            if now < self.next_try:
                if now >= deadline:
                    return False
                time.sleep(min(self.next_try, deadline) - now)
                continue
            what, call = self.calls[0]
            try:
                call()
            except Exception as error:  # unreachable, timed out, or the server erred: all worth a retry
                if not self.failing:
                    self.log(f"MLflow: could not store {what} ({one_line(error)}); retrying, training goes on")
                self.failing = True
                self.next_try = time.monotonic() + self.delay
                self.delay = min(2 * self.delay, MAX_DELAY_S)
                continue
            self.calls.popleft()
            if self.failing:
                self.log(f"MLflow: reachable again, stored {what}")
            self.failing, self.delay = False, FIRST_DELAY_S
        return True

    def unsaved(self) -> list[str]:
        return [what for what, _ in self.calls]


def describe(unsaved: list[str]) -> str:
    """["metrics of epoch 3", "metrics of epoch 4", "the student model"]
    -> "metrics of epochs 3-4; the student model"."""
    epochs = [int(what.rsplit(" ", 1)[1]) for what in unsaved if what.startswith("metrics of epoch ")]
    others = [what for what in unsaved if not what.startswith("metrics of epoch ")]
    parts = others[:1]  # the run itself first, when even that was not created
    if epochs:
        parts.append(f"metrics of epoch{'s' if len(epochs) > 1 else ''} {_ranges(sorted(epochs))}")
    return "; ".join(parts + others[1:])


def _ranges(numbers: list[int]) -> str:
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in spans)
