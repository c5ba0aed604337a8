"""OARSeg on held-out head & neck phantoms, next to the inter-observer agreement of the real masks; speed and memory.

Usage: .venv/bin/python bench/oar.py [--model ID] [--limit N] [--no-interobserver] [--speed] [--json out.json]

Held-out cases: phantoms built (seed 1000 + index) around the oncologist masks of the *validation* split of
``hn_oar_masks``; the shipped model was trained on the test split only. The whole ``run_oar`` pipeline runs at the
phantom's native grid (~1 x 1 x 2.5 mm) and each organ is scored against the phantom's exact labels with
``clinseg.tasks.oar.organs.score_organs`` (Dice, pooled HD95, surface Dice at 2 mm), containers at their full
extent on both sides as the real masks draw them (spinal canal with the cord, eyes with the lenses). Beside it:
radiographer-vs-oncologist agreement on the same scans (``bench/hn_interobserver.py``, full real masks).
An organ is scored on the scans whose reference has it, as the inter-observer column (organs both annotators
drew) and the DeepMind H&N study do; an organ predicted on a scan whose reference lacks it is listed apart
("predicted without a reference"), with its volume, rather than averaged in as a Dice of 0.
``--speed``: one 512 x 512 x 200 H&N CT (a full-preset phantom padded with air to a 500 mm field of view), wall
time and the process's peak resident memory.
"""

from __future__ import annotations

import same_phantoms  # noqa: F401  (first: pins OpenBLAS's kernels before numpy loads)

# isort: split
import argparse
import json
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from clinseg.datasets.hn_oar import crop_to_organs, read_hn_oar
from clinseg.phantoms.headneck import generate_headneck, generate_headneck_from_masks
from clinseg.shared import shared_dir
from clinseg.tasks.oar import OarOptions, run_oar
from clinseg.tasks.oar.organs import score_organs
from clinseg.terminology import HN_ORGANS
from clinseg.volume import Volume


def heldout_rows(model: str, limit: int | None, root: Path) -> tuple[list[dict], list[float], list[dict]]:
    """(rows of the organs each reference has, seconds per case, organs predicted where the reference has none)."""
    rows, seconds, unreferenced = [], [], []
    for index, case in enumerate(read_hn_oar(root, ("validation",))[:limit]):
        ph = generate_headneck_from_masks(crop_to_organs(case.load("oncologist"), 30.0), 1000 + index)
        started = time.perf_counter()
        result = run_oar(ph.ct, OarOptions(model_id=model))
        seconds.append(time.perf_counter() - started)
        table = score_organs(result.labelmap, result.segments, ph.labels)
        scored = [dict(r, scan=case.name) for r in table.rows() if r["organ"] != "mean"]
        rows += [r for r in scored if r["volume_ref_ml"] > 0]
        unreferenced += [{"scan": case.name, "organ": r["organ"], "volume_pred_ml": round(r["volume_pred_ml"], 2)}
                         for r in scored if r["volume_ref_ml"] == 0]
        print(f"{case.name}: {seconds[-1]:.1f} s, mean Dice {table.rows()[-1]['dice']:.3f} (every organ)", flush=True)
    return rows, seconds, unreferenced


def per_organ(rows: list[dict], keys: tuple[str, ...]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["organ"]].append(r)
    out = {}
    for organ, items in groups.items():
        entry = {"n": len(items)}
        for key in keys:
            values = np.array([r[key] for r in items], float)
            finite = values[np.isfinite(values)]
            entry[key] = float(finite.mean()) if finite.size else float("nan")
        out[organ] = entry
    return out


def interobserver(root: Path, limit: int | None, tolerance: float) -> dict[str, dict[str, float]]:
    sys.path.insert(0, str(Path(__file__).parent))
    from hn_interobserver import scan_rows  # the same per-organ rows as that bench prints

    rows = []
    for case in read_hn_oar(root, ("validation",))[:limit]:
        rows += scan_rows(case, tolerance)
    named = [dict(r, organ=_our_name(r["organ"])) for r in rows]
    return per_organ(named, ("dice", "hd95_mm", f"surface_dice_{tolerance:g}mm"))


