"""``clinseg airway``: airway tree, centerlines and route from a chest CT."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from .reporting import Reporter, add_common_arguments


def parse_point(text: str, frame: str = "LPS") -> tuple[float, float, float]:
    try:
        x, y, z = (float(v) for v in text.split(","))
    except ValueError as error:
        raise InputError("--target", f"'{text}' is not X,Y,Z in mm") from error
    return (-x, -y, z) if frame == "RAS" else (x, y, z)


def register(subparsers) -> None:
    p = subparsers.add_parser("airway", help="segment the airway tree, extract centerlines, plan a route")
    p.add_argument("ct", nargs="?", help="chest CT: NIfTI, NRRD, MHA or a DICOM folder")
    p.add_argument("-o", "--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    p.add_argument("--engine", choices=["auto", "model", "classical"], default="auto")
    p.add_argument("--model", dest="model_id", help="registered model id (see: clinseg models list)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--target", help="target point X,Y,Z in mm (LPS unless --ras), e.g. a nodule centre")
    p.add_argument("--ras", action="store_true", help="--target is in RAS (Slicer's frame)")
    p.add_argument("--scope-diameter", type=float, help="bronchoscope outer diameter in mm")
    p.add_argument("--from-mask", help="skip segmentation: recompute tree/route from an (edited) airway mask")
    p.add_argument("--series-uid", help="DICOM folder with several series: the one to read")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--no-preview", action="store_true", help="skip the PNG preview")
    add_common_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io import read_segmentation, read_volume
    from ..output import write_result
    from ..tasks.airway import AirwayOptions, run_airway, update_from_mask
    from ..tasks.airway.preview import render_airway_preview

    reporter = Reporter.from_args(args)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InputError(str(out), "output folder exists and is not empty (choose another or pass --overwrite)")
    target = parse_point(args.target, "RAS" if args.ras else "LPS") if args.target else None
    options = AirwayOptions(args.engine, args.model_id, args.device, target, args.scope_diameter)
    if args.from_mask:
        path = Path(args.from_mask)
        mask = read_segmentation(path)[0] if path.name.endswith(".seg.nrrd") else read_volume(path)
        result = update_from_mask(mask, options, reporter.progress, args.cancel)
        ct = None
    else:
        if not args.ct:
            raise InputError("ct", "a chest CT (or --from-mask) is required")
        ct = read_volume(args.ct, series_uid=args.series_uid)
        result = run_airway(ct, options, reporter.progress, args.cancel)
    args.cancel.check("airway")  # stopped before writing: no output folder at all
    render = None if args.no_preview else (lambda res, folder: render_airway_preview(res, folder, ct))
    files = write_result(result, out, overwrite=args.overwrite, render=render)
    reporter.result({"out": str(out), "files": {k: str(v) for k, v in files.items()}, "metrics": result.metrics})
    return 0
