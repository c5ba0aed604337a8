"""StrokeSeg bench: held-out acute brain phantoms (classical engine, and a trained network when given) and the
real ISLES'22 case.

Cases: phantoms seeds 1000-1007 (training uses seeds below 100), acute, DWI + ADC at 2 mm, lesions cycling MCA
wedge / lacunes / emboli; the real case ``sub-strokecase0009`` from ../shared/data/isles22 (DWI, ADC and
FLAIR, FLAIR on its own 0.45 x 0.45 x 5 mm grid). Per case and aggregated: DSC, recall, precision, Jaccard,
ASD, HD95, lesion-wise F1, absolute volume difference (ml), absolute lesion-count difference; DSC(G) pooled;
the pipeline's wall time per case and the process's peak resident memory.

``--weights run/model.safetensors`` adds the network engine: the weights are put with a card into a temporary
CLINSEG_HOME (the user's cache is untouched) and run through ``clinseg.tasks.stroke`` like an installed model.

Run: ``.venv/bin/python bench/stroke.py --json stroke.json [--weights W --net dunet --width 0.25]``.
"""

from __future__ import annotations

import same_phantoms  # noqa: F401  (first: pins OpenBLAS's kernels before numpy loads)

# isort: split
import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from clinseg.metrics.lesion import CASE_METRICS, aggregate_cases, case_metrics
from clinseg.phantoms.brain import generate_brain
from clinseg.registry.store import sha256_file
from clinseg.shared import shared_dir
from clinseg.tasks.stroke import StrokeOptions, run_stroke

SEEDS = range(1000, 1008)
LESIONS = ("mca", "lacunar", "emboli", "mca")
MODEL_ID = "stroke-dunet-phantom"
ISLES_CASE = "sub-strokecase0009_ses-0001"


def build_card(weights: Path, net: str, width: float, parameters: int, figures: dict, description: str,
               threshold: float = 0.5) -> dict:
    classes = {"dunet": "stroke:DUNet", "agmr": "stroke:AGMRNet", "tsrl": "stroke:TSRLNet"}
    return {
        "id": MODEL_ID, "version": "0.1.0", "task": "stroke", "licence": "Apache-2.0",
        "description": description,
        "citation": "D-UNet backbone as described in the Anhui University 2023 stroke thesis (AGMR-Net, TSRL-Net); "
                    "phantoms and weights: ClinicalSeg.",
        "training_data": {"description": "ClinicalSeg acute brain phantoms (DWI, 2 mm), trained on phantoms only; "
                                         "no patient data.", "synthetic": True},
        "architecture": {"class": classes[net], "kwargs": {"width": width}},
        "inputs": {"modalities": ["DWI"], "channels": 4, "spacing": [2.0, 2.0, 2.0], "patch_size": [4, 96, 96],
                   "overlap": 0.0, "intensity": {"scale": [0, 1]}},
        "inference": {"activation": "sigmoid", "threshold": threshold},
        "labels": [{"value": 1, "name": "Stroke lesion", "color": [0.85, 0.2, 0.2],
                    "category": ["SCT", "49755003", "Morphologically Altered Structure"],
                    "type": ["SCT", "55641003", "Infarct"]}],
        "files": [{"name": "model.safetensors", "sha256": sha256_file(weights), "size": weights.stat().st_size,
                   "format": "safetensors"}],
        "figures": figures,
        "parameter_count": parameters,
    }


def install_temporary(weights: Path, net: str, width: float, threshold: float) -> None:
    from clinseg.train.stroke import NETS

    home = Path(tempfile.mkdtemp(prefix="stroke-bench-"))
    folder = home / "models" / MODEL_ID
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(weights.read_bytes())
    parameters = sum(p.numel() for p in NETS[net](width=width).parameters())
    card = build_card(folder / "model.safetensors", net, width, parameters, {}, "bench copy", threshold)
    (folder / "card.json").write_text(json.dumps(card, indent=1))
    os.environ["CLINSEG_HOME"] = str(home)


def phantom_cases():
    for n, seed in enumerate(SEEDS):
        lesion = LESIONS[n % len(LESIONS)]
        ph = generate_brain(seed, spacing=(2.0, 2.0, 2.0), contrasts=("DWI", "ADC"), lesion=lesion)
        yield f"phantom {seed} {lesion}", {"dwi": ph.images["DWI"], "adc": ph.images["ADC"]}, ph.lesion


def isles_case():
    from clinseg.io import read_volume

    shared = shared_dir()
    folder = None if shared is None else shared / "data" / "isles22"
    if folder is None or not (folder / f"{ISLES_CASE}_dwi.nii.gz").is_file():
        return None
    volumes = {k: read_volume(folder / f"{ISLES_CASE}_{k}.nii.gz") for k in ("dwi", "adc", "flair")}
    return f"ISLES'22 {ISLES_CASE}", volumes, read_volume(folder / f"{ISLES_CASE}_msk.nii.gz")


def evaluate(name: str, volumes: dict, truth, engine: str) -> dict:
    options = StrokeOptions(mode="acute", engine="classical") if engine == "classical" else \
        StrokeOptions(mode="acute", engine="model", model_id=MODEL_ID, device="cpu")
    start = time.perf_counter()
    result = run_stroke(volumes, options)
    seconds = time.perf_counter() - start
    m = case_metrics(result.labelmap.array, truth.array, truth.spacing)
    row = {"case": name, "engine": engine, "time_s": round(seconds, 2)}
    row.update({k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in m.items()})
    return row


def summarise(rows: list[dict]) -> dict:
    agg = aggregate_cases(rows)
    out = {k: round(agg[k]["mean"], 4) for k in CASE_METRICS}
    out.update(dsc_global=round(agg["dsc_global"], 4), cases=len(rows),
               time_s=round(float(np.mean([r["time_s"] for r in rows])), 2),
               max_time_s=round(max(r["time_s"] for r in rows), 2))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="trained stroke network (.safetensors) to bench too")
    parser.add_argument("--net", default="dunet", choices=["dunet", "agmr", "tsrl"])
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--threshold", type=float, default=0.5, help="the network's probability threshold "
                        "(choose it on the training run's validation cases, never on these)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    engines = ["classical"]
    if args.weights is not None:
        install_temporary(args.weights, args.net, args.width, args.threshold)
        engines.append("model")
    cases = list(phantom_cases())
    real = isles_case()
    figures: dict = {"cases": []}
    for engine in engines:
        rows = [evaluate(name, volumes, truth, engine) for name, volumes, truth in cases]
        figures["cases"] += rows
        figures[f"heldout_phantoms_{engine}"] = summarise(rows)
        if real is not None:
            row = evaluate(*real, engine)
            figures["cases"].append(row)
            figures[f"isles22_{engine}"] = {k: row[k] for k in ("dice", "pred_ml", "gt_ml", "hd95_mm", "lesion_f1",
                                                                 "time_s")}
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    for row in figures["cases"]:
        print(f"{row['case']:<40} {row['engine']:<9} DSC {row['dice']:.3f}  {row['pred_ml']:.2f}/{row['gt_ml']:.2f} ml"
              f"  F1 {row['lesion_f1']:.2f}  HD95 {row['hd95_mm']:.1f}  {row['time_s']:.1f} s")
    print(json.dumps({k: v for k, v in figures.items() if k != "cases"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