def _our_name(name: str) -> str:
    from clinseg.phantoms.hn_anatomy import canonical_organ_name

    return canonical_organ_name(name) or name


def speed(model: str) -> dict:
    ph = generate_headneck(7, spacing=(0.98, 0.98, 2.0), preset="full", with_tumour=False)
    shape = (200, 512, 512)
    array = np.full(shape, -1000, np.int16)
    k, j, i = (min(a, b) for a, b in zip(ph.ct.shape, shape)), None, None
    src = tuple(slice(0, min(a, b)) for a, b in zip(ph.ct.shape, shape))
    off = [(b - (s.stop - s.start)) // 2 for b, s in zip(shape, src)]
    dst = tuple(slice(o, o + s.stop - s.start) for o, s in zip(off, src))
    array[dst] = ph.ct.array[src]
    origin = ph.ct.index_to_physical(np.array([-off[2], -off[1], -off[0]], float))
    ct = Volume(array, ph.ct.spacing, tuple(origin), np.eye(3), "speed")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    started = time.perf_counter()
    result = run_oar(ct, OarOptions(model_id=model))
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    del k, j, i
    return {"grid": list(ct.size_ijk), "seconds": round(wall, 1), "peak_rss_gib": round(peak, 2),
            "rss_before_gib": round(before, 2), "timings_s": result.metrics["timings_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="oar-unet-phantom")
    parser.add_argument("--shared", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--tolerance", type=float, default=2.0)
    parser.add_argument("--no-interobserver", action="store_true")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    root = (args.shared or shared_dir() or Path("../shared")) / "data" / "hn_oar_masks"
    sdice = f"surface_dice_{args.tolerance:g}mm"
    keys = ("dice", "hd95_mm", sdice)
    rows, seconds, unreferenced = heldout_rows(args.model, args.limit, root)
    ours = per_organ(rows, keys)
    ref = {} if args.no_interobserver else interobserver(root, args.limit, args.tolerance)
    print(f"{args.model} on {len(seconds)} held-out phantoms ({np.mean(seconds):.1f} s each); inter-observer on the "
          "same scans")
    print(f"{'organ':<16}{'Dice':>7}{'HD95':>8}{'SD@2':>7}   |{'obs Dice':>9}{'HD95':>8}{'SD@2':>7}")
    for organ in [s.name for s in HN_ORGANS if s.name in ours]:
        o, r = ours[organ], ref.get(organ, {})
        print(f"{organ:<16}{o['dice']:>7.3f}{o['hd95_mm']:>8.1f}{o[sdice]:>7.3f}   |"
              + (f"{r['dice']:>9.3f}{r['hd95_mm']:>8.1f}{r[sdice]:>7.3f}" if r else f"{'-':>9}"))
    mean = {k: float(np.nanmean([o[k] for o in ours.values()])) for k in keys}
    ref_mean = {k: float(np.nanmean([o[k] for o in ref.values()])) for k in keys} if ref else {}
    print(f"{'mean of organs':<16}{mean['dice']:>7.3f}{mean['hd95_mm']:>8.1f}{mean[sdice]:>7.3f}   |"
          + (f"{ref_mean['dice']:>9.3f}{ref_mean['hd95_mm']:>8.1f}{ref_mean[sdice]:>7.3f}" if ref else ""))
    for r in unreferenced:
        print(f"predicted without a reference: {r['organ']} on {r['scan']} ({r['volume_pred_ml']} ml)")
    report = {"model": args.model, "cases": len(seconds), "seconds_per_case": float(np.mean(seconds)),
              "per_organ": ours, "mean": mean, "interobserver": ref, "interobserver_mean": ref_mean,
              "predicted_without_reference": unreferenced, "rows": rows}
    if args.speed:
        report["speed"] = speed(args.model)
        print(f"512x512x200: {report['speed']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
