"""Progress reporting and cooperative cancellation shared by every long step."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
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
