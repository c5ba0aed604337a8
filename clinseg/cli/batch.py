"""``clinseg batch``: one or more chained tasks over many cases, resumable, on Dask distributed or in this process."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import InputError
from .reporting import Reporter, add_common_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "batch", help="run tasks over a folder, a CSV of paths or a DICOM tree; resumable; on Dask or locally",
        description="Each case is read once, runs every task of --tasks in order and gets <out>/<case>/<task>/, "
                    "log.txt, montage.png and manifest.json. A re-run skips cases whose manifest matches "
                    "(input SHA-256, options, version) and redoes failed or half-written ones.")
    p.add_argument("source", help="a folder of images, a .csv of paths (columns: case, path or one per input, "
                                  "series_uid) or a DICOM tree (one case per series)")
    p.add_argument("-o", "--out", required=True, help="batch output folder (one sub-folder per case)")
    p.add_argument("--tasks", default="airway", help="comma-separated chained tasks, e.g. airway,nodule "
                   "(airway, nodule, oar, stroke)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="[TASK.]OPTION=VALUE",
                   help="a task option (JSON value or text), e.g. airway.engine=classical; repeatable")
    p.add_argument("--layout", choices=["auto", "folder", "csv", "dicom"], default="auto")
    p.add_argument("--scheduler", default="local",
                   help="'local' (a Dask LocalCluster, the default), a scheduler address tcp://host:8786, "
                        "or 'none' (this process, no Dask)")
    p.add_argument("--workers", type=int, default=1, help="local cluster: worker processes (default 1)")
    p.add_argument("--cases-per-worker", type=int, default=1,
                   help="local cluster: cases one worker runs at once (its 'case' resource; default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per case (default: torch's)")
    p.add_argument("--memory-limit", default="auto", help="local cluster: per-worker memory limit, e.g. 8GB")
    p.add_argument("--redo", action="store_true", help="run every case, finished or not")
    p.add_argument("--no-preview", action="store_true", help="skip preview PNGs and montages")
    add_common_arguments(p)
    p.set_defaults(func=run)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_settings(settings: list[str], task_names: list[str], defaults: dict[str, dict]) -> dict[str, dict]:
    """``TASK.OPTION=VALUE`` for one task, ``OPTION=VALUE`` for every listed task that has that option."""
    given: dict[str, dict] = {name: {} for name in task_names}
    for item in settings:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise InputError("--set", f"'{item}' is not [TASK.]OPTION=VALUE")
        task, dot, option = key.rpartition(".")
        if dot:
            if task not in given:
                raise InputError("--set", f"'{item}' names task '{task}', not one of --tasks")
            given[task][option] = _value(text)
            continue
        owners = [name for name in task_names if key in defaults[name]]
        if not owners:
            raise InputError("--set", f"no task of --tasks has option '{key}'")
        for name in owners:
            given[name][key] = _value(text)
    return given


def _positive(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise InputError(flag, "must be at least 1")


def run(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..batch import BatchPlan, dask_runner, discover_cases, run_batch, sequential_runner
    from ..tasks.catalog import parse_tasks

    reporter = Reporter.from_args(args)
    for flag in ("workers", "cases_per_worker", "threads"):
        _positive(getattr(args, flag), "--" + flag.replace("_", "-"))
    entries = parse_tasks(args.tasks)
    given = parse_settings(args.settings, [e.name for e in entries], {e.name: dict(e.defaults) for e in entries})
    tasks = {e.name: e.options(given[e.name]) for e in entries}
    inputs = list(dict.fromkeys(name for e in entries for name in e.inputs))
    optional = tuple(dict.fromkeys(n for e in entries for n in e.optional_inputs if n not in inputs))
    # Absolute paths: a worker of a remote cluster has its own working folder.
    cases = discover_cases(Path(args.source).resolve(), inputs, args.layout, optional)
    if not cases:
        raise InputError(args.source, "holds no cases")
    plan = BatchPlan(str(Path(args.out).resolve()), tasks, __version__, preview=not args.no_preview,
                     torch_threads=args.threads)
    common = {"redo": args.redo, "log": reporter.log, "progress": reporter.progress}
    if args.scheduler == "none":
        summary = run_batch(cases, plan, sequential_runner(args.cancel), **common)
    else:
        address = None if args.scheduler == "local" else args.scheduler
        with dask_runner(address, args.workers, args.cases_per_worker, args.memory_limit, reporter.log,
                         cancel=args.cancel) as runner:
            summary = run_batch(cases, plan, runner, **common)
    reporter.result({
        "out": str(args.out), "cases": len(summary.outcomes), "done": summary.done, "skipped": summary.skipped,
        "failed": {o.case_id: o.reason for o in summary.failed},
        "report_csv": str(summary.report_csv), "report_html": str(summary.report_html),
    })
    return 1 if summary.failed else 0
