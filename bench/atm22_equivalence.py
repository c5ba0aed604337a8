"""Does ``clinseg airway --model atm22-baseline`` reproduce the ATM'22 baseline's upstream inference recipe?

The upstream recipe, re-implemented here with MONAI (used only in bench/ and tests, never in clinseg/):
HU clipped to [-1000, 400] and scaled to [0, 1] at native spacing; ``sliding_window_inference`` over the WHOLE
volume (roi 128^3, sw_batch_size 1, overlap 0.25, gaussian, sigma_scale 0.125) blending the network's sigmoid
output; channel 1 > 0.5; ``KeepLargestConnectedComponent`` with connectivity 3 (26-neighbourhood).

Besides the end-to-end Dice (pipeline vs recipe) the script isolates the causes of any difference:
``blend``   our sliding-window engine on the whole volume vs MONAI (window positions, Gaussian centre);
``crop``    our engine inside the pipeline's lung box vs on the whole volume (instance norm sees other patches);
``post``    the pipeline's hole filling after the largest component (upstream does not fill holes);
and says whether the ground-truth airway reaches outside the lung box (a crop cutting the trachea).

Run: ``.venv/bin/python bench/atm22_equivalence.py --preset small`` (about a minute on 2 busy cores) or
``--spacing 0.7,0.7,1.0 --shape 224,224,128 --scale 1.0`` (adult anatomy at clinical resolution, central chest).
"""

from __future__ import annotations

import same_phantoms  # noqa: F401  (first: pins OpenBLAS's kernels before numpy loads)

# isort: split
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clinseg.phantoms import generate_chest
from clinseg.volume import Volume

WEIGHTS = Path("/work/shared/models/atm22_baseline/weight.pth")
MODEL_ID = "atm22-baseline"


def ensure_baseline(weights: Path = WEIGHTS) -> bool:
    """Import the official weights into the current (or a temporary) CLINSEG_HOME; False when absent."""
    from clinseg.registry import get_registry

    if get_registry().is_installed(MODEL_ID):
        return True
    if not weights.is_file():
        return False
    if "CLINSEG_HOME" not in os.environ:
        os.environ["CLINSEG_HOME"] = tempfile.mkdtemp(prefix="clinseg-home-")
    get_registry().import_file(weights)
    return True


