"""Run a task on every selected series, one after the other, as one job the widget can follow and cancel.

``SeriesJob`` has the lifecycle of a ``TaskJob`` (start / poll / finished / cancel / finish), so the widget's
``SlicerTaskRunner`` drives it unchanged. Each series gets its own job, and so its own output segmentation.
A series that fails is recorded with its one-line reason and the queue goes on with the next; cancel stops the
running series and drops the rest. No Qt here: runs on ``slicer-core``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clinseg.errors import Cancelled

from .runner import RunError

POLL_S = 0.05


@dataclass
class SeriesOutcome:
    """What the queue did: imported nodes per series name, and the one-line reason of each failure."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    cancelled: bool = False

    def summary(self) -> str:
        text = f"{len(self.nodes)} of {len(self.nodes) + len(self.failures)} series done"
        if self.failures:
            text += "; failed: " + "; ".join(f"{name}: {reason}" for name, reason in self.failures.items())
        return text + (" (cancelled)" if self.cancelled else "")


def failure_reason(error: BaseException) -> str:
    return error.message if isinstance(error, RunError) else str(error)


class SeriesJob:
    """The jobs of ``volume_nodes`` in turn; ``make_job(node)`` builds one (unstarted) task job per series."""

    def __init__(self, volume_nodes: Sequence[Any], make_job: Callable[[Any], Any]) -> None:
        if not volume_nodes:
            raise ValueError("no series selected")
        self._pending = list(volume_nodes)
        self._make_job = make_job
        self.total = len(self._pending)
        self.outcome = SeriesOutcome()
        self.current: Any = None
        self._current_name = ""
        self.started_at: float | None = None
        self._cancelled = False

    def start(self) -> SeriesJob:
        if self.started_at is not None:
            raise RuntimeError("this job was already started")
        self.started_at = time.monotonic()
        self._start_next()
        return self

    def _start_next(self) -> None:
        self.current = None
        while self._pending and not self._cancelled:
            node = self._pending.pop(0)
            self._current_name = self._unique_name(node)
            try:
                self.current = self._make_job(node).start()
                return
            except Exception as error:  # bad options or an empty volume: this series fails, the rest go on
                self.outcome.failures[self._current_name] = failure_reason(error)

    def _unique_name(self, item: Any) -> str:
        """The series' node name (the first node's for a multi-sequence case), made unique in the outcome."""
        node = item[0] if isinstance(item, list | tuple) else item
        base = node.GetName() if node is not None else "series"
        name, n = base, 2
        while name in self.outcome.nodes or name in self.outcome.failures:
            name, n = f"{base} ({n})", n + 1
        return name

    @property
    def done_count(self) -> int:
        return len(self.outcome.nodes) + len(self.outcome.failures)

    def poll(self) -> list[dict]:
        """The running series' events (stage labels say which series), moving on when it has ended."""
        if self.current is None:
            return []
        events = self.current.poll()
        prefix = f"series {self.done_count + 1}/{self.total} ({self._current_name}): "
        for event in events:
            if event.get("event") == "progress":
                event["stage"] = prefix + str(event.get("stage", ""))
        if self.current.finished:
            self._collect()
            if not self._cancelled:
                self._start_next()
        return events

    def _collect(self) -> None:
        job, self.current = self.current, None
        try:
            self.outcome.nodes[self._current_name] = job.finish()
        except Cancelled:
            self.outcome.cancelled = True
        except Exception as error:
            self.outcome.failures[self._current_name] = failure_reason(error)

    @property
    def running(self) -> bool:
        return self.started_at is not None and not self.finished

    @property
    def finished(self) -> bool:
        return self.started_at is not None and self.current is None and (self._cancelled or not self._pending)

    def cancel(self) -> None:
        """Stop the running series (it writes nothing) and skip the ones not started yet."""
        self._cancelled = True
        self.outcome.cancelled = bool(self._pending) or self.current is not None
        self._pending.clear()
        if self.current is not None:
            self.current.cancel()

    def finish(self) -> SeriesOutcome:
        """After the end: the outcome of every series; a cancelled queue raises ``Cancelled`` as one job would."""
        self._wait()
        if self.outcome.cancelled and not self.outcome.nodes:
            raise Cancelled("series")
        return self.outcome

    def run(self, timeout: float | None = None, on_event: Callable[[dict], None] | None = None) -> SeriesOutcome:
        """Block until every series has run (scripts); ``timeout`` bounds the whole queue."""
        if self.started_at is None:
            self.start()
        self._wait(timeout, on_event)
        return self.finish()

    def _wait(self, timeout: float | None = None, on_event: Callable[[dict], None] | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        timed_out = False
        while not self.finished:
            if deadline is not None and time.monotonic() > deadline and not self._cancelled:
                self.cancel()  # then poll on until the running child has gone
                timed_out = True
            for event in self.poll():
                if on_event is not None:
                    on_event(event)
            time.sleep(POLL_S)
        if timed_out:
            raise TimeoutError(f"{self.total} series did not finish within {timeout} s")
