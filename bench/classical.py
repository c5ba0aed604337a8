"""The weight-free airway engine on held-out chest phantoms: DSC, precision, TD, BD and time.

Usage: .venv/bin/python bench/classical.py [--seeds 1000-1010] [--spacings 0.6 1.0 1.5] [--full]

Each phantom is generated afresh (seeds 1000-1010 are never used for tuning), on the
"demo" field of view at each isotropic spacing; the whole pipeline runs
(``run_airway`` with the classical engine: masks, trachea, engine, largest component,
hole filling, tree). ``--full`` also times one 512x512x300 phantom ("full" preset).
Time is the pipeline's wall time on this machine; the metrics are ATM'22's.
"""

from __future__ import annotations

import same_phantoms  # noqa: F401  (first: pins OpenBLAS's kernels before numpy loads)

# isort: split
import argparse
import time

import numpy as np

from clinseg.metrics.airway import airway_metrics
from clinseg.phantoms import generate_chest
from clinseg.tasks.airway import AirwayOptions, run_airway

COLUMNS = ("dice", "precision", "sensitivity", "td", "bd")


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def evaluate(seed: int, preset: str, spacing: float | None) -> dict:
    ph = generate_chest(seed, preset=preset, spacing=None if spacing is None else (spacing,) * 3)
    start = time.perf_counter()
    result = run_airway(ph.ct, AirwayOptions(engine="classical"))
    seconds = time.perf_counter() - start
    m = airway_metrics(result.labelmap.array, ph.airway.array, ph.ct.spacing)
    lungs = np.count_nonzero(ph.lungs.array)
    return {**{k: m[k] for k in COLUMNS}, "seconds": seconds, "shape": ph.ct.shape,
            "lung_share": float(np.count_nonzero(result.labelmap.array) / max(lungs, 1)),
            "loops": result.metrics["tree"]["loops_broken"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1000-1010")
    parser.add_argument("--spacings", type=float, nargs="+", default=[0.6, 1.0, 1.5])
    parser.add_argument("--full", action="store_true", help="also time one 512x512x300 phantom")
    args = parser.parse_args()

    header = f"{'seed':>5} {'mm':>4} {'shape':>15} " + " ".join(f"{c[:5]:>6}" for c in COLUMNS)
    print(header + f" {'lung%':>6} {'loops':>5} {'time s':>7}")
    per_spacing: dict[float, list[dict]] = {}
    for spacing in args.spacings:
        for seed in parse_seeds(args.seeds):
            row = evaluate(seed, "demo", spacing)
            per_spacing.setdefault(spacing, []).append(row)
            print(f"{seed:>5} {spacing:>4.1f} {str(row['shape']):>15} " + " ".join(f"{row[c]:6.3f}" for c in COLUMNS)
                  + f" {100 * row['lung_share']:6.2f} {row['loops']:5d} {row['seconds']:7.1f}", flush=True)
    print("mean per spacing:")
    everything = []
    for spacing, rows in per_spacing.items():
        everything += rows
        print(f"{'':>5} {spacing:>4.1f} {'':>15} " + " ".join(f"{np.mean([r[c] for r in rows]):6.3f}" for c in COLUMNS)
              + f" {'':>6} {'':>5} {np.mean([r['seconds'] for r in rows]):7.1f}")
    print(f"{'all':>5} {'':>4} {'':>15} " + " ".join(f"{np.mean([r[c] for r in everything]):6.3f}" for c in COLUMNS)
          + f"   min precision {min(r['precision'] for r in everything):.3f}")
    if args.full:
        row = evaluate(int(parse_seeds(args.seeds)[0]), "full", None)
        print(f"full preset {row['shape']}: " + " ".join(f"{c}={row[c]:.3f}" for c in COLUMNS)
              + f"  pipeline {row['seconds']:.1f} s")


if __name__ == "__main__":
    main()
