"""Progress reporting and cooperative cancellation shared by every long step."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from .errors import Cancelled


@dataclass
class Progress:
    """One progress event: ``done`` of ``total`` units of ``stage``."""

    stage: str
    done: int
    total: int
    elapsed_s: float
    eta_s: float | None = None
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def as_dict(self) -> dict:
        return {"event": "progress", **asdict(self), "fraction": round(self.fraction, 4)}


ProgressCallback = Callable[[Progress], None]


class CancelToken:
    """Set from any thread (or a signal handler); checked between work units."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self, subject: str = "run") -> None:
        if self._event.is_set():
            raise Cancelled(subject)


class ProgressTracker:
    """Turns ``step()`` calls into ``Progress`` events with elapsed time and ETA."""

    def __init__(self, stage: str, total: int, callback: ProgressCallback | None = None) -> None:
        self.stage, self.total, self.callback = stage, total, callback
        self.done = 0
        self.start = time.perf_counter()

    def step(self, n: int = 1, message: str = "") -> Progress:
        self.done = min(self.total, self.done + n)
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else None
        event = Progress(self.stage, self.done, self.total, elapsed, eta, message)
        if self.callback is not None:
            self.callback(event)
        return event


@contextlib.contextmanager
def cancel_on_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[CancelToken]:
    """A token that the first SIGTERM/SIGINT cancels; a second one interrupts at once.

    A process asked to stop (the Slicer module's Cancel, a batch scheduler, Ctrl-C) thus finishes the work unit
    it is in and leaves through ``Cancelled``, writing no half output; one that does not stop quickly is killed
    by its parent anyway. Outside the main thread signals cannot be caught: the token is then only manual.
    """
    token = CancelToken()
    if threading.current_thread() is not threading.main_thread():
        yield token
        return

    def handle(signum, frame) -> None:
        if token.cancelled:
            raise KeyboardInterrupt
        token.cancel()

    previous = {sig: signal.signal(sig, handle) for sig in signals}
    try:
        yield token
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Stages:
    """A task pipeline's named stages: a progress event as each begins, a cancel check between them, and each
    stage's wall time (``end()`` returns them, seconds by stage name)."""

    def __init__(self, task: str, progress: ProgressCallback | None, cancel: CancelToken | None) -> None:
        self.task, self.progress, self.cancel = task, progress, cancel
        self.timings: dict[str, float] = {}
        self._stage: str | None = None
        self._start = time.perf_counter()

    def begin(self, stage: str) -> None:
        now = time.perf_counter()
        if self._stage is not None:
            self.timings[self._stage] = round(now - self._start, 3)
        if self.cancel is not None:
            self.cancel.check(self.task)
        self._stage, self._start = stage, now
        if self.progress is not None:
            self.progress(Progress(stage, 0, 1, 0.0, None, stage))

    def end(self) -> dict[str, float]:
        self.begin("done")
        return self.timings
