"""``clinseg oar``: head & neck organs at risk (and a CTV from a drawn GTV) from a planning CT."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from .reporting import Reporter, add_common_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser("oar", help="segment head & neck organs at risk (two-stage U-Net); CTV from a GTV")
    p.add_argument("ct", help="head & neck CT: NIfTI, NRRD, MHA or a DICOM folder")
    p.add_argument("-o", "--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    p.add_argument("--engine", choices=["auto", "model"], default="auto")
    p.add_argument("--model", dest="model_id", help="registered model id (default: oar-unet-phantom)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--gtv", help="GTV mask (label map or .seg.nrrd, non-zero inside): grow a CTV from it")
    p.add_argument("--margin", type=float, default=None, help="CTV margin around the GTV in mm (default 5)")
    p.add_argument("--no-stage2", action="store_true", help="stage 1 only (no small-organ refinement)")
    p.add_argument("--series-uid", help="DICOM folder with several series: the one to read")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--no-preview", action="store_true", help="skip the PNG preview")
    add_common_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io import read_segmentation, read_volume
    from ..output import write_result
    from ..tasks.oar import OarOptions, run_oar
    from ..tasks.oar.pipeline import DEFAULT_MARGIN_MM
    from ..tasks.oar.preview import render_oar_preview

    reporter = Reporter.from_args(args)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InputError(str(out), "output folder exists and is not empty (choose another or pass --overwrite)")
    if args.margin is not None and not args.gtv:
        raise InputError("--margin", "a CTV margin needs a GTV (--gtv)")
    gtv = None
    if args.gtv:
        path = Path(args.gtv)
        gtv = read_segmentation(path)[0] if path.name.endswith(".seg.nrrd") else read_volume(path)
    ct = read_volume(args.ct, series_uid=args.series_uid)
    options = OarOptions(args.engine, args.model_id, args.device, gtv,
                         DEFAULT_MARGIN_MM if args.margin is None else args.margin, stage2=not args.no_stage2)
    result = run_oar(ct, options, reporter.progress, args.cancel)
    args.cancel.check("oar")  # stopped before writing: no output folder at all
    render = None if args.no_preview else (lambda res, folder: render_oar_preview(res, folder, ct))
    files = write_result(result, out, overwrite=args.overwrite, render=render)
    reporter.result({"out": str(out), "files": {k: str(v) for k, v in files.items()}, "metrics": result.metrics})
    return 0
