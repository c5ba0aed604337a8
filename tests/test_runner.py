"""The background runner's pure-Python core, against real child processes."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from clinseg.errors import Cancelled

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "ClinicalSegLib"))

from ClinicalSegLib.runner import (  # noqa: E402
    ProcessRunner,
    RunError,
    clinseg_command,
    clinseg_environment,
    format_duration,
    parse_line,
    progress_text,
)


def child(tmp_path: Path, body: str, name: str = "child.py") -> list[str]:
    """Command running ``body`` as a script (``emit`` prints one JSON event per line)."""
    script = tmp_path / name
    prelude = "import json, os, subprocess, sys, time\n" \
              "def emit(**event):\n    print(json.dumps(event), flush=True)\n"
    script.write_text(prelude + textwrap.dedent(body), encoding="utf-8")
    return [sys.executable, "-u", str(script)]


# -- parsing and formatting ----------------------------------------------------------------------
def test_parse_line_keeps_known_events_and_turns_the_rest_into_log():
    progress = {"event": "progress", "stage": "inference", "done": 3, "total": 12, "fraction": 0.25, "eta_s": 9.0}
    assert parse_line(json.dumps(progress) + "\n") == progress
    assert parse_line('{"event": "result", "files": {"seg": "a.seg.nrrd"}}') == \
        {"event": "result", "files": {"seg": "a.seg.nrrd"}}
    assert parse_line("Loading model...\n") == {"event": "log", "message": "Loading model...", "stream": "stdout"}
    # JSON that is not one of our events, broken JSON, and JSON on stderr all stay plain log lines.
    for line in ('{"event": "unknown"}', '{"event": "progress"', "[1, 2]", '{"no_event": 1}'):
        assert parse_line(line) == {"event": "log", "message": line, "stream": "stdout"}
    assert parse_line('{"event": "error", "message": "x"}', "stderr")["event"] == "log"


def test_progress_text_and_durations():
    assert format_duration(None) == ""
    assert format_duration(4.4) == "4 s"
    assert format_duration(75.2) == "1 min 15 s"
    assert format_duration(3725) == "1 h 02 min"
    assert progress_text({"event": "progress", "stage": "inference", "done": 3, "total": 12,
                          "fraction": 0.25, "eta_s": 75}) == (25, "inference 3/12, ETA 1 min 15 s")
    # fraction missing: derived from done/total; clipped to 0..100
    assert progress_text({"stage": "post", "done": 1, "total": 3}) == (33, "post 1/3")
    assert progress_text({"stage": "x", "fraction": 1.7})[0] == 100


def test_clinseg_command_and_environment():
    assert clinseg_command(["airway", "ct.nrrd", "--out", Path("o")], python="/py") == \
        ["/py", "-m", "clinseg", "airway", "ct.nrrd", "--out", "o", "--progress", "jsonl"]
    assert clinseg_command(["--version"], progress=False)[1:] == ["-m", "clinseg", "--version"]
    env = clinseg_environment({"PYTHONPATH": os.pathsep.join(["/a", "/b"])})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/a", "/b"]
    # idempotent: the root is not added twice
    assert clinseg_environment(env)["PYTHONPATH"] == env["PYTHONPATH"]


def test_child_finds_clinseg_through_the_environment(tmp_path):
    # -S: no site-packages, so the editable install is invisible; only PYTHONPATH can supply clinseg.
    code = "import clinseg, json; print(json.dumps({'event': 'result', 'path': clinseg.__file__}))"
    runner = ProcessRunner([sys.executable, "-S", "-c", code], env=clinseg_environment(), cwd=tmp_path)
    result = runner.wait(timeout=60)
    assert Path(result["path"]).resolve() == ROOT / "clinseg" / "__init__.py"


# -- real child processes ------------------------------------------------------------------------
def test_progress_then_result(tmp_path):
    command = child(tmp_path, """
        print("warming up")
        for done in range(1, 4):
            emit(event="progress", stage="inference", done=done, total=3, fraction=done / 3, eta_s=3 - done)
        print("stderr note", file=sys.stderr)
        emit(event="result", files={"segmentation": "out.seg.nrrd"}, metrics={"voxels": 42})
    """)
    events = []
    runner = ProcessRunner(command)
    result = runner.wait(timeout=60, on_event=events.append)
    assert result == {"event": "result", "files": {"segmentation": "out.seg.nrrd"}, "metrics": {"voxels": 42}}
    assert runner.returncode == 0 and runner.failure_message() is None
    stdout_kinds = [e["event"] for e in events if e.get("stream") != "stderr"]
    assert stdout_kinds == ["log", "progress", "progress", "progress", "result"]
    assert [e["done"] for e in events if e["event"] == "progress"] == [1, 2, 3]
    assert runner.last_progress["fraction"] == 1.0
    assert sorted(runner.log) == ["stderr note", "warming up"]


def test_polling_collects_every_event(tmp_path):
    """The QTimer path: start(), then non-blocking poll() calls until finished."""
    command = child(tmp_path, """
        for done in range(1, 6):
            emit(event="progress", stage="s", done=done, total=5)
            time.sleep(0.01)
        emit(event="result", ok=True)
    """)
    runner = ProcessRunner(command)
    runner.start()
    events = []
    deadline = time.monotonic() + 60
    while not runner.finished and time.monotonic() < deadline:
        events += runner.poll()
        time.sleep(0.02)
    events += runner.poll()
    assert runner.finished
    assert [e["done"] for e in events if e["event"] == "progress"] == [1, 2, 3, 4, 5]
    assert runner.result == {"event": "result", "ok": True}


def test_error_event_raises_with_its_message(tmp_path):
    command = child(tmp_path, """
        emit(event="progress", stage="read", done=0, total=1)
        emit(event="error", message="scan.nrrd: volume is 2-D (1 slice); a 3-D CT is needed")
        sys.exit(2)
    """)
    runner = ProcessRunner(command)
    with pytest.raises(RunError) as raised:
        runner.wait(timeout=60)
    assert raised.value.message == "scan.nrrd: volume is 2-D (1 slice); a 3-D CT is needed"
    assert raised.value.returncode == 2
    assert runner.result is None


def test_cli_error_line_and_crash_become_the_message(tmp_path):
    cli_error = child(tmp_path, """
        print("clinseg: error: ct.nii.gz: file is truncated", file=sys.stderr)
        sys.exit(2)
    """, "cli_error.py")
    with pytest.raises(RunError, match=r"^ct\.nii\.gz: file is truncated$"):
        ProcessRunner(cli_error).wait(timeout=60)

    crash = child(tmp_path, "1 / 0\n", "crash.py")
    with pytest.raises(RunError) as raised:
        ProcessRunner(crash).wait(timeout=60)
    assert raised.value.returncode == 1
    assert raised.value.message == "process exited with code 1: ZeroDivisionError: division by zero"
    assert any("Traceback" in line for line in raised.value.log)


def test_exit_zero_without_result_returns_none(tmp_path):
    assert ProcessRunner(child(tmp_path, "print('nothing to report')\n")).wait(timeout=60) is None


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    """True once ``pid`` no longer runs (gone, or a zombie waiting for a reaper)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_cancel_kills_the_whole_process_tree(tmp_path):
    command = child(tmp_path, """
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        emit(event="log", message=f"grandchild {grandchild.pid}")
        emit(event="progress", stage="inference", done=0, total=100)
        time.sleep(120)
    """)
    runner = ProcessRunner(command)
    runner.start()
    grandchild_pid = None
    deadline = time.monotonic() + 60
    while grandchild_pid is None and time.monotonic() < deadline:
        for event in runner.poll():
            if event["event"] == "log" and event["message"].startswith("grandchild "):
                grandchild_pid = int(event["message"].split()[1])
        time.sleep(0.02)
    assert grandchild_pid is not None
    child_pid = runner.process.pid
    assert psutil.Process(grandchild_pid).ppid() == child_pid

    runner.cancel(timeout=5)
    assert runner.cancelled
    assert runner.returncode is not None and runner.returncode != 0
    assert _wait_gone(grandchild_pid), "grandchild survived the cancel"
    with pytest.raises(Cancelled):
        runner.wait(timeout=10)
    runner.cancel()  # a second cancel after the end is harmless


def test_wait_timeout_kills_the_child(tmp_path):
    runner = ProcessRunner(child(tmp_path, "time.sleep(120)\n"))
    with pytest.raises(TimeoutError):
        runner.wait(timeout=0.5)
    assert runner.returncode is not None
    assert _wait_gone(runner.process.pid)
