"""One case, start to finish, on whichever process runs it: read the inputs once, run the chained tasks, write
``<out>/<case>/`` (one folder per task, ``log.txt``, ``montage.png``, ``manifest.json``) as one atomic folder.

``process_case`` never raises for a bad case: a corrupt file, a wrong modality or a ``MemoryError`` becomes a
``failed`` outcome with a one-line reason (and a failed manifest, so a re-run tries it again). A process killed
mid-case leaves only a hidden temporary folder, never a case folder that looks finished.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..errors import Cancelled, ClinsegError
from ..io import atomic_output_dir, atomic_write
from ..parallel import limit_threads
from ..progress import CancelToken, Progress
from .cases import Case
from .manifest import MANIFEST, fingerprint, hash_inputs, output_files
from .montage import write_montage

LOG = "log.txt"
MONTAGE = "montage.png"
REASON_CHARS = 300


@dataclass(frozen=True)
class BatchPlan:
    """What every case gets: the chained tasks with their complete options, in order, and where outputs go."""

    out_dir: str
    tasks: dict[str, dict[str, Any]]
    version: str
    preview: bool = True
    torch_threads: int | None = None


@dataclass
class CaseOutcome:
    """One case's line in the report; ``ran`` is False for a case skipped as already done."""

    case_id: str
    status: str  # "done" or "failed"
    reason: str = ""
    seconds: float = 0.0
    worker: str = ""
    ran: bool = True
    metrics: dict[str, Any] = field(default_factory=dict)
    montage: str | None = None  # relative to the batch output folder
    inputs: str = ""


def one_line(error: BaseException) -> str:
    """The reason a case failed, on one line: clinseg's own errors as they read, others with their type."""
    if isinstance(error, MemoryError):
        text = "out of memory" + (f" ({error})" if str(error) else "")
    elif isinstance(error, ClinsegError):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    text = " ".join(text.split())
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class _CaseLog:
    """Time-stamped lines in the case's ``log.txt``, flushed as they come (a killed run keeps what it logged)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.start = stream, time.perf_counter()
        self._last: tuple[str, str] | None = None

    def line(self, text: str) -> None:
        self.stream.write(f"[{time.perf_counter() - self.start:8.2f} s] {text}\n")
        self.stream.flush()

    def progress(self, event: Progress) -> None:
        key = (event.stage, event.message)
        if key != self._last:  # stages and messages, not every tile
            self._last = key
            self.line(f"{event.stage}: {event.message}" if event.message else event.stage)


def _scalars(task: str, metrics: dict) -> dict[str, Any]:
    """A task's one-number metrics for the report, as ``task.name``."""
    return {f"{task}.{k}": v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) and v is not None}


def _write_manifest(folder: Path, record: dict) -> None:
    import json

    record = {**record, "files": output_files(folder)}
    with atomic_write(folder / MANIFEST) as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")


def _run_tasks(case: Case, plan: BatchPlan, folder: Path, log: _CaseLog, cancel: CancelToken | None) -> tuple:
    """Read each input once, run the tasks in order; the tasks' folders are written under ``folder``."""
    from ..io import read_mask
    from ..output import write_result
    from ..tasks.catalog import get_task

    stage, sha = "hashing inputs", None
    try:
        sha = hash_inputs(case)
        volumes = {}
        for name, inp in case.inputs.items():
            stage = f"reading {name}"
            log.line(f"read {name}: {inp.path}" + (f" series {inp.series_uid}" if inp.series_uid else ""))
            volumes[name] = read_mask(inp.path, inp.series_uid)  # a mask input (a drawn GTV) may be a .seg.nrrd
        metrics: dict[str, Any] = {}
        previews: list[Path] = []
        for task, options in plan.tasks.items():
            stage = task
            entry = get_task(task)
            log.line(f"task {task} {options}")
            result = entry.run(volumes, options, log.progress, cancel)
            if cancel is not None:
                cancel.check(case.case_id)
            render = None
            if plan.preview and entry.preview is not None:
                def render(res, tmp, entry=entry):
                    return entry.preview(res, tmp, volumes)
            files = write_result(result, folder / task, render=render)
            metrics.update(_scalars(task, result.metrics))
            pngs = [folder / task / n for n in entry.montage if n in files] if entry.montage else \
                sorted(folder / task / n for n in files if n.endswith(".png"))
            previews += [p for p in pngs if p.is_file()]
            log.line(f"task {task} wrote {len(files)} files")
        return sha, metrics, previews, None
    except Cancelled:
        raise
    except Exception as error:  # one bad case must not stop the batch: it is reported, with its reason
        # clinseg's errors name their input already; anything else gets the stage it happened in
        reason = one_line(error) if isinstance(error, ClinsegError) else f"{stage}: {one_line(error)}"
        log.line(f"FAILED {reason}")
        if not isinstance(error, (ClinsegError, MemoryError)):
            log.stream.write(traceback.format_exc())
        return sha, {}, [], reason


