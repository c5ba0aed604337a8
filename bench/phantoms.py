"""Benchmark: time and peak memory of each stage of a chest phantom.

    .venv/bin/python bench/phantoms.py [--preset full] [--seed 1] [--from-airway MASK]

Prints one row per stage (seconds, peak RSS so far) and the total; the default
is the full preset, 512x512x300 at 0.7x0.7x1.0 mm.
"""

from __future__ import annotations

import argparse
import os
import resource
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="full", choices=["small", "demo", "full"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--from-airway", default=None)
    args = parser.parse_args()

    from clinseg.phantoms import generate_chest, generate_chest_from_airway

    start = time.perf_counter()
    if args.from_airway:
        from clinseg.io import read_volume

        mask = read_volume(args.from_airway)
        label = f"from-airway {os.path.basename(args.from_airway)} {mask.size_ijk} @ {mask.spacing}"
        start = time.perf_counter()
        ph = generate_chest_from_airway(mask, args.seed)
    else:
        ph = generate_chest(args.seed, preset=args.preset)
        label = f"preset {args.preset}"
    total = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"chest phantom, {label}: grid {ph.ct.size_ijk} @ {ph.ct.spacing} mm, seed {args.seed}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'stage':<20}{'seconds':>9}{'peak RSS MB':>13}")
    for row in ph.info["stages"]:
        print(f"{row['stage']:<20}{row['seconds']:>9.2f}{row['peak_rss_mb']:>13.0f}")
    print(f"{'total':<20}{total:>9.2f}{peak:>13.0f}")
    print(f"branches {len(ph.branches)}, max generation {max((b.generation for b in ph.branches), default=0)}, "
          f"nodules {len(ph.nodules)}, airway voxels {int(ph.airway.array.sum())}")


if __name__ == "__main__":
    main()
