"""How a command talks to its caller: a progress bar for people, JSON lines for programs.

``--progress jsonl`` turns every event into one flushed JSON object per line on
stdout (``{"event": "progress" | "log" | "result" | "error", ...}``) so another
process (e.g. the Slicer module's background runner) can follow a run. In
``human`` mode the progress bar and log lines go to stderr, keeping stdout for
the result; ``none`` is ``human`` without the bar.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from ..progress import Progress

MODES = ("human", "jsonl", "none")
BAR_WIDTH = 28


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--progress {human,jsonl,none}``; the default is a bar when stderr is a terminal, else none."""
    parser.add_argument(
        "--progress",
        choices=MODES,
        default=None,
        help="progress output: human bar on stderr, JSON lines on stdout, or none (default: human on a terminal)",
    )


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def _plain(value: Any) -> Any:
    """Floats rounded for readability; everything else as JSON would show it (paths as strings)."""
    return round(value, 3) if isinstance(value, float) else value


class Reporter:
    """Sends progress, log lines, the result and errors of one command to ``stream`` (and stderr)."""

    def __init__(self, mode: str = "human", stream: TextIO | None = None, err: TextIO | None = None,
                 min_interval_s: float = 0.1) -> None:
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.stream = stream if stream is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.min_interval_s = min_interval_s
        self._bar_open = False  # a bar line without its newline yet
        self._last_draw = 0.0
        self._last_stage = ""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Reporter:
        mode = getattr(args, "progress", None)
        if mode is None:
            mode = "human" if sys.stderr.isatty() else "none"
        return cls(mode)

    # --- output -------------------------------------------------------------------
    def _emit(self, event: dict) -> None:
        self.stream.write(json.dumps(event, default=str) + "\n")
        self.stream.flush()

    def _end_bar(self) -> None:
        if self._bar_open:
            self.err.write("\n")
            self.err.flush()
            self._bar_open = False

    def progress(self, event: Progress) -> None:
        """A ``ProgressCallback``: pass ``reporter.progress`` to any long step."""
        if self.mode == "jsonl":
            self._emit({key: _plain(value) for key, value in event.as_dict().items()})
            return
        if self.mode != "human":
            return
        now = time.monotonic()
        finished = event.total > 0 and event.done >= event.total
        if event.stage == self._last_stage and not finished and now - self._last_draw < self.min_interval_s:
            return  # redraw at most ~10 times a second
        if event.stage != self._last_stage:
            self._end_bar()
        self._last_stage, self._last_draw = event.stage, now
        filled = int(round(BAR_WIDTH * event.fraction))
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        eta = "done" if finished else f"ETA {_clock(event.eta_s)}"
        line = f"{event.stage[:28]:<28} [{bar}] {100 * event.fraction:5.1f}% {_clock(event.elapsed_s)} {eta}"
        if event.message:
            line += f" {event.message[:40]}"
        self.err.write("\r" + line)
        self._bar_open = True
        if finished:
            self._end_bar()
        else:
            self.err.flush()

    def _say(self, event: str, message: str, line: str) -> None:
        """A message: a JSON event on stdout for programs, else ``line`` on stderr below any open bar."""
        if self.mode == "jsonl":
            self._emit({"event": event, "message": message})
        else:
            self._end_bar()
            print(line, file=self.err, flush=True)

    def log(self, message: str) -> None:
        self._say("log", message, message)

    def result(self, data: dict) -> None:
        """The command's outcome: a JSON object in jsonl mode, ``key: value`` lines otherwise."""
        if self.mode == "jsonl":
            self._emit({"event": "result", **data})
            return
        self._end_bar()
        for key, value in data.items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            print(f"{key}: {text}", file=self.stream)
        self.stream.flush()

    def error(self, message: str) -> None:
        self._say("error", message, f"clinseg: error: {message}")
