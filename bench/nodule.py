"""NoduleSeg benchmark: held-out phantoms (FROC, CPM, per-nodule Dice by type and size), the real LIDC
slabs (reader consensus >= 3 as truth), and speed + peak memory on a full-size 512x512x300 phantom.

Run: ``.venv/bin/python bench/nodule.py`` (all parts) or ``--part phantoms|lidc|speed``; ``--logistic`` scores
with the logistic fallback instead of the false-positive network (``nodule-fpr-phantom``); ``--fit`` refits
that logistic score on the training seeds (``TRAIN_SEEDS``) and prints the constants to paste into
``clinseg/tasks/nodule/features.py``. Training (here and for the network: below 200) and held-out seeds
never overlap.
"""

from __future__ import annotations

import same_phantoms  # first: pins OpenBLAS's kernels before numpy loads

# isort: split
import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from clinseg.anatomy.lungs import chest_masks
from clinseg.errors import InputError
from clinseg.metrics.detection import (
    ACTIONABLE_MM,
    Detection,
    ReferenceNodule,
    evaluate_detections,
    ignoring_smaller,
    match_detections,
    nodule_overlaps,
)
from clinseg.phantoms.chest import generate_chest
from clinseg.preprocess import fill_ct_padding
from clinseg.shared import shared_dir
from clinseg.tasks.nodule import NoduleOptions, run_nodule
from clinseg.tasks.nodule.classical import find_nodules
from clinseg.tasks.nodule.features import FEATURES

TRAIN_SEEDS = tuple(range(100, 108))
HELD_OUT_SEEDS = tuple(range(200, 210))
N_NODULES, N_DISTRACTORS = 8, 6
SHARED = shared_dir()
ENGINE = "auto"  # the FP network when installed; --logistic: the classical engine (logistic score)
MODEL: str | None = None  # --model: a registered reducer or NoduleNet instead of the built-in default
LIDC = SHARED / "data" / "lidc" if SHARED is not None else None


def phantom(seed: int):
    return generate_chest(seed, preset="small", n_nodules=N_NODULES, n_distractors=N_DISTRACTORS)


def reference(case: str, ph) -> list[ReferenceNodule]:
    return [ReferenceNodule(case, tuple(float(v) for v in n.center_lps), float(n.diameter_mm), n.label, n.kind)
            for n in ph.nodules]


# --- fitting the false-positive score ---------------------------------------------------------------------------
def training_rows(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and 0/1 labels (mask centroid within a truth nodule's radius) of every candidate of one seed."""
    ph = phantom(seed)
    masks = chest_masks(ph.ct)
    ct = fill_ct_padding(ph.ct)
    findings = find_nodules(ct.array, masks, ct.spacing)
    centres = np.array([n.center_lps for n in ph.nodules]).reshape(-1, 3)
    radii = np.array([n.diameter_mm / 2 for n in ph.nodules])
    x, y = [], []
    for f in findings:
        lo = np.array([s.start for s in f.mask.box])
        kji = np.argwhere(f.mask.mask).mean(axis=0) + lo
        lps = ct.index_to_physical(kji[::-1][None])[0]
        hit = np.any(np.linalg.norm(centres - lps, axis=1) <= radii) if len(radii) else False
        x.append(f.features)
        y.append(float(hit))
    return np.array(x).reshape(-1, len(FEATURES)), np.array(y)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 50) -> tuple:
    """(mean, sd, weights, bias) of an L2-regularised logistic regression on standardised features (Newton)."""
    mean, sd = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = np.column_stack([(x - mean) / sd, np.ones(len(x))])
    w = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2)
    reg[-1] = 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-z @ w))
        grad = z.T @ (p - y) + reg * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg)
        w -= np.linalg.solve(hess, grad)
    return mean, sd, w[:-1], float(w[-1])


def fit() -> None:
    xs, ys = [], []
    for seed in TRAIN_SEEDS:
        x, y = training_rows(seed)
        xs.append(x)
        ys.append(y)
        print(f"seed {seed}: {len(y)} candidates, {int(y.sum())} on nodules", flush=True)
    x, y = np.concatenate(xs), np.concatenate(ys)
    mean, sd, w, b = fit_logistic(x, y)
    fmt = lambda v: "np.array([" + ", ".join(f"{float(a):.4g}" for a in v) + "])"  # noqa: E731
    print(f"MEAN = {fmt(mean)}\nSD = {fmt(sd)}\nWEIGHTS = {fmt(w)}\nBIAS = {b:.4g}")
    for name, wi in zip(FEATURES, w):
        print(f"  {name:>14s} {wi:+.3f}")


# --- held-out phantoms -----------------------------------------------------------------------------------------
def detections_of(case: str, result) -> list[Detection]:
    rows = next(t for t in result.tables if t.name == "nodules").rows()
    return [Detection(case, (r["center_lps_x_mm"], r["center_lps_y_mm"], r["center_lps_z_mm"]), float(r["score"]),
                      int(r["label"])) for r in rows]


