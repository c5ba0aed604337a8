"""``clinseg stroke``: ischaemic stroke lesions, their volumes and a per-lesion table from brain MRI."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from .reporting import Reporter, add_common_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser("stroke", help="segment stroke lesions in brain MRI (acute DWI+ADC or chronic T1)")
    p.add_argument("inputs", nargs="+", help="MRI volumes of one case (NIfTI, NRRD, MHA or DICOM folders)")
    p.add_argument("-o", "--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    p.add_argument("--sequences", help="the inputs' sequences in order, e.g. dwi,adc,flair (default: told from "
                   "JSON sidecars, DICOM series descriptions and file names)")
    p.add_argument("--mode", choices=["auto", "acute", "chronic"], default="auto",
                   help="acute: DWI (+ADC, +FLAIR); chronic: T1; auto: acute when a DWI is given")
    p.add_argument("--engine", choices=["auto", "model", "classical"], default="auto")
    p.add_argument("--model", dest="model_id", help="registered model id (see: clinseg models list)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--series-uid", help="DICOM folder with several series: the one to read (one input only)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--no-preview", action="store_true", help="skip the PNG preview")
    add_common_arguments(p)
    p.set_defaults(func=run)


def read_inputs(paths: list[str], sequences: str | None, series_uid: str | None = None) -> dict:
    """The input files as volumes by sequence name."""
    from ..io import read_volume
    from ..tasks.stroke.sequences import SequenceInput, assign_sequences, parse_sequence_list, sidecar_hints
    from ..volume import label_of

    if series_uid is not None and len(paths) != 1:
        raise InputError("--series-uid", "picks a series of one DICOM input; give one input with it")
    explicit = parse_sequence_list(sequences, len(paths))
    items = [SequenceInput(read_volume(path, series_uid=series_uid), label_of(path), sidecar_hints(path))
             for path in paths]
    return assign_sequences(items, explicit)


def run(args: argparse.Namespace) -> int:
    from ..output import write_result
    from ..tasks.stroke import StrokeOptions, run_stroke
    from ..tasks.stroke.pipeline import PRIMARY
    from ..tasks.stroke.preview import render_stroke_preview

    reporter = Reporter.from_args(args)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InputError(str(out), "output folder exists and is not empty (choose another or pass --overwrite)")
    volumes = read_inputs(args.inputs, args.sequences, args.series_uid)
    options = StrokeOptions(args.mode, args.engine, args.model_id, args.device)
    result = run_stroke(volumes, options, reporter.progress, args.cancel)
    args.cancel.check("stroke")  # stopped before writing: no output folder at all
    primary = volumes[PRIMARY[result.metrics["mode"]]]
    render = None if args.no_preview else (lambda res, folder: render_stroke_preview(res, folder, primary))
    files = write_result(result, out, overwrite=args.overwrite, render=render)
    reporter.result({"out": str(out), "files": {k: str(v) for k, v in files.items()}, "metrics": result.metrics})
    return 0
