"""``clinseg nodule``: lung nodules (instances, segments, measurements table) from a chest CT."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from .reporting import Reporter, add_common_arguments


def register(subparsers) -> None:
    from ..tasks.nodule.pipeline import DEFAULT_MAX_NODULES, DEFAULT_MIN_SCORE

    p = subparsers.add_parser("nodule", help="detect and segment lung nodules, measure each one")
    p.add_argument("ct", help="chest CT: NIfTI, NRRD, MHA or a DICOM folder")
    p.add_argument("-o", "--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    p.add_argument("--engine", choices=["auto", "model", "classical"], default="auto")
    p.add_argument("--model", dest="model_id", help="registered model id (see: clinseg models list)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE,
                   help=f"keep nodules scoring at least this (0-1, default {DEFAULT_MIN_SCORE})")
    p.add_argument("--max-nodules", type=int, default=DEFAULT_MAX_NODULES, help="keep at most this many")
    p.add_argument("--series-uid", help="DICOM folder with several series: the one to read")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--no-preview", action="store_true", help="skip the PNG preview")
    add_common_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io import read_volume
    from ..output import write_result
    from ..tasks.nodule import NoduleOptions, run_nodule
    from ..tasks.nodule.preview import render_nodule_preview

    reporter = Reporter.from_args(args)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InputError(str(out), "output folder exists and is not empty (choose another or pass --overwrite)")
    ct = read_volume(args.ct, series_uid=args.series_uid)
    options = NoduleOptions(args.engine, args.model_id, args.device, args.min_score, args.max_nodules)
    result = run_nodule(ct, options, reporter.progress, args.cancel)
    args.cancel.check("nodule")  # stopped before writing: no output folder at all
    render = None if args.no_preview else (lambda res, folder: render_nodule_preview(res, folder, ct))
    files = write_result(result, out, overwrite=args.overwrite, render=render)
    reporter.result({"out": str(out), "files": {k: str(v) for k, v in files.items()}, "metrics": result.metrics})
    return 0