def bench_phantoms(seeds: tuple[int, ...] = HELD_OUT_SEEDS) -> dict:
    detections, nodules, label_maps = [], [], {}
    times = []
    for seed in seeds:
        ph = phantom(seed)
        case = f"seed{seed}"
        t = time.perf_counter()
        result = run_nodule(ph.ct, NoduleOptions(engine=ENGINE, model_id=MODEL, min_score=0.0))
        times.append(time.perf_counter() - t)
        dets, refs = detections_of(case, result), reference(case, ph)
        found = len(match_detections(dets, refs).detection_of)
        label_maps[case] = (result.labelmap.array, ph.nodule_labels.array)
        detections += dets
        nodules += refs
        print(f"{case}: {len(refs)} nodules, {found} found, {len(dets)} detections, {times[-1]:.1f} s", flush=True)
    evaluation = evaluate_detections(detections, nodules, len(seeds), label_maps)
    summary = evaluation["summary"]
    out = {"seeds": list(seeds), "cpm": evaluation["cpm"], "sensitivity_at": evaluation["sensitivity_at"],
           "summary": summary, "seconds_per_scan": float(np.mean(times))}
    at = {k: round(v, 3) for k, v in out["sensitivity_at"].items()}
    print(f"CPM {out['cpm']:.3f}; sensitivity at FPs/scan {json.dumps(at)}")
    _print_groups(summary)
    # Information beside the target: the nodules Lung-RADS acts on, smaller ones as irrelevant findings.
    large = evaluate_detections(detections, ignoring_smaller(nodules, ACTIONABLE_MM), len(seeds))
    out["actionable"] = {"min_diameter_mm": ACTIONABLE_MM, "nodules": large["summary"]["all"]["nodules"],
                         "cpm": large["cpm"], "sensitivity_at": large["sensitivity_at"]}
    at = {k: round(v, 3) for k, v in large["sensitivity_at"].items()}
    print(f"nodules >= {ACTIONABLE_MM:g} mm only ({out['actionable']['nodules']}; smaller ones neither found nor "
          f"false positives): CPM {large['cpm']:.3f}; sensitivity at FPs/scan {json.dumps(at)}")
    return out


def _print_groups(summary: dict) -> None:
    def line(name: str, g: dict) -> str:
        d = g["dice"]
        dice = f"{d['mean']:.3f} +- {d['sd']:.3f}" if d["mean"] is not None else "-"
        return f"  {name:>14s}: {g['detected']:>3d}/{g['nodules']:<3d} found, Dice {dice} (n={d['n']})"
    print(line("all", summary["all"]))
    for key in ("type", "size_bin"):
        for name, g in summary[key].items():
            print(line(name, g))


# --- real LIDC slabs --------------------------------------------------------------------------------------------
def bench_lidc(folder: Path | None = LIDC, level: int = 3) -> dict:
    """Each slab: detection of the nodules >= ``level`` readers outlined (hit: within the readers' mean radius;
    fewer readers: ignored, as LUNA16's irrelevant findings), FPs per scan at score 0.5 / 0.3, and for each
    found nodule our mean axial diameter against the readers' mean (``clinseg.datasets.lidc.ReadNodule``) and
    Dice / IoU of our instance against the voxels >= ``level`` of its readers agree on."""
    from clinseg.datasets.lidc import read_lidc_case, read_nodules

    out: dict = {}
    if folder is None:
        return out
    for case_dir in sorted(p for p in folder.glob("LIDC-IDRI-*") if p.is_dir()):
        name = case_dir.name
        case = read_lidc_case(case_dir)
        ct = case.ct
        try:
            result = run_nodule(ct, NoduleOptions(engine=ENGINE, model_id=MODEL, min_score=0.0))
        except InputError as error:
            out[name] = {"refused": str(error)}
            print(name, "refused:", error, flush=True)
            continue
        dets = detections_of(name, result)
        read = read_nodules(case)
        truth = [r for r in read if r.readers >= level]
        refs = [ReferenceNodule(name, tuple(r.center_lps), max(r.mean_diameter_mm, 6.0), n + 1,
                                ignore=r.readers < level) for n, r in enumerate(read)]
        reference_labels = np.zeros(ct.shape, np.uint16)
        for n, r in enumerate(read):
            if r.readers >= level:
                reference_labels[r.agreement(level) & (reference_labels == 0)] = n + 1
        matching = match_detections(dets, refs)
        pairs = {n + 1: dets[d].label for n, d in matching.detection_of.items()}
        overlap = nodule_overlaps(result.labelmap.array, reference_labels, pairs)
        table = {r["label"]: r for r in next(t for t in result.tables if t.name == "nodules").rows()}
        ranked = sorted(table, key=lambda k: -table[k]["score"])
        row = {"consensus_nodules": len(truth), "detections": len(dets)}
        for threshold in (0.5, 0.3):
            kept = [d for d in dets if d.score >= threshold]
            m = match_detections(kept, refs)
            row[f"found@{threshold}"] = sum(1 for n in m.detection_of if not refs[n].ignore)
            row[f"fps@{threshold}"] = m.outcome.count("fp")
        print(f"{name}: {len(truth)} nodule(s) >= {level} readers; {row['found@0.5']} found at score 0.5 with "
              f"{row['fps@0.5']} FP, {row['found@0.3']} at 0.3 with {row['fps@0.3']} FP ({len(dets)} detections)")
        for n, r in enumerate(read):
            d = matching.detection_of.get(n) if r.readers >= level else _best_hit(dets, refs[n])
            found = table[dets[d].label] if d is not None else None
            info = {"readers": r.readers, "readers_diameters_mm": [round(float(v), 2) for v in r.diameters_mm],
                    "readers_mean_diameter_mm": round(r.mean_diameter_mm, 2), "found": found is not None}
            if found is not None:
                info.update(mean_diameter_mm=found["mean_diameter_mm"],
                            diameter_error_mm=round(found["mean_diameter_mm"] - r.mean_diameter_mm, 2),
                            score=found["score"], rank=ranked.index(found["label"]) + 1)
            if r.readers >= level and found is not None:
                info.update(dice=round(overlap[n + 1]["dice"], 3), iou=round(overlap[n + 1]["iou"], 3))
            elif found is not None:  # not counted, but shown: Dice against the voxels any of its readers outlined
                any_reader = nodule_overlaps(result.labelmap.array, r.agreement(1).view(np.uint8), {1: found["label"]})
                info.update(dice_any_reader=round(any_reader[1]["dice"], 3))
            row[f"nodule{n + 1}"] = info
            tag = f">= {level} readers" if r.readers >= level else f"{r.readers} reader(s), not counted"
            if found is None:
                print(f"  nodule {n + 1} ({tag}): not found; readers' mean diameter {r.mean_diameter_mm:.1f} mm")
                continue
            print(f"  nodule {n + 1} ({tag}): rank {info['rank']}, score {found['score']:.2f}, mean diameter "
                  f"{found['mean_diameter_mm']:.1f} mm vs readers' mean {r.mean_diameter_mm:.1f} mm "
                  f"({info['diameter_error_mm']:+.1f}; readers {', '.join(f'{v:.1f}' for v in r.diameters_mm)})"
                  + (f", Dice {info['dice']:.3f} / IoU {info['iou']:.3f} vs >= {level} readers" if "dice" in info
                     else f", Dice {info['dice_any_reader']:.3f} vs any reader"))
        out[name] = row
        print(name, json.dumps(row), flush=True)
    return out


