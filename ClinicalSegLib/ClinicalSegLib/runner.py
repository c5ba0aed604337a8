"""Run a ``clinseg`` command in a child process and follow its JSON-lines progress.

Two layers:

- ``ProcessRunner`` (pure Python: subprocess, reader threads, a JSON-lines parser, process-tree kill).
  It has no Qt in it, so it is tested outside Slicer and used as is by scripts (``wait()``).
- ``SlicerTaskRunner``: a thin Qt shell that follows a job (``ClinicalSegLib.jobs``) for module widgets
  (QTimer polling every 100 ms, progress bar with ETA, Apply <-> Cancel toggle, error dialog). ``qt`` and
  ``slicer`` are imported only when it is constructed.

The child runs in its own session (POSIX) or process group (Windows) so that a cancel reaches every
process it started (e.g. data-loader workers), not only the direct child.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from clinseg.errors import Cancelled

EVENT_KINDS = ("progress", "log", "result", "error")
POLL_INTERVAL_MS = 100
CANCEL_GRACE_S = 5.0  # how long a cancelled child may take to stop by itself before it is killed
_STDERR_PREFIX = "clinseg: error: "


class RunError(RuntimeError):
    """The child process failed; ``message`` is the one line to show the user."""

    def __init__(self, message: str, returncode: int | None = None, log: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.returncode = returncode
        self.log = list(log)


def parse_line(line: str, stream: str = "stdout") -> dict:
    """Turn one output line into an event dict; anything that is not a known JSON event becomes a log event."""
    text = line.rstrip("\r\n")
    if stream == "stdout" and text.lstrip().startswith("{"):
        try:
            event = json.loads(text)
        except json.JSONDecodeError:
            event = None
        if isinstance(event, dict) and event.get("event") in EVENT_KINDS:
            return event
    return {"event": "log", "message": text, "stream": stream}


def format_duration(seconds: float | None) -> str:
    """``75.2`` -> ``"1 min 15 s"``; ``None`` or negative -> ``""``."""
    if seconds is None or seconds < 0:
        return ""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def progress_text(event: dict) -> tuple[int, str]:
    """Percentage (0..100) and a short label ("stage 3/10, ETA 12 s") for a progress event."""
    done, total = event.get("done"), event.get("total")
    fraction = event.get("fraction")
    if fraction is None:
        fraction = (done / total) if done is not None and total else 0.0
    percent = max(0, min(100, int(round(float(fraction) * 100))))
    label = str(event.get("stage", ""))
    if done is not None and total:
        label += f" {done}/{total}"
    eta = format_duration(event.get("eta_s"))
    if eta:
        label += f", ETA {eta}"
    return percent, label.strip()


def clinseg_command(args: Sequence[str], python: str | None = None, progress: bool = True) -> list[str]:
    """``[python, -m, clinseg, *args, --progress, jsonl]``."""
    command = [python or sys.executable, "-m", "clinseg", *map(str, args)]
    if progress:
        command += ["--progress", "jsonl"]
    return command


def clinseg_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the child: the folder holding the ``clinseg`` package first on PYTHONPATH.

    Inside Slicer ``clinseg`` lives in the extension's qt-scripted-modules folder, which Slicer puts on
    its own ``sys.path`` but which a fresh interpreter would not search.
    """
    env = dict(os.environ if base is None else base)
    spec = importlib.util.find_spec("clinseg")
    if spec is not None and spec.origin:
        root = str(Path(spec.origin).resolve().parent.parent)
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if root not in parts:
            env["PYTHONPATH"] = os.pathsep.join([root, *parts])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def kill_process_tree(root: subprocess.Popen, timeout: float = 5.0) -> list[int]:
    """Terminate ``root`` and all its descendants (TERM, then KILL after ``timeout``); returns the pids signalled.

    ``root`` is reaped through its ``Popen`` (psutil must not wait on it, or Popen loses its exit code).
    """
    try:
        import psutil
    except ImportError:  # psutil is pinned, but a bare interpreter can still fall back on the process group
        psutil = None
    descendants: list = []
    if psutil is not None:
        with contextlib.suppress(psutil.Error):
            descendants = psutil.Process(root.pid).children(recursive=True)
    if os.name == "posix":
        # The child leads its own session: one signal reaches every member still in its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(root.pid, signal.SIGTERM)
    with contextlib.suppress(OSError):
        root.terminate()
    for proc in descendants:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    try:
        root.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        root.kill()
        root.wait(timeout=timeout)
    if psutil is not None:
        _gone, alive = psutil.wait_procs(descendants, timeout=timeout)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=timeout)
    return [root.pid, *(proc.pid for proc in descendants)]


