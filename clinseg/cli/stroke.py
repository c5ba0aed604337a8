"""``clinseg stroke``: ischaemic stroke lesions, their volumes and a per-lesion table from brain MRI."""

from __future__ import annotations

import argparse

from ..errors import InputError
from .reporting import Reporter
from .task_command import add_task_arguments, finish_task, output_folder


def register(subparsers) -> None:
    p = subparsers.add_parser("stroke", help="segment stroke lesions in brain MRI (acute DWI+ADC or chronic T1)")
    p.add_argument("inputs", nargs="+", help="MRI volumes of one case (NIfTI, NRRD, MHA or DICOM folders)")
    p.add_argument("--sequences", help="the inputs' sequences in order, e.g. dwi,adc,flair (default: told from "
                   "JSON sidecars, DICOM series descriptions and file names)")
    p.add_argument("--mode", choices=["auto", "acute", "chronic"], default="auto",
                   help="acute: DWI (+ADC, +FLAIR); chronic: T1; auto: acute when a DWI is given")
    add_task_arguments(p, series_help="DICOM folder with several series: the one to read (one input only)")
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
    from ..tasks.stroke import StrokeOptions, run_stroke
    from ..tasks.stroke.preview import render_stroke_preview
    from ..tasks.stroke.sequences import PRIMARY

    reporter = Reporter.from_args(args)
    out = output_folder(args)
    volumes = read_inputs(args.inputs, args.sequences, args.series_uid)
    options = StrokeOptions(args.mode, args.engine, args.model_id, args.device)
    result = run_stroke(volumes, options, reporter.progress, args.cancel)
    primary = volumes[PRIMARY[result.metrics["mode"]]]
    return finish_task(args, reporter, "stroke", result, out,
                       lambda res, folder: render_stroke_preview(res, folder, primary))
