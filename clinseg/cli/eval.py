"""``clinseg eval airway PRED GT``: ATM'22 metrics of a predicted airway mask, or of two folders of them."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import InputError

METRICS = ("dice", "precision", "sensitivity", "fpr", "fnr", "td", "bd")


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate segmentations against ground truth")
    tasks = p.add_subparsers(dest="eval_task", required=True)
    a = tasks.add_parser(
        "airway",
        help="ATM'22 airway metrics (DSC, precision, sensitivity, FPR, FNR, TD, BD)",
        description="PRED and GT are two mask files, or two folders: every GT file name found in both is evaluated "
        "and the mean/std over cases is reported.",
    )
    a.add_argument("pred", help="predicted airway mask (file or folder)")
    a.add_argument("gt", help="ground-truth airway mask (file or folder)")
    a.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    a.set_defaults(func=run_airway)


def _pairs(pred: Path, gt: Path) -> list[tuple[str, Path, Path]]:
    from ..io import IMAGE_SUFFIXES

    for path in (pred, gt):
        if not path.exists():
            raise InputError(str(path), "not found")
    if pred.is_dir() != gt.is_dir():
        raise InputError(str(pred), "PRED and GT must both be files or both be folders")
    if not pred.is_dir():
        return [(gt.name, pred, gt)]
    names = sorted(p.name for p in gt.iterdir() if p.is_file() and any(p.name.endswith(s) for s in IMAGE_SUFFIXES))
    pairs = [(n, pred / n, gt / n) for n in names if (pred / n).is_file()]
    if not pairs:
        raise InputError(str(pred), f"no file name in common with {gt}")
    return pairs


def evaluate_pair(pred_path: Path, gt_path: Path) -> dict:
    """Metrics of one case, with the grid check and timings."""
    from ..io import read_volume
    from ..metrics.airway import airway_metrics

    t0 = time.perf_counter()
    pred, gt = read_volume(pred_path), read_volume(gt_path)
    if pred.shape != gt.shape:
        raise InputError(pred_path.name, f"grid {pred.size_ijk} differs from the ground truth's {gt.size_ijk}")
    t1 = time.perf_counter()
    result = airway_metrics(pred, gt)
    result["geometry_matches"] = bool(pred.same_grid(gt, tol=1e-3))
    result["read_s"] = round(t1 - t0, 3)
    result["metrics_s"] = round(time.perf_counter() - t1, 3)
    return result


def run_airway(args: argparse.Namespace) -> int:
    from ..metrics.airway import aggregate

    pairs = _pairs(Path(args.pred), Path(args.gt))
    cases = {name: evaluate_pair(p, g) for name, p, g in pairs}
    summary = aggregate(list(cases.values())) if len(cases) > 1 else None
    if args.json:
        print(json.dumps({"cases": cases, "aggregate": summary}, indent=1))
        return 0
    width = max(len(n) for n in [*cases, "case (%)"]) + 2
    print(f"{'case (%)':<{width}}" + "".join(f"{m.upper():>12}" for m in METRICS))
    for name, r in cases.items():
        print(f"{name:<{width}}" + "".join(f"{100 * r[m]:12.3f}" for m in METRICS))
    if summary:
        for stat in ("mean", "std"):
            print(f"{stat:<{width}}" + "".join(f"{100 * summary[m][stat]:12.3f}" for m in METRICS))
    return 0
