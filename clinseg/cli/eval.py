"""``clinseg eval airway|seg|lesion|nodule PRED GT``: metrics of a prediction against its ground truth.

``airway``: ATM'22 metrics of an airway mask (or two folders of them); ``seg``: per-label Dice / HD95 / surface Dice
table of two label maps; ``lesion``: per-case and pooled lesion metrics of binary lesion masks (files or folders);
``nodule``: FROC, CPM and per-nodule Dice of a nodule table CSV (+ label map) against reference nodule instances.
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
    _register_nodule(tasks)


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


def _require_same_grid_size(pred, gt, pred_path: Path) -> None:
    """Voxel-by-voxel metrics need the same grid size (spacing and origin may differ: only warned about)."""
    if pred.shape != gt.shape:
        raise InputError(pred_path.name, f"grid {pred.size_ijk} differs from the ground truth's {gt.size_ijk}")


def _print_cases(first: str, cases: dict[str, dict], summary: dict | None, metrics, header, cell) -> None:
    """One row per case, then mean and std rows: ``header(metric)`` and ``cell(value)`` format the columns."""
    width = max(len(n) for n in [*cases, first]) + 2
    print(f"{first:<{width}}" + "".join(header(m) for m in metrics))
    for name, r in cases.items():
        print(f"{name:<{width}}" + "".join(cell(r[m]) for m in metrics))
    if summary:
        for stat in ("mean", "std"):
            print(f"{stat:<{width}}" + "".join(cell(summary[m][stat]) for m in metrics))


def evaluate_pair(pred_path: Path, gt_path: Path) -> dict:
    """Metrics of one case, with the grid check and timings."""
    from ..io import read_volume
    from ..metrics.airway import airway_metrics

    t0 = time.perf_counter()
    pred, gt = read_volume(pred_path), read_volume(gt_path)
    _require_same_grid_size(pred, gt, pred_path)
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
    _print_cases("case (%)", cases, summary, METRICS, lambda m: f"{m.upper():>12}", lambda v: f"{100 * v:12.3f}")
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
    """Label map Volume, value -> name and name -> names of the segments it contains, from a .seg.nrrd's segments
    (both empty for plain images)."""
    from ..io import read_segmentation, read_volume

    if not path.exists():
        raise InputError(str(path), "not found")
    if path.name.lower().endswith(".seg.nrrd"):
        volume, segments = read_segmentation(path)
        return volume, {s.label: s.name for s in segments}, {s.name: s.contains for s in segments if s.contains}
    return read_volume(path), {}, {}


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
    gt, gt_names, gt_contains = _read_labelmap(gt_path)
    pred, pred_names, pred_contains = _read_labelmap(pred_path)
    _require_same_grid_size(pred, gt, pred_path)
    if not pred.same_grid(gt, tol=1e-3):
        print(f"clinseg: warning: {pred_path.name} and {gt_path.name} differ in spacing/origin/direction; "
              "compared voxel by voxel with the ground truth's spacing", file=sys.stderr)
    if args.tolerance < 0:
        raise InputError("--tolerance", "must be >= 0 mm")
    labels = _parse_labels(args.labels, {**pred_names, **gt_names})
    contains = {**pred_contains, **gt_contains}
    if contains and labels:
        # A segment containing others (spinal canal around the cord) is compared at its full extent on both sides.
        from ..containment import SegmentMasks
        from ..terminology import Segment

        segments = [Segment(v, name, (0.5, 0.5, 0.5), contains=contains.get(name, ())) for v, name in labels.items()]
        table = organ_table(SegmentMasks(pred.array, segments), SegmentMasks(gt.array, segments), gt.spacing,
                            tolerance_mm=args.tolerance)
    else:
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
    _require_same_grid_size(pred, gt, pred_path)
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
    _print_cases("case", cases, summary, CASE_METRICS, lambda m: f"{m:>11}", lambda v: f"{_text(v):>11}")
    if summary:
        print(f"DSC(G) (pooled over {summary['n_cases']} cases): {summary['dsc_global']:.4f}")
    return 0


# --- nodules ---------------------------------------------------------------------------------------------------------

CENTRE_COLUMNS = ("center_lps_x_mm", "center_lps_y_mm", "center_lps_z_mm")


def _register_nodule(tasks) -> None:
    n = tasks.add_parser(
        "nodule",
        help="nodule detection FROC / CPM and per-nodule Dice",
        description="PRED is a nodule table CSV (columns center_lps_x_mm, center_lps_y_mm, center_lps_z_mm, score, "
        "optionally label) and GT a label map with one integer per nodule; or two folders: GT <case><image suffix>, "
        "PRED <case>.csv plus, optionally, the predicted label map <case><image suffix> (Dice needs it). A "
        "detection hits a nodule when its centre lies within the nodule's equivalent-sphere radius (LUNA16).",
    )
    n.add_argument("pred", help="predicted nodule table CSV (file or folder)")
    n.add_argument("gt", help="reference nodule label map (file or folder)")
    n.add_argument("--pred-labels", help="predicted nodule label map of a single PRED file (for Dice)")
    n.add_argument("--ct", help="CT (file or folder) for the reference nodules' type (solid / part-solid / GGN)")
    n.add_argument("--min-diameter", type=float, default=0.0, metavar="MM",
                   help="count only reference nodules of at least MM mm; a hit on a smaller one is neither a true "
                   "nor a false positive (LUNA16's irrelevant findings). 6 is Lung-RADS's smallest actionable solid "
                   "nodule")
    n.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    n.set_defaults(func=run_nodule)


def _case_name(path: Path) -> str:
    from ..io.image import image_suffix

    suffix = image_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.stem


def _image_named(folder: Path, case: str) -> Path | None:
    from ..io import IMAGE_SUFFIXES

    return next((folder / f"{case}{s}" for s in IMAGE_SUFFIXES if (folder / f"{case}{s}").is_file()), None)


def _nodule_cases(args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    """Cases as {case, table, gt, pred_labels, ct}; and the GT cases that have no prediction."""
    pred, gt = Path(args.pred), Path(args.gt)
    ct = Path(args.ct) if args.ct else None
    for path in (pred, gt, ct, Path(args.pred_labels) if args.pred_labels else None):
        if path is not None and not path.exists():
            raise InputError(str(path), "not found")
    if pred.is_dir() != gt.is_dir():
        raise InputError(str(pred), "PRED and GT must both be files or both be folders")
    if not gt.is_dir():
        labels = Path(args.pred_labels) if args.pred_labels else None
        return [{"case": _case_name(gt), "table": pred, "gt": gt, "pred_labels": labels, "ct": ct}], []
    if args.pred_labels:
        raise InputError("--pred-labels", "only for single files; in folder mode put <case><suffix> next to the CSV")
    cases, missing = [], []
    for name in sorted(_case_name(p) for p in gt.iterdir() if p.is_file() and _image_named(gt, _case_name(p))):
        table = pred / f"{name}.csv"
        if not table.is_file():
            missing.append(name)
            continue
        cases.append({"case": name, "table": table, "gt": _image_named(gt, name),
                      "pred_labels": _image_named(pred, name), "ct": _image_named(ct, name) if ct else None})
    if not cases:
        raise InputError(str(pred), f"no <case>.csv for any label map in {gt}")
    return cases, missing


def read_detections(path: Path, case: str) -> list:
    """Detections of one nodule table CSV (as ``clinseg.io.tables.write_table`` writes the nodules table)."""
    from ..io.tables import read_table
    from ..metrics.detection import Detection

    table = read_table(path)
    missing = [c for c in (*CENTRE_COLUMNS, "score") if c not in table.columns]
    if missing:
        raise InputError(path.name, f"lacks column(s) {', '.join(missing)}")
    out = []
    for line, row in enumerate(table.rows(), start=2):
        try:
            centre = tuple(float(row[c]) for c in CENTRE_COLUMNS)
            score = float(row["score"])
            label = int(float(row["label"])) if row.get("label", "") not in ("", None) else 0
        except ValueError:
            raise InputError(path.name, f"line {line}: centre, score and label must be numbers") from None
        out.append(Detection(case, centre, score, label))
    return out


def evaluate_nodules(cases: list[dict], min_diameter_mm: float = 0.0) -> dict:
    """Match, FROC, CPM and per-nodule overlap over all cases (one scan per case); reference nodules under
    ``min_diameter_mm`` are irrelevant findings."""
    from ..io import read_volume
    from ..metrics.detection import ReferenceNodule, evaluate_detections, ignoring_smaller
    from ..post.nodules import measure_nodules

    detections, nodules, label_maps = [], [], {}
    for c in cases:
        gt = read_volume(c["gt"])
        ct = read_volume(c["ct"]) if c["ct"] else None
        if ct is not None and ct.shape != gt.shape:
            raise InputError(c["ct"].name, f"grid {ct.size_ijk} differs from the reference's {gt.size_ijk}")
        for m in measure_nodules(gt, ct):
            nodules.append(ReferenceNodule(c["case"], tuple(m.center_lps), m.equivalent_diameter_mm, m.label, m.kind))
        detections.extend(read_detections(c["table"], c["case"]))
        if c["pred_labels"]:
            pred = read_volume(c["pred_labels"])
            if pred.shape != gt.shape:
                raise InputError(c["pred_labels"].name, f"grid {pred.size_ijk} differs from the reference's "
                                 f"{gt.size_ijk}")
            label_maps[c["case"]] = (pred.array, gt.array)
    nodules = ignoring_smaller(nodules, min_diameter_mm)
    return {"cases": [c["case"] for c in cases], "min_diameter_mm": min_diameter_mm,
            "ignored": sum(n.ignore for n in nodules),
            **evaluate_detections(detections, nodules, len(cases), label_maps)}


def _stat_text(stats: dict) -> str:
    return "-" if not stats["n"] else f"{stats['mean']:.3f} +- {stats['sd']:.3f} (n={stats['n']})"


def run_nodule(args: argparse.Namespace) -> int:
    if not 0.0 <= args.min_diameter < 100.0:
        raise InputError("--min-diameter", f"must be in [0, 100) mm, got {args.min_diameter:g}")
    cases, missing = _nodule_cases(args)
    if missing:
        print(f"clinseg: note: no prediction for {len(missing)} case(s): {', '.join(missing)}", file=sys.stderr)
    result = evaluate_nodules(cases, args.min_diameter)
    result["missing"] = missing
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{len(cases)} scan(s), {result['nodules']} nodule(s), {result['detections']} detection(s): "
          f"{result['tp']} TP, {result['fp']} FP, {result['duplicate']} duplicate")
    if result["ignored"]:
        print(f"{result['ignored']} nodule(s) under {args.min_diameter:g} mm ignored (neither found nor missed)")
    print("FPs/scan    " + "".join(f"{r:>8}" for r in result["sensitivity_at"]))
    print("sensitivity " + "".join(f"{s:8.3f}" for s in result["sensitivity_at"].values()))
    print(f"CPM {result['cpm']:.4f}")
    summary = result["summary"]
    print(f"{'nodules':<18}{'n':>4}{'found':>6}  {'Dice mean +- sd':<26}IoU mean +- sd")
    groups = [("all", summary["all"])] + [(f"type {k}", v) for k, v in summary["type"].items()] + \
        [(f"size {k} mm", v) for k, v in summary["size_bin"].items()]
    for name, g in groups:
        print(f"{name:<18}{g['nodules']:>4}{g['detected']:>6}  {_stat_text(g['dice']):<26}{_stat_text(g['iou'])}")
    return 0
