"""A second held-out check for OARSeg: phantoms around the *radiographer* masks of the validation scans.

Usage: .venv/bin/python bench/oar_second_heldout.py [--models ID[,ID...]] [--json out.json]

``bench/oar.py`` builds its phantoms around the oncologist masks, and model choices have been made on those 7
phantoms. The radiographer drew the same scans independently, so phantoms built around those masks (seed 3000 +
index: other CT texture too) give organ shapes no choice was made on; same patients, though, so this checks
over-fitting to the oncologist-mask phantoms, not to these patients. Scored as ``bench/oar.py`` scores (organs
where the reference has them); several models run on each phantom in turn, so their figures share a CPU load.
"""

from __future__ import annotations

import same_phantoms  # noqa: F401  (first: pins OpenBLAS's kernels before numpy loads)

# isort: split
import argparse
import json
from pathlib import Path

import numpy as np
from oar import per_organ  # bench/oar.py: the same per-organ means

from clinseg.datasets.hn_oar import crop_to_organs, read_hn_oar
from clinseg.phantoms.headneck import generate_headneck_from_masks
from clinseg.shared import shared_dir
from clinseg.tasks.oar import OarOptions, run_oar
from clinseg.tasks.oar.organs import score_organs
from clinseg.terminology import HN_ORGANS

SEED_BASE = 3000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="oar-unet-phantom")
    parser.add_argument("--shared", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    root = (args.shared or shared_dir() or Path("../shared")) / "data" / "hn_oar_masks"
    models = args.models.split(",")
    keys = ("dice", "hd95_mm", "surface_dice_2mm")
    rows: dict[str, list[dict]] = {m: [] for m in models}
    for index, case in enumerate(read_hn_oar(root, ("validation",))):
        if "radiographer" not in case.files:
            print(f"{case.name}: no radiographer masks, skipped")
            continue
        phantom = generate_headneck_from_masks(crop_to_organs(case.load("radiographer"), 30.0), SEED_BASE + index)
        for model in models:
            result = run_oar(phantom.ct, OarOptions(model_id=model))
            table = score_organs(result.labelmap, result.segments, phantom.labels)
            scored = [dict(r, scan=case.name) for r in table.rows() if r["organ"] != "mean" and r["volume_ref_ml"] > 0]
            rows[model] += scored
            print(f"{case.name} {model}: mean Dice {np.mean([r['dice'] for r in scored]):.3f}", flush=True)
    report = {}
    for model in models:
        organs = per_organ(rows[model], keys)
        report[model] = {"mean": {k: float(np.nanmean([o[k] for o in organs.values()])) for k in keys},
                         "per_organ": organs}
    names = [s.name for s in HN_ORGANS if s.name in report[models[0]]["per_organ"]]
    print(f"{'organ (Dice)':<16}" + "".join(f"{m[-14:]:>16}" for m in models))
    for organ in names:
        print(f"{organ:<16}" + "".join(f"{report[m]['per_organ'][organ]['dice']:>16.3f}" for m in models))
    print(f"{'mean of organs':<16}" + "".join(f"{report[m]['mean']['dice']:>16.4f}" for m in models))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
