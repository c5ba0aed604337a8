"""Which airway branches an engine misses, by lumen radius: detection of ground-truth branches per radius bin.

For each held-out case (read from ``bench/airway_heldout.py``'s ``--cache``), every ground-truth branch of the
ATM'22 evaluation (skeleton cut at bifurcations) gets its mean lumen radius (distance transform of the label at
its skeleton voxels, in mm). Per radius bin it prints how many branches there are, the fraction detected (the
80 % skeleton rule, BD) and the fraction of skeleton length inside the prediction (TD), per engine. It tells
whether an engine's misses are thin branches only or also resolvable ones.

Run: ``.venv/bin/python bench/airway_misses.py --cache runs/heldout-cases --cases seed1003,seed1005
--engines classical,airway-unet-phantom``
"""

from __future__ import annotations

import same_phantoms  # noqa: F401  (first: pins OpenBLAS's kernels before numpy loads)

# isort: split
import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from airway_heldout import cached
from scipy.ndimage import distance_transform_edt

from clinseg.metrics.airway import detected_branches, reference_for

EDGES_MM = (0.0, 0.75, 1.0, 1.5, 2.0, 3.0, np.inf)


def branch_table(gt, pred: np.ndarray) -> list[dict]:
    """Per radius bin: branch count, BD and TD of ``pred`` (bool array on ``gt``'s grid)."""
    ref = reference_for(gt.array)
    offset = np.array([s.start for s in ref.box])
    local = ref.skeleton - offset
    depth = distance_transform_edt(ref.mask, sampling=gt.spacing[::-1])
    radius = depth[tuple(local.T)]
    counts = np.bincount(ref.branch, minlength=ref.n_branches)
    branch_radius = np.bincount(ref.branch, radius, minlength=ref.n_branches) / np.maximum(counts, 1)
    hit = pred[tuple(ref.skeleton.T)]
    detected = detected_branches(ref, hit)
    rows = []
    for lo, hi in zip(EDGES_MM[:-1], EDGES_MM[1:]):
        in_bin = (branch_radius >= lo) & (branch_radius < hi)
        voxels = in_bin[ref.branch]
        if not in_bin.any():
            continue
        rows.append({"radius_mm": f"{lo:g}-{hi:g}", "branches": int(in_bin.sum()),
                     "bd": round(float(detected[in_bin].mean()), 3), "td": round(float(hit[voxels].mean()), 3)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="bench/airway_heldout.py's case cache")
    parser.add_argument("--cases", required=True, help="comma-separated cache keys, e.g. seed1003,seed1005")
    parser.add_argument("--engines", default="classical", help="classical and/or installed model ids")
    parser.add_argument("--json", help="write the tables here")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    from clinseg.tasks.airway import AirwayOptions, run_airway

    out = []
    for key in args.cases.split(","):
        if not (args.cache / f"{key}.json").is_file():
            parser.error(f"case {key} is not in {args.cache}: run bench/airway_heldout.py --cache first")
        name, ct, airway = cached(None, key, args.cache)
        for engine in args.engines.split(","):
            options = AirwayOptions(engine="classical") if engine == "classical" else AirwayOptions(model_id=engine)
            result = run_airway(ct, options)
            table = branch_table(airway, result.labelmap.array > 0)
            out.append({"case": name, "engine": engine, "bins": table})
            print(f"{name} / {engine}")
            for row in table:
                print(f"  radius {row['radius_mm']:>8} mm: {row['branches']:4d} branches, BD {row['bd']:.3f}, "
                      f"TD {row['td']:.3f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