def process_case(case: Case, plan: BatchPlan, cancel: CancelToken | None = None) -> CaseOutcome:
    """Run ``case`` and write its folder atomically; a failure is an outcome, not an exception."""
    if plan.torch_threads:
        import torch

        torch.set_num_threads(plan.torch_threads)
        limit_threads(plan.torch_threads)  # the engines' own threads (nodule candidates and masks) as well
    start, worker = time.perf_counter(), worker_name()
    out = Path(plan.out_dir)
    with atomic_output_dir(out / case.case_id, overwrite=True) as folder:
        with open(folder / LOG, "w", encoding="utf-8") as stream:
            log = _CaseLog(stream)
            log.line(f"case {case.case_id} on worker {worker} (clinseg {plan.version})")
            sha, metrics, previews, reason = _run_tasks(case, plan, folder, log, cancel)
            montage = None
            if previews and not reason:
                try:
                    montage = write_montage(previews, folder / MONTAGE)
                except (OSError, ValueError, ImportError) as error:  # the outputs stand without their thumbnail
                    log.line(f"no montage: {one_line(error)}")
            seconds = round(time.perf_counter() - start, 3)
            log.line(f"{'failed' if reason else 'done'} in {seconds:.2f} s")
        _write_manifest(folder, {
            "case": case.case_id, "status": "failed" if reason else "done", "reason": reason or "",
            "inputs": {n: vars(i) for n, i in case.inputs.items()}, "input_sha256": sha,
            "tasks": plan.tasks, "clinseg_version": plan.version,
            "fingerprint": fingerprint(sha, plan.tasks, plan.version) if sha else None,
            "worker": worker, "seconds": seconds, "metrics": metrics, "finished_at": time.time(),
        })
    return CaseOutcome(case.case_id, "failed" if reason else "done", reason or "", seconds, worker, True, metrics,
                       f"{case.case_id}/{MONTAGE}" if montage else None, case.describe())


def record_failure(case: Case, plan: BatchPlan, reason: str) -> CaseOutcome:
    """A case that no worker could finish (e.g. its worker died each time): a failed folder with the reason."""
    out = Path(plan.out_dir)
    with atomic_output_dir(out / case.case_id, overwrite=True) as folder:
        (folder / LOG).write_text(f"case {case.case_id}: FAILED {reason}\n", encoding="utf-8")
        _write_manifest(folder, {"case": case.case_id, "status": "failed", "reason": reason,
                                 "inputs": {n: vars(i) for n, i in case.inputs.items()}, "tasks": plan.tasks,
                                 "clinseg_version": plan.version, "finished_at": time.time()})
    return CaseOutcome(case.case_id, "failed", reason, worker="", inputs=case.describe())


def outcome_from_manifest(case: Case, manifest: dict) -> CaseOutcome:
    """The report line of a case skipped because an earlier run finished it."""
    montage = f"{case.case_id}/{MONTAGE}" if MONTAGE in manifest.get("files", {}) else None
    return CaseOutcome(case.case_id, str(manifest.get("status")), str(manifest.get("reason", "")),
                       float(manifest.get("seconds", 0.0)), str(manifest.get("worker", "")), False,
                       dict(manifest.get("metrics", {})), montage, case.describe())
