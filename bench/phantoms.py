"""Benchmark: generation time and peak memory of the phantoms of every task.

    .venv/bin/python bench/phantoms.py [--task all|chest|headneck|brain] [--preset full] [--seed 1]
                                       [--from-airway MASK]

Each task runs in its own fresh process, so its peak RSS is its own. Defaults are
the full presets: chest 512x512x300 at 0.7x0.7x1.0 mm (target: under 60 s), head &
neck vertex to C7 at 1x1x2.5 mm, brain whole head at 1 mm isotropic with all five
contrasts. The chest also gets one row per generation stage. The machine's load
average is printed with the figures, since a shared machine slows every stage.
"""

from __future__ import annotations

import same_phantoms  # noqa: F401  (first: pins OpenBLAS's kernels before numpy loads)

# isort: split
import argparse
import multiprocessing
import os
import resource
import time

HEADNECK_SPACING = (1.0, 1.0, 2.5)
BRAIN_SPACING = (1.0, 1.0, 1.0)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _chest(preset: str, seed: int, from_airway: str | None) -> dict:
    from clinseg.phantoms import generate_chest, generate_chest_from_airway

    if from_airway:
        from clinseg.io import read_volume

        mask = read_volume(from_airway)
        label = f"from-airway {os.path.basename(from_airway)}"
        start = time.perf_counter()
        ph = generate_chest_from_airway(mask, seed)
    else:
        label = f"preset {preset}"
        start = time.perf_counter()
        ph = generate_chest(seed, preset=preset)
    seconds = time.perf_counter() - start
    return {"task": "chest", "label": label, "grid": ph.ct.size_ijk, "spacing": ph.ct.spacing, "seconds": seconds,
            "peak_mb": _peak_mb(), "stages": ph.info["stages"],
            "facts": f"branches {len(ph.branches)}, max generation "
                     f"{max((b.generation for b in ph.branches), default=0)}, nodules {len(ph.nodules)}, "
                     f"airway voxels {int(ph.airway.array.sum())}"}


def _headneck(preset: str, seed: int) -> dict:
    from clinseg.phantoms.headneck import generate_headneck

    preset = "full" if preset not in ("small", "full") else preset
    start = time.perf_counter()
    ph = generate_headneck(seed, HEADNECK_SPACING, preset)
    seconds = time.perf_counter() - start
    voxel_ml = float(ph.ct.spacing[0] * ph.ct.spacing[1] * ph.ct.spacing[2]) / 1000
    gtv = 0.0 if ph.gtv is None else float(ph.gtv.array.sum()) * voxel_ml
    ctv = 0.0 if ph.ctv is None else float(ph.ctv.array.sum()) * voxel_ml
    return {"task": "headneck", "label": f"preset {preset}", "grid": ph.ct.size_ijk, "spacing": ph.ct.spacing,
            "seconds": seconds, "peak_mb": _peak_mb(),
            "facts": f"organs {len(ph.organs)}, GTV {gtv:.1f} ml, CTV {ctv:.1f} ml"}


def _brain(preset: str, seed: int) -> dict:
    from clinseg.phantoms.brain import generate_brain

    preset = "full" if preset not in ("small", "full") else preset
    start = time.perf_counter()
    ph = generate_brain(seed, BRAIN_SPACING, preset)
    seconds = time.perf_counter() - start
    return {"task": "brain", "label": f"preset {preset}, {len(ph.images)} contrasts", "grid": ph.lesion.size_ijk,
            "spacing": ph.lesion.spacing, "seconds": seconds, "peak_mb": _peak_mb(),
            "facts": f"lesion {ph.lesion_kind} {ph.stage} {ph.side}, {ph.lesion_volume_ml:.1f} ml"}


def _child(task: str, args: argparse.Namespace, queue) -> None:
    if task == "chest":
        queue.put(_chest(args.preset, args.seed, args.from_airway))
    elif task == "headneck":
        queue.put(_headneck(args.preset, args.seed))
    else:
        queue.put(_brain(args.preset, args.seed))


def _run_isolated(task: str, args: argparse.Namespace) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(task, args, queue))
    proc.start()
    row = queue.get()
    proc.join()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="all", choices=["all", "chest", "headneck", "brain"])
    parser.add_argument("--preset", default="full", choices=["small", "demo", "full"],
                        help="chest preset; head & neck and brain use full unless small is asked")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--from-airway", default=None, help="chest: build around this airway mask instead")
    args = parser.parse_args()

    tasks = ["chest", "headneck", "brain"] if args.task == "all" else [args.task]
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start, seed {args.seed}")
    rows = []
    for task in tasks:
        row = _run_isolated(task, args)
        rows.append(row)
        if task == "chest":
            print(f"\nchest stages ({row['label']}):")
            print(f"  {'stage':<20}{'seconds':>9}{'peak RSS MB':>13}")
            for stage in row["stages"]:
                print(f"  {stage['stage']:<20}{stage['seconds']:>9.2f}{stage['peak_rss_mb']:>13.0f}")
    print(f"\n{'task':<10}{'grid (i,j,k)':<18}{'spacing mm':<18}{'seconds':>9}{'peak RSS MB':>13}  facts")
    for row in rows:
        grid = "x".join(str(n) for n in row["grid"])
        spacing = "x".join(f"{s:g}" for s in row["spacing"])
        print(f"{row['task']:<10}{grid:<18}{spacing:<18}{row['seconds']:>9.2f}{row['peak_mb']:>13.0f}  {row['facts']}")
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
