"""``clinseg eval airway|seg|lesion PRED GT``: metrics of a prediction against its ground truth.

``airway``: ATM'22 metrics of an airway mask (or two folders of them); ``seg``: per-label Dice / HD95 / surface Dice
table of two label maps; ``lesion``: per-case and pooled lesion metrics of binary lesion masks (files or folders).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
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
    _register_seg(tasks)
    _register_lesion(tasks)


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


# --- eval seg: per-label QA table of two label maps ---


def _register_seg(tasks) -> None:
    s = tasks.add_parser(
        "seg",
        help="per-label Dice, HD95, surface Dice and volumes of two label maps (e.g. OARs)",
        description="PRED and GT are label-map files on the same grid (.seg.nrrd names its labels). One row per "
        "label present in either map, then the mean over labels. Prints CSV, or JSON with --json.",
    )
    s.add_argument("pred", help="predicted label map")
    s.add_argument("gt", help="ground-truth label map")
    s.add_argument("--labels", nargs="+", metavar="VALUE[=NAME]",
                   help="labels to evaluate, optionally named (default: every nonzero value, named from a .seg.nrrd)")
    s.add_argument("--tolerance", type=float, default=2.0, help="surface Dice tolerance in mm (default 2)")
    s.add_argument("--json", action="store_true", help="print JSON rows instead of CSV")
    s.set_defaults(func=run_seg)


def _read_labelmap(path: Path) -> tuple:
    """Label map Volume and value -> name from a .seg.nrrd's segments (empty for plain images)."""
    from ..io import read_segmentation, read_volume

    if not path.exists():
        raise InputError(str(path), "not found")
    if path.name.lower().endswith(".seg.nrrd"):
        volume, segments = read_segmentation(path)
        return volume, {s.label: s.name for s in segments}
    return read_volume(path), {}


def _parse_labels(items: list[str] | None, names: dict[int, str]) -> dict[int, str] | None:
    if not items:
        return names or None
    labels = {}
    for item in items:
        value, _, name = item.partition("=")
        try:
            number = int(value)
        except ValueError:
            raise InputError("--labels", f"{item!r} is not VALUE or VALUE=NAME with an integer VALUE") from None
        if number <= 0:
            raise InputError("--labels", f"label {number} must be positive (0 is background)")
        labels[number] = name or names.get(number, str(number))
    return labels


def _json_value(value):
    """inf as the string 'inf' and NaN as null, so the output stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return "" if value is None else str(value)


def run_seg(args: argparse.Namespace) -> int:
    from ..metrics.organs import organ_table

    pred_path, gt_path = Path(args.pred), Path(args.gt)
    gt, gt_names = _read_labelmap(gt_path)
    pred, pred_names = _read_labelmap(pred_path)
    if pred.shape != gt.shape:
        raise InputError(pred_path.name, f"grid {pred.size_ijk} differs from the ground truth's {gt.size_ijk}")
    if not pred.same_grid(gt, tol=1e-3):
        print(f"clinseg: warning: {pred_path.name} and {gt_path.name} differ in spacing/origin/direction; "
              "compared voxel by voxel with the ground truth's spacing", file=sys.stderr)
    if args.tolerance < 0:
        raise InputError("--tolerance", "must be >= 0 mm")
    labels = _parse_labels(args.labels, {**pred_names, **gt_names})
    table = organ_table(pred.array, gt.array, gt.spacing, labels=labels, tolerance_mm=args.tolerance)
    if args.json:
        print(json.dumps(_json_value(table.rows()), indent=1))
        return 0
    writer = csv.writer(sys.stdout)
    writer.writerow(list(table.columns))
    for row in zip(*table.columns.values()):
        writer.writerow([_text(v) for v in row])
    return 0


# --- eval lesion: ISLES'22-style lesion metrics of binary masks ---

def _register_lesion(tasks) -> None:
    s = tasks.add_parser(
        "lesion",
        help="lesion metrics (DSC, recall, precision, Jaccard, ASD, HD95, lesion F1, AVD, count difference)",
        description="PRED and GT are two binary lesion masks, or two folders: every GT file name found in both is "
        "evaluated; with several cases the mean/std over cases and DSC(G) (pooled voxel counts) follow.",
    )
    s.add_argument("pred", help="predicted lesion mask (file or folder)")
    s.add_argument("gt", help="ground-truth lesion mask (file or folder)")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    s.set_defaults(func=run_lesion)


def evaluate_lesion_pair(pred_path: Path, gt_path: Path) -> dict:
    """Lesion metrics of one case on the ground truth's spacing."""
    from ..io import read_volume
    from ..metrics.lesion import case_metrics

    pred, gt = read_volume(pred_path), read_volume(gt_path)
    if pred.shape != gt.shape:
        raise InputError(pred_path.name, f"grid {pred.size_ijk} differs from the ground truth's {gt.size_ijk}")
    result = case_metrics(pred.array, gt.array, gt.spacing)
    result["geometry_matches"] = bool(pred.same_grid(gt, tol=1e-3))
    return result


def run_lesion(args: argparse.Namespace) -> int:
    from ..metrics.lesion import CASE_METRICS, aggregate_cases

    pairs = _pairs(Path(args.pred), Path(args.gt))
    cases = {name: evaluate_lesion_pair(p, g) for name, p, g in pairs}
    summary = aggregate_cases(list(cases.values())) if len(cases) > 1 else None
    if args.json:
        print(json.dumps(_json_value({"cases": cases, "aggregate": summary}), indent=1))
        return 0
    width = max(len(n) for n in [*cases, "case"]) + 2
    print(f"{'case':<{width}}" + "".join(f"{m:>11}" for m in CASE_METRICS))
    for name, r in cases.items():
        print(f"{name:<{width}}" + "".join(f"{_text(r[m]):>11}" for m in CASE_METRICS))
    if summary:
        for stat in ("mean", "std"):
            print(f"{stat:<{width}}" + "".join(f"{_text(summary[m][stat]):>11}" for m in CASE_METRICS))
        print(f"DSC(G) (pooled over {summary['n_cases']} cases): {summary['dsc_global']:.4f}")
    return 0