class _SigmoidOutput(torch.nn.Module):
    """The upstream network applies the sigmoid itself in eval mode, so MONAI blends probabilities."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.network(x))


def upstream_probability(ct: Volume, network: torch.nn.Module) -> np.ndarray:
    """Blended sigmoid of channel 1 over the whole volume, exactly as the upstream recipe (MONAI)."""
    from monai.inferers import sliding_window_inference

    image = np.clip((ct.array.astype(np.float32) + 1000.0) / 1400.0, 0.0, 1.0)
    with torch.no_grad():
        out = sliding_window_inference(torch.from_numpy(image)[None, None], (128, 128, 128), 1,
                                       _SigmoidOutput(network.eval()), overlap=0.25, mode="gaussian",
                                       sigma_scale=0.125)
    return out[0, 1].numpy()


def keep_largest(binary: np.ndarray) -> np.ndarray:
    """MONAI's KeepLargestConnectedComponent with connectivity 3 (26-neighbourhood), as upstream."""
    from monai.transforms import KeepLargestConnectedComponent

    fg = torch.from_numpy(binary)[None].to(torch.uint8)
    return KeepLargestConnectedComponent(applied_labels=[1], connectivity=3)(fg)[0].numpy().astype(bool)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def pipeline_vs_upstream(ct: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(pipeline mask, upstream mask, upstream raw threshold, seconds) for one CT."""
    from clinseg.registry import get_registry
    from clinseg.tasks.airway import AirwayOptions, run_airway

    t = time.perf_counter()
    result = run_airway(ct, AirwayOptions(model_id=MODEL_ID))
    pipeline_s = time.perf_counter() - t
    t = time.perf_counter()
    raw = upstream_probability(ct, get_registry().load_network(MODEL_ID)) > 0.5
    reference = keep_largest(raw)
    upstream_s = time.perf_counter() - t
    seconds = {"pipeline": round(pipeline_s, 1), "upstream_monai": round(upstream_s, 1),
               "pipeline_stages": result.metrics["timings_s"]}
    return result.labelmap.array > 0, reference, raw, seconds


def compare(ct: Volume, gt: np.ndarray | None = None, diagnose: bool = True) -> dict:
    """Pipeline vs upstream recipe; with ``diagnose`` the per-cause figures of the module docstring too."""
    from clinseg.anatomy.lungs import chest_masks, lung_box
    from clinseg.metrics.airway import airway_metrics
    from clinseg.post.components import largest_component
    from clinseg.tasks.airway.model import airway_probability

    ours, reference, reference_raw, seconds = pipeline_vs_upstream(ct)
    masks = chest_masks(ct)
    box = lung_box(ct, masks)
    report: dict = {
        "shape_kji": list(ct.shape), "spacing_ijk": [round(s, 3) for s in ct.spacing],
        "lung_box_kji": [[s.start, s.stop] for s in box],
        "dice_pipeline_vs_upstream": round(dice(ours, reference), 4),
        "voxels": {"pipeline": int(ours.sum()), "upstream": int(reference.sum()),
                   "upstream_before_lcc": int(reference_raw.sum())},
        "seconds": seconds,
    }
    if diagnose:
        t = time.perf_counter()
        whole_raw = airway_probability(ct, None, MODEL_ID).mask(ct.shape)  # our engine on the whole volume (no crop)
        seconds["ours_whole_volume"] = round(time.perf_counter() - t, 1)
        box_raw = airway_probability(ct, masks, MODEL_ID).mask(ct.shape)  # the pipeline's step, before post-processing
        whole, boxed = largest_component(whole_raw), largest_component(box_raw)
        report.update(
            dice_blend_raw=round(dice(whole_raw, reference_raw), 4),
            dice_blend_after_lcc=round(dice(whole, reference), 4),
            dice_crop_raw=round(dice(box_raw, whole_raw), 4),
            dice_crop_after_lcc=round(dice(boxed, whole), 4),
            dice_fill_holes=round(dice(ours, boxed), 4),
        )
        report["voxels"].update(ours_whole_before_lcc=int(whole_raw.sum()), ours_whole=int(whole.sum()),
                                ours_box_before_lcc=int(box_raw.sum()), ours_box=int(boxed.sum()))
    if gt is not None:
        inside = np.zeros(gt.shape, dtype=bool)
        inside[box] = True
        report["gt_voxels_outside_lung_box"] = int(np.count_nonzero(gt & ~inside))
        for name, mask in (("pipeline", ours), ("upstream", reference)):
            m = airway_metrics(mask, gt, ct.spacing)
            report[f"{name}_vs_gt"] = {k: round(float(m[k]), 4) for k in ("dice", "td", "bd", "precision")}
    return report


def _triple(text: str | None, kind=float):
    return None if text is None else tuple(kind(v) for v in text.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--preset", default=None, help="chest phantom preset (small, demo, full)")
    parser.add_argument("--spacing", help="i,j,k mm (overrides the preset's)")
    parser.add_argument("--shape", help="i,j,k voxels (overrides the preset's)")
    parser.add_argument("--scale", type=float, help="patient scale (1.0 = adult; default follows the field of view)")
    parser.add_argument("--no-diagnose", action="store_true", help="only the end-to-end Dice")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    if not ensure_baseline():
        print(f"ATM'22 baseline weights not found at {WEIGHTS}")
        return 1
    if args.preset is None and args.spacing is None:
        args.preset = "small"
    phantom = generate_chest(seed=args.seed, preset=args.preset, spacing=_triple(args.spacing),
                             shape=_triple(args.shape, int), scale=args.scale)
    report = compare(phantom.ct, phantom.airway.array > 0, diagnose=not args.no_diagnose)
    report["phantom"] = {"seed": args.seed, "preset": args.preset, "scale": phantom.info["scale"]}
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
