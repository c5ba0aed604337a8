"""How real do the chest phantoms look to a network trained on real CT? The ATM'22 baseline as a yardstick.

The ATM'22 organisers' baseline U-Net was trained on real multi-site chest CT only. Run on a phantom with its
upstream recipe (HU clipped to [-1000, 400] -> [0, 1], native spacing, 128^3 sliding window, overlap 0.25,
Gaussian blending of sigmoid(channel 1), > 0.5, largest 26-connected component), its agreement with the
phantom's exact airway label measures how much the phantom looks like a real chest CT to it.

Printed per seed: Dice, precision, sensitivity, TD and BD (ATM'22 metrics) after the largest component, the raw
Dice before it, the Dice against lumen + wall (``airway_outer``) for comparison, and where the false positives
lie: which phantom structure (airway wall, vessels, oesophagus, other gas, lung, body outline...) they overlap.

Runs on a crop around the carina by default (``--crop 128,160,160`` voxels k,j,i; ``--crop 0`` for the whole
volume, about 3 minutes per demo volume on 2 cores). Held-out seeds start at 1000.

    .venv/bin/python bench/phantom_realism.py --preset demo --seeds 1000,1001,1002 [--png /tmp/realism]
"""

from __future__ import annotations

import same_phantoms  # noqa: F401  (first: pins OpenBLAS's kernels before numpy loads)

# isort: split
import argparse
import time
from pathlib import Path

import cc3d
import numpy as np
import torch
from scipy import ndimage

from clinseg.engine import SlidingWindowInferer
from clinseg.metrics.airway import airway_metrics
from clinseg.nets.atm22_baseline import ATM22BaselineUNet
from clinseg.phantoms import ChestPhantom, generate_chest
from clinseg.phantoms.raster import Grid, SdfCanvas
from clinseg.volume import Volume

WEIGHTS = Path("/work/shared/models/atm22_baseline/weight.pth")
CROP = (128, 160, 160)  # k, j, i voxels
FP_CLASSES = ("airway wall", "next to airway", "vessels", "oesophagus", "other gas", "lung", "outside body",
              "soft tissue / bone")


def load_baseline(weights: Path = WEIGHTS) -> torch.nn.Module:
    """The official weights in our compatible class, with the sigmoid the upstream network applies in eval."""
    net = ATM22BaselineUNet()
    net.load_state_dict(torch.load(weights, weights_only=True, map_location="cpu"), strict=True)
    return torch.nn.Sequential(net, torch.nn.Sigmoid()).eval()


