"""The learned CTV (``ctv-unet-phantom``) on held-out head & neck phantoms, next to the margin tool; time, memory.

Usage: .venv/bin/python bench/ctv.py [--model ID] [--limit N] [--set all|procedural|masks] [--json out.json]
       .venv/bin/python bench/ctv.py --merge a.json b.json [--json out.json]   (figures of parts run apart)

Held-out cases (``clinseg.train.ctv.heldout_phantoms``): procedural phantoms of seeds the training never saw, built
at 1 x 1 x 2.5 mm, and phantoms around the oncologist masks of the ``hn_oar_masks`` validation split (training used
the test split). Per case: Dice of the learned CTV (CT only, ``predict_ctv`` on the phantom's native grid) against
the phantom's exact CTV, and Dice of the margin tool (``ctv_from_gtv``, 8 mm as the phantoms) given the phantom's
TRUE GTV: the tool's figure is what a user who drew a perfect GTV gets. Printed: per-case and mean Dice, seconds
per case of the learned CTV, the process's peak resident memory. ``--json`` is rewritten after every case.
"""

from __future__ import annotations

import same_phantoms  # noqa: F401  (first: pins OpenBLAS's kernels before numpy loads)

# isort: split
import argparse
import itertools
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from clinseg.datasets.hn_oar import dice
from clinseg.post.margin import ctv_from_gtv
from clinseg.shared import shared_dir
from clinseg.tasks.oar.ctv import DEFAULT_CTV_MODEL, predict_ctv
from clinseg.train.ctv import heldout_phantoms


def _mean(rows: list[dict], key: str, kind: str | None = None) -> float:
    values = [r[key] for r in rows if kind is None or r["kind"] == kind]
    return round(float(np.mean(values)), 3) if values else float("nan")


def figures_of(rows: list[dict], peak_gib: float) -> dict:
    return {"heldout_cases": len(rows), "heldout_dice_mean": _mean(rows, "dice"),
            "heldout_dice_median": round(float(np.median([r["dice"] for r in rows])), 3),
            "heldout_dice_min": min(r["dice"] for r in rows),
            "heldout_dice_procedural": _mean(rows, "dice", "procedural"),
            "heldout_dice_masks": _mean(rows, "dice", "masks"),
            "margin_tool_dice_mean": _mean(rows, "margin_tool_dice"),
            "gtv_found": sum(r["gtv_found"] for r in rows),
            "seconds_per_case": _mean(rows, "seconds"), "peak_rss_gib": round(peak_gib, 2),
            "threads": 1, "cases": rows}


def report(figures: dict) -> None:
    print(f"mean Dice learned {figures['heldout_dice_mean']:.3f} (procedural {figures['heldout_dice_procedural']}, "
          f"masks {figures['heldout_dice_masks']}), margin tool with the true GTV "
          f"{figures['margin_tool_dice_mean']:.3f}; {figures['gtv_found']}/{figures['heldout_cases']} GTVs touched; "
          f"{figures['seconds_per_case']:.1f} s per case, peak RSS {figures['peak_rss_gib']:.2f} GiB (1 thread)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_CTV_MODEL)
    parser.add_argument("--limit", type=int, help="at most N cases")
    parser.add_argument("--set", choices=("all", "procedural", "masks"), default="all",
                        help="procedural phantoms, phantoms around the validation masks, or both")
    parser.add_argument("--merge", type=Path, nargs="+", help="combine the --json outputs of parts (no run)")
    parser.add_argument("--shared", type=Path, help="the shared folder holding data/hn_oar_masks")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.merge:
        parts = [json.loads(path.read_text()) for path in args.merge]
        figures = figures_of([r for part in parts for r in part["cases"]], max(p["peak_rss_gib"] for p in parts))
        report(figures)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        return
    torch.set_num_threads(1)
    root = (args.shared or shared_dir() or Path("../shared")) / "data" / "hn_oar_masks"
    if args.set == "procedural":
        root = None
    if root is not None and not root.is_dir():
        print(f"no {root}: procedural phantoms only", file=sys.stderr)
        root = None
    rows = []
    print(f"{'case':>24} {'learned':>8} {'margin':>7} {'seconds':>8}")
    for name, ph in itertools.islice(heldout_phantoms(root, procedural=args.set != "masks"), args.limit):
        started = time.perf_counter()
        pred = predict_ctv(ph.ct, args.model, "cpu").array > 0
        seconds = time.perf_counter() - started
        truth = ph.ctv.array > 0
        grown = ctv_from_gtv(ph.gtv, ph.ct, 8.0).array > 0
        rows.append({"case": name, "kind": "procedural" if name.startswith("phantom") else "masks",
                     "dice": round(dice(pred, truth), 3), "margin_tool_dice": round(dice(grown, truth), 3),
                     "gtv_found": bool((pred & (ph.gtv.array > 0)).any()), "seconds": round(seconds, 1),
                     "grid": list(ph.ct.shape)})
        r = rows[-1]
        print(f"{name:>24} {r['dice']:>8.3f} {r['margin_tool_dice']:>7.3f} {seconds:>8.1f}", flush=True)
        figures = figures_of(rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if not rows:
        raise SystemExit("no held-out cases")
    report(figures)


if __name__ == "__main__":
    main()
