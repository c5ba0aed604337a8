"""NoduleSeg benchmark: held-out phantoms (FROC, CPM, per-nodule Dice by type and size), the real LIDC
slabs (reader consensus >= 3 as truth), and speed + peak memory on a full-size 512x512x300 phantom.

Run: ``.venv/bin/python bench/nodule.py`` (all parts) or ``--part phantoms|lidc|speed``; ``--fit`` refits the
classical engine's false-positive score on the training seeds (``TRAIN_SEEDS``) and prints the constants
to paste into ``clinseg/tasks/nodule/features.py``. Training and held-out seeds never overlap.
"""

from __future__ import annotations

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
from clinseg.metrics.detection import Detection, ReferenceNodule, evaluate_detections, match_detections
from clinseg.phantoms.chest import generate_chest
from clinseg.preprocess import fill_ct_padding
from clinseg.tasks.nodule import NoduleOptions, run_nodule
from clinseg.tasks.nodule.classical import find_nodules
from clinseg.tasks.nodule.features import FEATURES

TRAIN_SEEDS = tuple(range(100, 108))
HELD_OUT_SEEDS = tuple(range(200, 210))
N_NODULES, N_DISTRACTORS = 8, 6
LIDC = Path("/work/shared/data/lidc")


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
        result = run_nodule(ph.ct, NoduleOptions(engine="classical", min_score=0.0))
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
def bench_lidc(folder: Path = LIDC, level: int = 3) -> dict:
    from clinseg.datasets.lidc import group_nodules, nodule_mask, read_lidc_case
    from clinseg.post.nodules import measure_nodules

    out = {}
    for case_dir in sorted(p for p in folder.glob("LIDC-IDRI-*") if p.is_dir()):
        case = read_lidc_case(case_dir)
        ct = case.ct
        try:
            result = run_nodule(ct, NoduleOptions(engine="classical", min_score=0.0))
        except InputError as error:  # e.g. a 15 mm slab holds less lung than the chest-mask check asks for
            out[case_dir.name] = {"refused": str(error)}
            print(case_dir.name, "refused:", error, flush=True)
            continue
        dets = detections_of(case_dir.name, result)
        truth = []
        pixel = float(ct.spacing[0])
        for group in group_nodules(case.reading.nodules, pixel_mm=pixel):
            if len({n.reader for n in group}) < level:
                continue
            diameters, centres = [], []
            for n in group:
                mask = ct.with_array(nodule_mask(n, ct).astype(np.uint8), "reader")
                m = measure_nodules(mask)[0]
                diameters.append(m.axes.mean_mm)
                centres.append(m.center_lps)
            truth.append((np.mean(centres, axis=0), float(np.mean(diameters)), float(np.max(diameters))))
        refs = [ReferenceNodule(case_dir.name, tuple(c), max(d, 6.0)) for c, d, _ in truth]
        row = {"nodules": len(refs), "detections": len(dets)}
        for threshold in (0.5, 0.3):
            kept = [d for d in dets if d.score >= threshold]
            m = match_detections(kept, refs) if refs else None
            row[f"found@{threshold}"] = len(m.detection_of) if m else 0
            row[f"fps@{threshold}"] = (m.outcome.count("fp") if m else len(kept))
        table = {r["label"]: r for r in next(t for t in result.tables if t.name == "nodules").rows()}
        if refs:
            m = match_detections(dets, refs)
            for n, d in m.detection_of.items():
                r = table[dets[d].label]
                row[f"nodule{n + 1}"] = {"readers_mean_diameter_mm": round(truth[n][1], 2),
                                         "found_mean_diameter_mm": r["mean_diameter_mm"], "score": r["score"],
                                         "rank": sorted(table, key=lambda k: -table[k]["score"]).index(r["label"]) + 1}
        out[case_dir.name] = row
        print(case_dir.name, json.dumps(row), flush=True)
    return out


# --- speed and memory on the full grid --------------------------------------------------------------------------
def bench_speed(seed: int = 1234) -> dict:
    """Generates the full phantom here, runs ``clinseg nodule`` in a child: its wall time and peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        from clinseg.io import write_volume

        ph = generate_chest(seed)
        path = Path(tmp) / "ct.nii.gz"
        write_volume(path, ph.ct)
        del ph
        cmd = [sys.executable, "-m", "clinseg", "nodule", str(path), "-o", str(Path(tmp) / "out"), "--no-preview",
               "--engine", "classical"]
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
    args = parser.parse_args()
    if args.fit:
        fit()
        return
    if args.part in ("all", "phantoms"):
        bench_phantoms(tuple(args.seeds) if args.seeds else HELD_OUT_SEEDS)
    if args.part in ("all", "lidc") and LIDC.is_dir():
        bench_lidc()
    if args.part in ("all", "speed"):
        bench_speed()


if __name__ == "__main__":
    main()
