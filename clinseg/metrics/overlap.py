"""Voxel overlap metrics of binary masks (fractions in [0, 1], not percent).

Counts are taken on the union bounding box of the two masks; true negatives
are the rest of the full grid, so FPR = FP / (FP + TN) is as on the full image.
"""

from __future__ import annotations

import numpy as np

from ..post.components import bounding_box


def union_box(pred: np.ndarray, gt: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box holding the nonzero voxels of both arrays (same shape)."""
    boxes = [b for b in (bounding_box(pred), bounding_box(gt)) if b is not None]
    if not boxes:
        return None
    return tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(pred.ndim))


def confusion(pred: np.ndarray, gt: np.ndarray, total: int | None = None) -> dict[str, int]:
    """TP, FP, FN, TN of two binary arrays; ``total`` = voxel count of the full grid when these are crops."""
    p = np.asarray(pred) > 0
    g = np.asarray(gt) > 0
    tp = int(np.count_nonzero(p & g))
    n_pred, n_gt = int(np.count_nonzero(p)), int(np.count_nonzero(g))
    total = p.size if total is None else int(total)
    return {"tp": tp, "fp": n_pred - tp, "fn": n_gt - tp, "tn": total - n_pred - n_gt + tp}


def _ratio(num: float, den: float, empty: float) -> float:
    return float(num / den) if den > 0 else empty


def overlap_from_counts(c: dict[str, int]) -> dict[str, float]:
    """Dice, precision, sensitivity, FPR, FNR from confusion counts (empty-vs-empty scores as perfect)."""
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        "precision": _ratio(tp, tp + fp, 1.0 if fn == 0 else 0.0),
        "sensitivity": _ratio(tp, tp + fn, 1.0),
        "fpr": _ratio(fp, fp + tn, 0.0),
        "fnr": _ratio(fn, fn + tp, 0.0),
    }


def overlap_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Dice, precision, sensitivity, FPR and FNR of two same-shape binary arrays."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"shapes differ: {pred.shape} vs {gt.shape}")
    box = union_box(pred, gt)
    if box is None:
        return overlap_from_counts({"tp": 0, "fp": 0, "fn": 0, "tn": pred.size})
    return overlap_from_counts(confusion(pred[box], gt[box], total=pred.size))