class ProcessRunner:
    """One child process whose stdout carries JSON-lines events.

    ``start()`` launches it, ``poll()`` returns the events that arrived since the last call without
    blocking, ``wait()`` blocks until the end and returns the ``result`` event (or raises),
    ``cancel()`` kills the whole process tree.
    """

    def __init__(self, command: Sequence[str], env: dict[str, str] | None = None, cwd: str | Path | None = None,
                 log_limit: int = 2000) -> None:
        self.command = [str(c) for c in command]
        self.env = env
        self.cwd = str(cwd) if cwd is not None else None
        self.log_limit = log_limit
        self.process: subprocess.Popen | None = None
        self.result: dict | None = None
        self.error: str | None = None
        self.last_progress: dict | None = None
        self.log: list[str] = []
        self.cancelled = False
        self.started_at: float | None = None
        self._events: queue.Queue = queue.Queue()
        self._readers: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("this runner was already started")
        kwargs: dict = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True
        else:
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self.env, cwd=self.cwd, text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs,
        )
        self.started_at = time.monotonic()
        for stream_name, stream in (("stdout", self.process.stdout), ("stderr", self.process.stderr)):
            reader = threading.Thread(target=self._read, args=(stream, stream_name), daemon=True)
            reader.start()
            self._readers.append(reader)

    def _read(self, stream, stream_name: str) -> None:
        for line in iter(stream.readline, ""):
            self._events.put(parse_line(line, stream_name))
        stream.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    @property
    def finished(self) -> bool:
        """Process ended and every line it wrote has been delivered by ``poll()``."""
        if self.process is None or self.process.poll() is None:
            return False
        return all(not r.is_alive() for r in self._readers) and self._events.empty()

    # -- events ----------------------------------------------------------------------------------
    def poll(self) -> list[dict]:
        """Events received since the last call (never blocks); also updates result/error/progress/log."""
        events = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            self._record(event)
            events.append(event)
        return events

    def _record(self, event: dict) -> None:
        kind = event["event"]
        if kind == "progress":
            self.last_progress = event
        elif kind == "result":
            self.result = event
        elif kind == "error":
            self.error = str(event.get("message", "unknown error"))
        else:
            message = str(event.get("message", ""))
            if event.get("stream") == "stderr" and message.startswith(_STDERR_PREFIX) and self.error is None:
                self.error = message[len(_STDERR_PREFIX):]
            self.log.append(message)
            if len(self.log) > self.log_limit:
                del self.log[: len(self.log) - self.log_limit]

    def failure_message(self) -> str | None:
        """One line describing the failure once the process has ended, ``None`` when it succeeded."""
        code = self.returncode
        if self.cancelled:
            return "cancelled by the user"
        if self.error is not None:
            return self.error
        if code is None or code == 0:
            return None
        stderr_tail = [line for line in self.log if line.strip()]
        detail = stderr_tail[-1] if stderr_tail else "no output"
        return f"process exited with code {code}: {detail}"

    def wait(self, timeout: float | None = None, on_event: Callable[[dict], None] | None = None) -> dict | None:
        """Block until the process ends; return its ``result`` event (``None`` if it sent none) or raise.

        Raises ``RunError`` (child error or non-zero exit), ``Cancelled`` (after ``cancel()``),
        ``TimeoutError`` (process killed after ``timeout`` seconds).
        """
        if self.process is None:
            self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"{self.command[0]}: no end after {timeout} s; process tree killed")
            try:
                event = self._events.get(timeout=0.05)
            except queue.Empty:
                continue
            self._record(event)
            if on_event is not None:
                on_event(event)
        for event in self.poll():
            if on_event is not None:
                on_event(event)
        if self.cancelled:
            raise Cancelled("run")
        message = self.failure_message()
        if message is not None:
            raise RunError(message, self.returncode, self.log)
        return self.result

    def cancel(self, timeout: float = CANCEL_GRACE_S) -> None:
        """Stop the child and all its descendants; safe to call twice or after the end.

        SIGTERM first: ``clinseg`` then finishes its work unit and exits writing no output; whatever still
        runs after ``timeout`` seconds is killed.
        """
        if self.process is None:
            return
        if self.process.poll() is None:
            self.cancelled = True
            kill_process_tree(self.process, timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=timeout)


