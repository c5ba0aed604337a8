"""``clinseg nodule``: lung nodules (instances, segments, measurements table) from a chest CT."""

from __future__ import annotations

import argparse

from .reporting import Reporter
from .task_command import add_task_arguments, finish_task, output_folder, parse_point


def register(subparsers) -> None:
    from ..tasks.nodule.pipeline import DEFAULT_MAX_NODULES, DEFAULT_MIN_SCORE

    p = subparsers.add_parser("nodule", help="detect and segment lung nodules, measure each one")
    p.add_argument("ct", help="chest CT: NIfTI, NRRD, MHA or a DICOM folder")
    p.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE,
                   help=f"keep nodules scoring at least this (0-1, default {DEFAULT_MIN_SCORE})")
    p.add_argument("--max-nodules", type=int, default=DEFAULT_MAX_NODULES, help="keep at most this many")
    p.add_argument("--add-at", metavar="X,Y,Z",
                   help="no detection: segment and measure the one nodule at this point (mm, LPS unless --ras; "
                        "write --add-at=X,Y,Z when X is negative)")
    p.add_argument("--ras", action="store_true", help="--add-at is in RAS (Slicer's frame)")
    add_task_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io import read_volume
    from ..tasks.nodule import NoduleOptions, run_nodule
    from ..tasks.nodule.interactive import clicked_result, nodule_at
    from ..tasks.nodule.preview import render_nodule_preview

    reporter = Reporter.from_args(args)
    out = output_folder(args)
    point = parse_point(args.add_at, "RAS" if args.ras else "LPS", "--add-at") if args.add_at else None
    ct = read_volume(args.ct, series_uid=args.series_uid)
    if point is not None:
        result = clicked_result(ct, nodule_at(ct, point))
    else:
        options = NoduleOptions(args.engine, args.model_id, args.device, args.min_score, args.max_nodules)
        result = run_nodule(ct, options, reporter.progress, args.cancel)
    return finish_task(args, reporter, "nodule", result, out,
                       lambda res, folder: render_nodule_preview(res, folder, ct))
