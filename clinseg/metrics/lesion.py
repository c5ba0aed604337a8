"""Lesion segmentation metrics (stroke): voxel overlap, surface distances and ISLES'22 lesion-wise scores.

Lesions are 26-connected components. A reference lesion is detected (lesion TP) when any predicted voxel
overlaps it, otherwise it is missed (lesion FN); a predicted component touching no reference voxel is a lesion
FP. Lesion F1 = TP / (TP + (FP + FN) / 2), 1.0 when neither mask has a lesion (the ISLES'22 convention).

``aggregate_cases`` gives per-metric mean and population sd over cases, plus DSC(G), the Dice of the voxel
counts pooled over all cases (large lesions weigh more than in the mean of per-case Dice).
"""

from __future__ import annotations

import cc3d
import numpy as np

from .overlap import confusion, overlap_from_counts, union_box
from .surface import Mask, Spacing, as_mask_and_spacing, surface_distances

# Per-case metrics that aggregate_cases averages (the counts are pooled instead).
CASE_METRICS = ("dice", "recall", "precision", "jaccard", "asd_mm", "hd95_mm", "lesion_f1", "avd_ml", "count_diff")


def lesion_counts(pred: np.ndarray, gt: np.ndarray, connectivity: int = 26) -> dict[str, int]:
    """Lesion-wise TP / FP / FN and the number of lesions in each mask (same-shape binary arrays)."""
    p, g = np.asarray(pred) > 0, np.asarray(gt) > 0
    if p.shape != g.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {g.shape}")
    box = union_box(p, g)
    if box is None:
        return {"lesion_tp": 0, "lesion_fp": 0, "lesion_fn": 0, "n_pred": 0, "n_gt": 0}
    p, g = np.ascontiguousarray(p[box]), np.ascontiguousarray(g[box])
    both = p & g
    gt_labels, n_gt = cc3d.connected_components(g.view(np.uint8), connectivity=connectivity, return_N=True)
    pred_labels, n_pred = cc3d.connected_components(p.view(np.uint8), connectivity=connectivity, return_N=True)
    detected = np.unique(gt_labels[both]).size  # labels of reference lesions that a prediction touches
    confirmed = np.unique(pred_labels[both]).size  # predicted components that touch a reference lesion
    return {
        "lesion_tp": int(detected),
        "lesion_fp": int(n_pred - confirmed),
        "lesion_fn": int(n_gt - detected),
        "n_pred": int(n_pred),
        "n_gt": int(n_gt),
    }


def f1_from_counts(c: dict[str, int]) -> float:
    """Lesion-wise F1 of ``lesion_counts`` output (1.0 when there is no lesion in either mask)."""
    tp, fp, fn = c["lesion_tp"], c["lesion_fp"], c["lesion_fn"]
    return 1.0 if tp + fp + fn == 0 else tp / (tp + (fp + fn) / 2)


def lesion_f1(pred: np.ndarray, gt: np.ndarray, connectivity: int = 26) -> float:
    """ISLES'22 lesion-wise F1 of two binary masks."""
    return f1_from_counts(lesion_counts(pred, gt, connectivity))


def absolute_volume_difference(pred: np.ndarray, gt: np.ndarray, spacing: Spacing) -> float:
    """|V_pred - V_gt| in ml (spacing in mm)."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return abs(int(np.count_nonzero(pred)) - int(np.count_nonzero(gt))) * voxel_ml


def lesion_count_difference(pred: np.ndarray, gt: np.ndarray, connectivity: int = 26) -> int:
    """|number of predicted lesions - number of reference lesions|."""
    c = lesion_counts(pred, gt, connectivity)
    return abs(c["n_pred"] - c["n_gt"])


def case_metrics(pred: Mask, gt: Mask, spacing: Spacing | None = None) -> dict[str, float | int]:
    """All per-case lesion metrics of a prediction against its reference; ``spacing`` (i, j, k) mm.

    Keys: the ``CASE_METRICS`` (distances in mm, AVD in ml), the voxel counts ``tp``/``fp``/``fn`` that DSC(G)
    pools, the lesion counts, and both volumes (ml). Empty masks follow ``clinseg.metrics.surface``'s rules
    (inf distances when exactly one is empty).
    """
    p, g, spacing = as_mask_and_spacing(pred, gt, spacing)
    box = union_box(p, g) or tuple(slice(0, 0) for _ in p.shape)
    c = confusion(p[box], g[box], total=p.size)
    overlap = overlap_from_counts(c)
    lesions = lesion_counts(p, g)
    surface = surface_distances(p, g, spacing)
    union = c["tp"] + c["fp"] + c["fn"]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return {
        "dice": overlap["dice"],
        "recall": overlap["sensitivity"],
        "precision": overlap["precision"],
        "jaccard": c["tp"] / union if union else 1.0,
        "asd_mm": surface.asd(),
        "hd95_mm": surface.hd_percentile(95.0),
        "lesion_f1": f1_from_counts(lesions),
        "avd_ml": abs(c["fp"] - c["fn"]) * voxel_ml,  # V_pred - V_gt = FP - FN
        "count_diff": abs(lesions["n_pred"] - lesions["n_gt"]),
        "tp": c["tp"],
        "fp": c["fp"],
        "fn": c["fn"],
        **lesions,
        "pred_ml": (c["tp"] + c["fp"]) * voxel_ml,
        "gt_ml": (c["tp"] + c["fn"]) * voxel_ml,
    }


def aggregate_cases(cases: list[dict]) -> dict:
    """Mean / population sd of each ``CASE_METRICS`` over cases, and DSC(G) from the pooled voxel counts.

    A metric's non-finite values (inf distances of an empty mask) are left out of its mean and sd and counted in
    ``n_undefined``, so one missed case does not turn the mean into inf.
    """
    if not cases:
        raise ValueError("no cases to aggregate")
    out: dict = {"n_cases": len(cases)}
    for key in CASE_METRICS:
        values = np.array([float(c[key]) for c in cases])
        finite = values[np.isfinite(values)]
        out[key] = {
            "mean": float(finite.mean()) if finite.size else float("nan"),
            "std": float(finite.std()) if finite.size else float("nan"),
            "n": int(finite.size),
            "n_undefined": int(values.size - finite.size),
        }
    tp, fp, fn = (sum(int(c[k]) for c in cases) for k in ("tp", "fp", "fn"))
    out["dsc_global"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return out
