"""``clinseg oar``: head & neck organs at risk (and a CTV: grown from a drawn GTV, or learned) from a planning CT."""

from __future__ import annotations

import argparse

from ..errors import InputError
from .reporting import Reporter
from .task_command import add_task_arguments, finish_task, output_folder


def register(subparsers) -> None:
    p = subparsers.add_parser("oar", help="segment head & neck organs at risk (two-stage U-Net); CTV from a GTV")
    p.add_argument("ct", help="head & neck CT: NIfTI, NRRD, MHA or a DICOM folder")
    p.add_argument("--gtv", help="GTV mask (label map or .seg.nrrd, non-zero inside): grow a CTV from it")
    p.add_argument("--margin", type=float, default=None, help="CTV margin around the GTV in mm (default 5)")
    p.add_argument("--ctv-model", nargs="?", const="ctv-unet-phantom", metavar="ID",
                   help="add the learned CTV (CT only, no GTV) with this registered CTV model "
                        "(default when given without ID: ctv-unet-phantom)")
    p.add_argument("--no-stage2", action="store_true", help="stage 1 only (no small-organ refinement)")
    add_task_arguments(p, engines=("auto", "model"), model_help="registered model id (default: oar-unet-phantom)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io import read_mask, read_volume
    from ..tasks.oar import OarOptions, run_oar
    from ..tasks.oar.pipeline import DEFAULT_MARGIN_MM
    from ..tasks.oar.preview import render_oar_preview

    reporter = Reporter.from_args(args)
    out = output_folder(args)
    if args.margin is not None and not args.gtv:
        raise InputError("--margin", "a CTV margin needs a GTV (--gtv)")
    if args.ctv_model and args.gtv:
        raise InputError("--ctv-model", "choose one CTV source: a drawn GTV (--gtv, margin tool) or the learned model")
    gtv = read_mask(args.gtv) if args.gtv else None
    ct = read_volume(args.ct, series_uid=args.series_uid)
    options = OarOptions(args.engine, args.model_id, args.device, gtv,
                         DEFAULT_MARGIN_MM if args.margin is None else args.margin, stage2=not args.no_stage2,
                         ctv_model=args.ctv_model)
    result = run_oar(ct, options, reporter.progress, args.cancel)
    return finish_task(args, reporter, "oar", result, out, lambda res, folder: render_oar_preview(res, folder, ct))
