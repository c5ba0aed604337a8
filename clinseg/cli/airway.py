"""``clinseg airway``: airway tree, centerlines and route from a chest CT."""

from __future__ import annotations

import argparse

from ..errors import InputError
from .reporting import Reporter
from .task_command import add_task_arguments, finish_task, output_folder, parse_point


def register(subparsers) -> None:
    p = subparsers.add_parser("airway", help="segment the airway tree, extract centerlines, plan a route")
    p.add_argument("ct", nargs="?", help="chest CT: NIfTI, NRRD, MHA or a DICOM folder")
    p.add_argument("--target", help="target point X,Y,Z in mm (LPS unless --ras), e.g. a nodule centre")
    p.add_argument("--ras", action="store_true", help="--target is in RAS (Slicer's frame)")
    p.add_argument("--scope-diameter", type=float, help="bronchoscope outer diameter in mm")
    p.add_argument("--from-mask", help="skip segmentation: recompute tree/route from an (edited) airway mask")
    add_task_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io import read_mask, read_volume
    from ..tasks.airway import AirwayOptions, run_airway, update_from_mask
    from ..tasks.airway.preview import render_airway_preview

    reporter = Reporter.from_args(args)
    out = output_folder(args)
    target = parse_point(args.target, "RAS" if args.ras else "LPS") if args.target else None
    options = AirwayOptions(args.engine, args.model_id, args.device, target, args.scope_diameter)
    if args.from_mask:
        result = update_from_mask(read_mask(args.from_mask), options, reporter.progress, args.cancel)
        ct = None
    else:
        if not args.ct:
            raise InputError("ct", "a chest CT (or --from-mask) is required")
        ct = read_volume(args.ct, series_uid=args.series_uid)
        result = run_airway(ct, options, reporter.progress, args.cancel)
    return finish_task(args, reporter, "airway", result, out,
                       lambda res, folder: render_airway_preview(res, folder, ct))
