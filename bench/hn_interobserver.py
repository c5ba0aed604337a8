"""Inter-observer agreement of the real head & neck OAR masks: the ceiling an OAR model is compared with.

Usage: .venv/bin/python bench/hn_interobserver.py [--shared DIR] [--tolerance 2] [--limit N] [--csv out.csv]

For every scan of ``hn_oar_masks`` and every organ both annotators have a file for, the radiographer's mask is
scored against the oncologist's (the arbitrated one, taken as reference) with ``clinseg.metrics.organs``:
Dice, HD95 (pooled, mm) and surface Dice at the tolerance. Printed: per organ the mean (sd) over scans, the number
of scans, and how many scans had the organ drawn by one annotator only (HD95 inf there, left out of its mean).
Organs are loaded one at a time (a scan holds ~21 full-size masks per annotator).
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from clinseg.datasets.hn_oar import read_hn_oar
from clinseg.metrics.organs import organ_table
from clinseg.shared import shared_dir

REFERENCE, OBSERVER = "oncologist", "radiographer"


def scan_rows(case, tolerance: float) -> list[dict]:
    """One row per organ of one scan (organs empty for both annotators are skipped by organ_table)."""
    rows = []
    for organ in sorted(set(case.organs(REFERENCE)) & set(case.organs(OBSERVER))):
        table = organ_table(case.load(OBSERVER, [organ]), case.load(REFERENCE, [organ]), tolerance_mm=tolerance)
        rows += [dict(r, scan=case.name) for r in table.rows() if r["organ"] != "mean"]
    return rows


def summarise(rows: list[dict], sdice: str) -> list[dict]:
    by_organ: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_organ[r["organ"]].append(r)
    out = []
    for organ in sorted(by_organ):
        entry = {"organ": organ, "n": len(by_organ[organ])}
        for key in ("dice", "hd95_mm", sdice):
            values = np.array([r[key] for r in by_organ[organ]], float)
            finite = values[np.isfinite(values)]
            entry[key] = (float(finite.mean()), float(finite.std())) if finite.size else (float("nan"),) * 2
        entry["one_sided"] = int(sum(not np.isfinite(r["hd95_mm"]) for r in by_organ[organ]))
        out.append(entry)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=None, help="the shared folder (default: ../shared)")
    parser.add_argument("--tolerance", type=float, default=2.0, help="surface Dice tolerance in mm")
    parser.add_argument("--limit", type=int, default=None, help="only the first N scans")
    parser.add_argument("--csv", type=Path, default=None, help="also write every per-scan, per-organ row here")
    args = parser.parse_args()
    root = (args.shared or shared_dir() or Path("../shared")) / "data" / "hn_oar_masks"
    cases = read_hn_oar(root)[: args.limit]
    sdice = f"surface_dice_{args.tolerance:g}mm"
    rows: list[dict] = []
    t0 = time.perf_counter()
    for case in cases:
        rows += scan_rows(case, args.tolerance)
    elapsed = time.perf_counter() - t0
    if args.csv:
        with open(args.csv, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=["scan", *(k for k in rows[0] if k != "scan")])
            writer.writeheader()
            writer.writerows(rows)
    summary = summarise(rows, sdice)
    print(f"{OBSERVER} vs {REFERENCE}: {len(cases)} scans, {len(rows)} organ pairs, {elapsed:.0f} s")
    print(f"{'organ':<16}{'n':>4}{'Dice':>15}{'HD95 mm':>16}{'SDice@' + f'{args.tolerance:g}mm':>16}{'1-sided':>9}")
    for e in summary:
        cells = "".join(f"{e[k][0]:>9.3f} ({e[k][1]:.2f})" for k in ("dice", "hd95_mm", sdice))
        print(f"{e['organ']:<16}{e['n']:>4}{cells}{e['one_sided']:>9}")
    means = {k: np.nanmean([e[k][0] for e in summary]) for k in ("dice", "hd95_mm", sdice)}
    print(f"{'mean of organs':<20}" + "".join(f"{means[k]:>9.3f}{'':7}" for k in ("dice", "hd95_mm", sdice)))


if __name__ == "__main__":
    main()