def carina_crop(ph: ChestPhantom, size: tuple[int, int, int] = CROP) -> tuple[slice, slice, slice]:
    """Array box (k, j, i) of ``size`` voxels centred 10 mm below the carina, shifted to stay in the grid."""
    centre = ph.ct.physical_to_index(ph.branches[0].points_lps[-1][None])[0][::-1]
    centre[0] -= 10.0 / ph.ct.spacing[2]
    box = []
    for c, n, full in zip(np.rint(centre).astype(int), size, ph.ct.array.shape):
        n = min(n, full) if n > 0 else full
        start = int(np.clip(c - n // 2, 0, full - n))
        box.append(slice(start, start + n))
    return tuple(box)


def sub_volume(vol: Volume, box: tuple[slice, slice, slice], name: str = "") -> Volume:
    """The part of ``vol`` in an array box, with its own origin (same spacing and direction)."""
    origin = vol.index_to_physical(np.array([[box[2].start, box[1].start, box[0].start]], float))[0]
    return Volume(np.ascontiguousarray(vol.array[box]), vol.spacing, tuple(origin), vol.direction, name or vol.name)


def predict(model: torch.nn.Module, ct: np.ndarray) -> np.ndarray:
    """Blended probability of the airway channel (float32, same shape as ``ct``)."""
    x = (np.clip(ct.astype(np.float32), -1000.0, 400.0) + 1000.0) / 1400.0
    inferer = SlidingWindowInferer((128, 128, 128), overlap=0.25, batch_size=1, device="cpu", precision="float32",
                                   keep_channels=[1])
    with torch.no_grad():
        return inferer(x[None], model)[0].numpy()


def _largest(mask: np.ndarray) -> np.ndarray:
    labels = cc3d.connected_components(mask, connectivity=26)
    if labels.max() == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == sizes.argmax()


def structure_map(ph: ChestPhantom, box: tuple[slice, slice, slice]) -> np.ndarray:
    """Index into ``FP_CLASSES`` for every voxel of the box (first matching class wins)."""
    ct = ph.ct.array[box]
    airway = ph.airway.array[box] > 0
    outer = (ph.airway_outer.array[box] > 0) if ph.airway_outer is not None else airway
    near = ndimage.binary_dilation(outer, iterations=2)
    oesophagus = np.zeros(ct.shape, bool)
    tube = next((t for t in (ph.patient.tubes if ph.patient else []) if t.name == "esophagus"), None)
    if tube is not None:
        canvas = SdfCanvas(Grid.of(sub_volume(ph.ct, box)), tube.points.min(0) - tube.radius - 2,
                           tube.points.max(0) + tube.radius + 2)
        canvas.add_capsules(tube.points[:-1], tube.points[1:], tube.radius, tube.radius)
        if not canvas.empty:
            canvas.global_view(oesophagus)[...] = canvas.sd <= 1.0
    body = np.stack([ndimage.binary_fill_holes(s) for s in ct > -500])
    lungs = ph.lungs.array[box] > 0
    classes = [outer & ~airway, near & ~outer, ph.vessels.array[box] > 0, oesophagus,
               (ct < -400) & body & ~lungs, lungs, ~body]
    out = np.full(ct.shape, len(FP_CLASSES) - 1, np.uint8)
    for n, m in reversed(list(enumerate(classes))):
        out[m] = n
    return out


def false_positive_table(pred: np.ndarray, gt: np.ndarray, structures: np.ndarray) -> dict[str, int]:
    """False-positive voxels per phantom structure (classes with none are left out)."""
    counts = np.bincount(structures[pred & ~gt].ravel(), minlength=len(FP_CLASSES))
    return {name: int(c) for name, c in zip(FP_CLASSES, counts) if c}


def measure(ph: ChestPhantom, model: torch.nn.Module, crop: tuple[int, int, int] = CROP) -> dict:
    """Baseline metrics of one phantom (inside the carina crop) and the make-up of its false positives."""
    box = carina_crop(ph, crop)
    t0 = time.perf_counter()
    prob = predict(model, ph.ct.array[box])
    seconds = time.perf_counter() - t0
    raw = prob > 0.5
    gt = ph.airway.array[box] > 0
    m = airway_metrics(raw.astype(np.uint8), gt.astype(np.uint8))
    lcc = _largest(raw)
    structures = structure_map(ph, box)
    result = {k: m[k] for k in ("dice", "precision", "sensitivity", "td", "bd")}
    result["raw_dice"] = float(2 * np.count_nonzero(raw & gt) / max(1, raw.sum() + gt.sum()))
    if ph.airway_outer is not None:
        outer = ph.airway_outer.array[box] > 0
        result["dice_vs_lumen_wall"] = float(2 * np.count_nonzero(lcc & outer) / max(1, lcc.sum() + outer.sum()))
    result["fp_largest"] = false_positive_table(lcc, gt, structures)
    result["fp_raw"] = false_positive_table(raw, gt, structures)
    result["seconds"] = round(seconds, 1)
    result["box"] = box
    result["pred"] = lcc
    return result


def _overlay(ph: ChestPhantom, box, pred: np.ndarray, path: Path, title: str) -> None:
    from clinseg.gallery import render_orthogonal

    ct = sub_volume(ph.ct, box, "ct")
    labels = {"airway (lumen)": sub_volume(ph.airway, box, "airway"),
              "prediction": Volume(pred.astype(np.uint8), ct.spacing, ct.origin, ct.direction, "prediction")}
    render_orthogonal(ct, labels, path, point_lps=ph.branches[0].points_lps[-1], window=(-1000, 400), title=title)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo", help="phantom preset (small, demo, full)")
    ap.add_argument("--seeds", default="1000,1001,1002", help="comma-separated held-out seeds (>= 1000)")
    ap.add_argument("--crop", default=",".join(map(str, CROP)), help="k,j,i voxels around the carina; 0 = whole")
    ap.add_argument("--png", default="", help="folder for orthogonal overlays (prediction vs ground truth)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    crop = tuple(int(v) for v in args.crop.split(",")) if args.crop != "0" else (0, 0, 0)
    if len(crop) != 3:
        ap.error("--crop needs three sizes k,j,i (or 0)")
    model = load_baseline()
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        ph = generate_chest(seed, preset=args.preset)
        r = measure(ph, model, crop)
        rows.append(r)
        print(f"seed {seed} ({args.preset}, crop {[s.stop - s.start for s in r['box']]}, {r['seconds']} s): "
              f"DSC {r['dice']:.3f} precision {r['precision']:.3f} sensitivity {r['sensitivity']:.3f} "
              f"TD {r['td']:.3f} BD {r['bd']:.3f} | raw DSC {r['raw_dice']:.3f} "
              f"| DSC vs lumen+wall {r.get('dice_vs_lumen_wall', float('nan')):.3f}")
        print(f"    false positives, largest component: {r['fp_largest'] or 'none'}")
        print(f"    false positives, raw prediction:    {r['fp_raw'] or 'none'}")
        if args.png:
            folder = Path(args.png)
            folder.mkdir(parents=True, exist_ok=True)
            _overlay(ph, r["box"], r["pred"], folder / f"realism_{args.preset}_{seed}.png",
                     f"seed {seed}: DSC {r['dice']:.3f}")
    keys = ("dice", "precision", "sensitivity", "td", "bd", "raw_dice")
    print("mean over seeds: " + "  ".join(f"{k} {np.mean([r[k] for r in rows]):.3f}" for k in keys))


if __name__ == "__main__":
    main()
