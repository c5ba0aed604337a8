"""Where the spinal cord starts and stops: in the real head & neck masks, and in a model's held-out predictions.

Usage: .venv/bin/python bench/hn_cord_extent.py [--shared DIR] [--limit N] [--model ID]

Masks (both splits of ``hn_oar_masks``, both annotators): per scan the gap between the brainstem's lowest slice and
the cord's highest (0: they adjoin), whether the cord reaches the scan's lowest slice, and how far (mm) the canal
runs below the cord. ``--model``: per held-out phantom (the validation split, built as ``bench/oar.py`` builds
them), the cord's upper and lower ends predicted minus reference (mm, + = higher), its Dice and HD95.
"""

from __future__ import annotations

import same_phantoms  # noqa: F401  (first: pins OpenBLAS's kernels before numpy loads)

# isort: split
import argparse
from pathlib import Path

import numpy as np

from clinseg.datasets.hn_oar import ANNOTATORS, crop_to_organs, read_hn_oar
from clinseg.metrics.organs import organ_table
from clinseg.shared import shared_dir
from clinseg.volume import Volume

ORGANS = ("Spinal cord", "Spinal canal", "Brainstem")


def z_ends(grid: Volume, mask: np.ndarray) -> tuple[float, float] | None:
    """LPS z (mm) of the lowest and highest axial slice holding ``mask`` (slices: the first array axis)."""
    ks = np.flatnonzero(mask.any((1, 2)))
    if not len(ks):
        return None
    z = [float(grid.index_to_physical(np.array([0.0, 0.0, k]))[2]) for k in (ks[0], ks[-1])]
    return min(z), max(z)


def mask_row(masks: dict[str, Volume]) -> dict[str, float] | None:
    """Junction gap (slices), cord at the scan's lowest slice, canal below the cord (mm) of one annotator's masks."""
    if any(name not in masks for name in ORGANS):
        return None
    grid = masks["Spinal cord"]
    ends = {name: z_ends(grid, masks[name].array != 0) for name in ORGANS}
    scan_low = z_ends(grid, np.ones((grid.shape[0], 1, 1), bool))
    if any(e is None for e in ends.values()) or scan_low is None:
        return None
    dz = abs(float(grid.spacing[2]))
    return {"gap_slices": round((ends["Brainstem"][0] - ends["Spinal cord"][1]) / dz - 1),
            "cord_at_scan_end": float(ends["Spinal cord"][0] - scan_low[0] < dz / 2),
            "canal_below_cord_mm": ends["Spinal cord"][0] - ends["Spinal canal"][0],
            "cord_length_mm": ends["Spinal cord"][1] - ends["Spinal cord"][0] + dz}


def masks_survey(root: Path, limit: int | None) -> None:
    print(f"{'scan':<14}{'split':<11}{'annotator':<13}{'gap':>4}{'cord@end':>9}{'canal below cord mm':>20}"
          f"{'cord mm':>9}")
    for case in read_hn_oar(root)[:limit]:
        for annotator in ANNOTATORS:
            if annotator not in case.files:
                continue
            row = mask_row(case.load(annotator, [o for o in ORGANS if o in case.organs(annotator)]))
            if row is not None:
                print(f"{case.name:<14}{case.split:<11}{annotator:<13}{row['gap_slices']:>4}"
                      f"{'yes' if row['cord_at_scan_end'] else 'no':>9}{row['canal_below_cord_mm']:>20.1f}"
                      f"{row['cord_length_mm']:>9.1f}")


def heldout(root: Path, limit: int | None, model: str) -> None:
    from clinseg.phantoms.headneck import generate_headneck_from_masks
    from clinseg.tasks.oar import OarOptions, run_oar

    print(f"{model}: cord ends predicted - reference (mm, + = higher)")
    print(f"{'scan':<14}{'upper':>7}{'lower':>8}{'Dice':>7}{'HD95':>7}")
    for index, case in enumerate(read_hn_oar(root, ("validation",))[:limit]):
        ph = generate_headneck_from_masks(crop_to_organs(case.load("oncologist"), 30.0), 1000 + index)
        labels = run_oar(ph.ct, OarOptions(model_id=model)).labelmap
        value = {s.name: s.label for s in ph.organs}["Spinal cord"]
        masks = labels.array == value, ph.labels.array == value
        pred, ref = z_ends(labels, masks[0]), z_ends(ph.labels, masks[1])
        row = organ_table({"cord": masks[0]}, {"cord": masks[1]}, ph.labels.spacing).rows()[0]
        if pred is None or ref is None:
            print(f"{case.name:<14}{'cord missing':>15}")
            continue
        print(f"{case.name:<14}{pred[1] - ref[1]:>7.1f}{pred[0] - ref[0]:>8.1f}{row['dice']:>7.3f}"
              f"{row['hd95_mm']:>7.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--model", default=None, help="also locate this model's cord errors on held-out phantoms")
    args = parser.parse_args()
    root = (args.shared or shared_dir() or Path("../shared")) / "data" / "hn_oar_masks"
    masks_survey(root, args.limit)
    if args.model:
        heldout(root, args.limit, args.model)


if __name__ == "__main__":
    main()
