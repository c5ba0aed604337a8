"""``clinseg demo``: the main job on a built-in input, for a fresh machine.

Generates a chest CT phantom (with its exact ground truth), runs the full AirwaySeg
pipeline on it with a route to the largest phantom nodule, writes every output and
the PNG preview, and scores the airway against the ground truth.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .reporting import Reporter, add_common_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run AirwaySeg end to end on a generated chest phantom")
    p.add_argument("--out", default="demo-output", help="output folder")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--preset", default="demo", help="phantom preset (see clinseg phantom chest --help)")
    p.add_argument("--engine", choices=["auto", "model", "classical"], default="auto")
    p.add_argument("--scope-diameter", type=float, default=4.0)
    add_common_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io import write_volume
    from ..metrics.airway import airway_metrics
    from ..output import write_result
    from ..phantoms import generate_chest
    from ..tasks.airway import AirwayOptions, run_airway
    from ..tasks.airway.preview import render_airway_preview

    reporter = Reporter.from_args(args)
    out = Path(args.out)
    reporter.log(f"generating chest phantom (seed {args.seed}, preset {args.preset})")
    phantom = generate_chest(seed=args.seed, preset=args.preset)
    target = max(phantom.nodules, key=lambda n: n.diameter_mm).center_lps if phantom.nodules else None
    options = AirwayOptions(engine=args.engine, target_lps=target, scope_diameter_mm=args.scope_diameter)
    result = run_airway(phantom.ct, options, reporter.progress)
    result.metrics["vs_ground_truth"] = airway_metrics(result.labelmap.array, phantom.airway.array, phantom.ct.spacing)
    files = write_result(
        result, out, overwrite=True, render=lambda res, folder: render_airway_preview(res, folder, phantom.ct)
    )
    write_volume(phantom.ct, out / "input_ct.nii.gz")
    write_volume(phantom.airway, out / "ground_truth_airway.nii.gz")
    summary = {k: result.metrics[k] for k in ("engine", "tree", "route", "vs_ground_truth", "timings_s")
               if k in result.metrics}
    reporter.log(json.dumps(summary, indent=1, default=str))
    reporter.result({"out": str(out), "files": {k: str(v) for k, v in files.items()}})
    return 0