def slicer_python_executable() -> str:
    """PythonSlicer inside Slicer (it sets up Slicer's environment); the current interpreter elsewhere."""
    return shutil.which("PythonSlicer") or sys.executable


class SlicerTaskRunner:
    """Qt shell that follows a job (``ClinicalSegLib.jobs.TaskJob`` or ``CommandJob``) for a module widget.

    ``applyButton`` turns into Cancel while the job runs; ``progressBar`` and ``statusLabel`` show the stage
    and ETA; at the end ``onFinished(success, outcome)`` gets the job's outcome (the imported nodes of a task).
    Failures open an error dialog with the child's log; the full log also goes to the Python console.
    """

    def __init__(self, job, applyButton=None, progressBar=None, statusLabel=None,
                 onFinished: Callable[[bool, object], None] | None = None) -> None:
        import qt  # lazily: this module must stay importable outside Slicer

        self.job = job
        self.applyButton, self.progressBar, self.statusLabel = applyButton, progressBar, statusLabel
        self.onFinished = onFinished
        self._applyText = applyButton.text if applyButton is not None else ""
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self._onTimeout)

    @property
    def running(self) -> bool:
        return self.job.running

    def start(self) -> SlicerTaskRunner:
        self.job.start()
        self._setBusy(True)
        self._timer.start()
        return self

    def cancel(self) -> None:
        self.job.cancel()

    def _onTimeout(self) -> None:
        for event in self.job.poll():
            self._showEvent(event)
        if self.job.finished:
            self._timer.stop()
            self._finish()

    def _finish(self) -> None:
        import slicer

        self._setBusy(False)
        outcome, success = None, False
        try:
            outcome = self.job.finish()
            success = True
            self._setStatus(f"Done in {format_duration(time.monotonic() - self.job.started_at)}.")
        except Cancelled:
            self._setStatus("Cancelled.")
        except RunError as error:
            log = "\n".join(error.log[-200:])
            self._setStatus(f"Failed: {error.message}")
            print(log)  # full context in the Python console
            slicer.util.errorDisplay(error.message, detailedText=log)
        except Exception as error:  # import of results failed: say so instead of a silent half-result
            self._setStatus(f"Failed to load the results: {error}")
            slicer.util.errorDisplay(f"Failed to load the results: {error}")
        if self.onFinished is not None:
            self.onFinished(success, outcome)

    def _showEvent(self, event: dict) -> None:
        kind = event["event"]
        if kind == "progress":
            percent, label = progress_text(event)
            if self.progressBar is not None:
                self.progressBar.setValue(percent)
            self._setStatus(label)
        elif kind == "log" and event.get("message"):
            print(event["message"])

    def _setStatus(self, text: str) -> None:
        if self.statusLabel is not None:
            self.statusLabel.text = text

    def _setBusy(self, busy: bool) -> None:
        if self.applyButton is not None:
            self.applyButton.text = "Cancel" if busy else self._applyText
        if self.progressBar is not None:
            self.progressBar.setValue(0)
            self.progressBar.visible = busy
