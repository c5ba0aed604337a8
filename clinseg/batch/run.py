"""The batch driver: skip what is finished, run the rest through a ``Runner``, write the report.

One batch at a time per output folder (``.batch.lock``): stale temporaries of a killed run are removed only when no
other batch can be writing there.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..progress import ProgressCallback, ProgressTracker
from .cases import Case
from .manifest import finished_manifest
from .report import write_report
from .schedule import Runner
from .work import BatchPlan, CaseOutcome, outcome_from_manifest

LOCK = ".batch.lock"
# atomic_output_dir's temporaries: ".<case>.<12 hex>.tmp" (being written) and ".<case>.old-<8 hex>" (being swapped)
_TEMPORARY = re.compile(r"^\..+\.(?:[0-9a-f]{12}\.tmp|old-[0-9a-f]{8})$")


@dataclass
class BatchSummary:
    outcomes: list[CaseOutcome]
    skipped: int
    report_csv: Path
    report_html: Path

    @property
    def done(self) -> int:
        return sum(o.status == "done" for o in self.outcomes)

    @property
    def failed(self) -> list[CaseOutcome]:
        return [o for o in self.outcomes if o.status != "done"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def batch_lock(out_dir: Path) -> Iterator[None]:
    """Refuse a second batch on the same folder; a lock left by a dead process on this host is taken over."""
    path = out_dir / LOCK
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            host, _, pid = path.read_text(encoding="utf-8").partition(" ")
            if host == socket.gethostname() and pid.strip().isdigit() and not _pid_alive(int(pid)):
                path.unlink(missing_ok=True)
                continue
            raise InputError(str(out_dir), f"another batch is running into this folder ({host} pid {pid.strip()}); "
                                           f"if not, remove {LOCK}") from None
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def remove_temporaries(out_dir: Path) -> int:
    """Delete the half-written case folders a killed worker or run left behind; returns how many."""
    stale = [p for p in out_dir.iterdir() if p.is_dir() and _TEMPORARY.match(p.name)]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return len(stale)


def run_batch(cases: list[Case], plan: BatchPlan, runner: Runner, redo: bool = False,
              log: Callable[[str], None] | None = None, progress: ProgressCallback | None = None) -> BatchSummary:
    """Run every case not already finished (all of them with ``redo``) and write ``report.csv``/``report.html``."""
    say = log or (lambda text: None)
    out = Path(plan.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        raise InputError("cases", "two cases have the same id")
    with batch_lock(out):
        removed = remove_temporaries(out)
        if removed:
            say(f"removed {removed} half-written case folder(s) of an earlier run")
        outcomes: dict[str, CaseOutcome] = {}
        todo = []
        for case in cases:
            manifest = None if redo else finished_manifest(case, out, plan.tasks, plan.version)
            if manifest is None:
                todo.append(case)
            else:
                outcomes[case.case_id] = outcome_from_manifest(case, manifest)
        skipped = len(outcomes)
        say(f"{len(cases)} cases: {skipped} already done, {len(todo)} to run")
        tracker = ProgressTracker("batch", len(todo), progress)
        for case, outcome in runner(todo, plan) if todo else ():
            if case.case_id in outcomes:  # a runner must hand back each case once
                raise RuntimeError(f"case {case.case_id} came back twice")
            outcomes[case.case_id] = outcome
            say(f"{case.case_id}: done in {outcome.seconds:.1f} s" if outcome.status == "done"
                else f"{case.case_id}: FAILED {outcome.reason}")
            tracker.step(message=f"{case.case_id} {outcome.status}")
        remove_temporaries(out)
        ordered = [outcomes[i] for i in ids]
        report_csv, report_html = write_report(ordered, out)
    return BatchSummary(ordered, skipped, report_csv, report_html)