def _best_hit(dets: list[Detection], nodule: ReferenceNodule) -> int | None:
    """The best-scoring detection within ``nodule``'s radius (for a nodule too few readers marked to be matched)."""
    hits = [d for d, det in enumerate(dets)
            if np.linalg.norm(np.subtract(det.center_lps, nodule.center_lps)) <= nodule.diameter_mm / 2]
    return max(hits, key=lambda d: dets[d].score, default=None)


# --- speed and memory on the full grid --------------------------------------------------------------------------
def bench_speed(seed: int = 1234) -> dict:
    """Generates the full phantom here, runs ``clinseg nodule`` in a child: its wall time and peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        from clinseg.io import write_volume

        ph = generate_chest(seed)
        path = Path(tmp) / "ct.nii.gz"
        write_volume(ph.ct, path)
        del ph
        cmd = [sys.executable, "-m", "clinseg", "nodule", str(path), "-o", str(Path(tmp) / "out"), "--no-preview",
               "--engine", ENGINE] + (["--model", MODEL] if MODEL else [])
        t = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2
        summary = json.loads((Path(tmp) / "out" / "summary.json").read_text()) if done.returncode == 0 else {}
    out = {"seconds": round(seconds, 1), "peak_rss_gb": round(peak_gb, 2), "rc": done.returncode,
           "timings_s": summary.get("metrics", {}).get("timings_s"), "count": summary.get("metrics", {}).get("count")}
    if done.returncode:
        out["stderr"] = done.stderr[-500:]
    print("speed 512x512x300:", json.dumps(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "phantoms", "lidc", "speed"], default="all")
    parser.add_argument("--fit", action="store_true", help="refit the false-positive score on the training seeds")
    parser.add_argument("--seeds", type=int, nargs="*", help="held-out seeds (default HELD_OUT_SEEDS)")
    parser.add_argument("--logistic", action="store_true", help="score with the logistic fallback, not the network")
    parser.add_argument("--model", help="an installed nodule model (reducer or NoduleNet) instead of the default")
    args = parser.parse_args()
    global ENGINE, MODEL
    if args.logistic:
        ENGINE = "classical"
    if args.model:
        ENGINE, MODEL = "model", args.model
    if args.fit:
        fit()
        return
    if args.part in ("all", "phantoms"):
        if not same_phantoms.pinned():
            print("note: OpenBLAS's kernels are not pinned (no AVX2, another BLAS, or OPENBLAS_CORETYPE set): the "
                  "phantoms may differ from those of the documented figures", file=sys.stderr)
        bench_phantoms(tuple(args.seeds) if args.seeds else HELD_OUT_SEEDS)
    if args.part in ("all", "lidc") and LIDC is not None and LIDC.is_dir():
        bench_lidc()
    if args.part in ("all", "speed"):
        bench_speed()


if __name__ == "__main__":
    main()
