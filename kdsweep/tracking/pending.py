"""MLflow calls that outlive a tracking server going away: kept in order, retried with backoff.

A trial must never wait on (or fail because of) a server that is slow or down: its calls run on a
thread of their own (`background`), in order; when one fails, it and everything after it wait, and the
next try comes 1 s later, then 2, 4, ... up to a minute, or at once when the server is known to be
back (`wake`: a restarted private server). At its end a trial waits for what is pending only while the
server answers, and says exactly what it could not store; the driver repairs that from Tune's record.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from kdsweep.errors import one_line

FIRST_DELAY_S, MAX_DELAY_S = 1.0, 60.0
WAKE_EVERY_S = 1.0  # while waiting to retry, how often `wake` is asked whether the server is back
# Inside a sweep, MLflow's client must fail fast (its default is 7 retries with exponential backoff,
# minutes per call) and let this queue decide when to try again; a call that hangs ends after the
# timeout (on the queue's thread: no training loop waits for it).
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


class Pending:
    """Calls to MLflow, each named for the user ("metrics of epoch 3") should it never be stored.

    `background` False: a call is tried when it is added, and `flush` tries the rest (what the driver
    does at its end). True: a thread of the queue's own tries them, and `add` never waits.
    """

    def __init__(
        self, log: Callable[[str], None] = print, background: bool = False, wake: Callable[[], bool] | None = None
    ) -> None:
        self.calls: deque[tuple[str, Callable[[], None]]] = deque()
        self.log = log
        self.wake = wake or (lambda: False)
        self.next_try = 0.0
        self.delay = FIRST_DELAY_S
        self.failing = False
        self.changed = threading.Condition()  # a call added, stored or failed; the queue closed
        self.closed = False
        self.thread = threading.Thread(target=self._serve, name="kdsweep-mlflow", daemon=True) if background else None
        if self.thread:
            self.thread.start()

    def add(self, what: str, call: Callable[[], None]) -> None:
        with self.changed:
            self.calls.append((what, call))
            self.changed.notify_all()
        if self.thread is None:
            self._work(deadline=time.monotonic())

    def flush(self, patience_s: float = 0.0, while_failing: bool = True) -> bool:
        """Wait for what is pending while the server answers, and while it fails up to `patience_s`
        seconds after this was called (not at all unless `while_failing`); True when nothing is left."""
        deadline = time.monotonic() + patience_s
        if self.thread is None:
            return self._work(deadline, while_failing)
        with self.changed:
            while self.calls and self.thread.is_alive():
                if self.failing and (not while_failing or time.monotonic() >= deadline):
                    break
                self.changed.wait(WAKE_EVERY_S)
            return not self.calls

    def close(self) -> None:
        """Try nothing more (a call under way ends first); what is left stays `unsaved`."""
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def unsaved(self) -> list[str]:
        with self.changed:
            return [what for what, _ in self.calls]

    def _woken(self) -> bool:
        try:
            return self.wake()
        except Exception:  # not knowing whether the server is back is no reason to stop: the back-off goes on
            return False

    def _serve(self) -> None:
        while True:
            with self.changed:
                while not self.calls and not self.closed:
                    self.changed.wait()
                if self.closed:
                    return
            self._work(math.inf)

    def _work(self, deadline: float, while_failing: bool = True) -> bool:
        """Try the calls in order until none is left (True), or the deadline, a failure that
        `while_failing` does not wait out, or `close` (False)."""
        while True:
            with self.changed:
                if self.closed:
                    return False
                if not self.calls:
                    return True
                what, call = self.calls[0]
            now = time.monotonic()
            if now < self.next_try:
                if self._woken():
                    self.next_try = now
                    continue
                if now >= deadline or not while_failing:
                    return False
                with self.changed:
                    self.changed.wait(min(self.next_try, deadline, now + WAKE_EVERY_S) - now)
                continue
            try:
                call()
            except Exception as error:  # unreachable, timed out, or the server erred: all worth a retry
                if not self.failing:
                    self.log(f"MLflow: could not store {what} ({one_line(error)}); retrying, training goes on")
                with self.changed:
                    self.failing = True
                    self.next_try = time.monotonic() + self.delay
                    self.delay = min(2 * self.delay, MAX_DELAY_S)
                    self.changed.notify_all()
                continue
            if self.failing:
                self.log(f"MLflow: reachable again, stored {what}")
            with self.changed:
                self.calls.popleft()
                self.failing, self.delay = False, FIRST_DELAY_S
                self.changed.notify_all()


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
