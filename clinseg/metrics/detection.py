"""Nodule detection metrics: hit matching, FROC, CPM, and per-nodule Dice / IoU by type and size.

Matching (LUNA16 convention): a detection hits a reference nodule when its
centre lies within the nodule's radius (``diameter_mm / 2``) in the same scan.
Detections are taken in descending score order; each takes the nearest
unmatched nodule it hits (distance relative to the radius), which makes it a
true positive. A detection that only hits nodules already taken is a
duplicate: neither a true nor a false positive, as in LUNA16. A detection that
hits an ``ignore`` finding (LUNA16's "irrelevant findings") and no free nodule
is ignored too; one that hits nothing is a false positive. So each nodule is
counted once, each detection at most once, and the matching of the detections
above any threshold is the same as if the lower ones did not exist.

FROC: one operating point per distinct score threshold (detections with a
score >= t kept): x = false positives per scan over ``n_scans`` scans,
y = matched nodules / reference nodules, starting from (0, 0).

CPM: the mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per
scan. The sensitivity at a rate x is read from the curve like LUNA16's linear
interpolation of its FROC points: take the last operating point whose rate is
<= x; when a later point exists, go along the straight line toward the next
point (whose rate is > x). Without score ties the next point only adds a
false positive, so the value is that of the last point (a staircase); a tie
that adds true and false positives at once gives a sloped step. Past the last
point the final sensitivity holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
SIZE_BINS = ((3.0, 6.0), (6.0, 10.0), (10.0, 20.0), (20.0, 30.0))
# Lung-RADS v2022 puts a solid nodule under 6 mm in category 2 (annual screening, no work-up): the smallest
# size whose detection changes what happens to the patient.
ACTIONABLE_MM = 6.0


@dataclass(frozen=True)
class Detection:
    """One detected nodule: scan, centre (LPS mm), score, and its instance label in a predicted map (0: none)."""

    case: str
    center_lps: tuple[float, float, float]
    score: float
    label: int = 0


@dataclass(frozen=True)
class ReferenceNodule:
    """One reference nodule: scan, centre (LPS mm), diameter (sets the hit radius), label in the reference map."""

    case: str
    center_lps: tuple[float, float, float]
    diameter_mm: float
    label: int = 0
    kind: str = ""
    ignore: bool = False  # an irrelevant finding: its hits are neither TP nor FP, it is not counted


def ignoring_smaller(nodules: Sequence[ReferenceNodule], min_diameter_mm: float) -> list[ReferenceNodule]:
    """``nodules`` with those under ``min_diameter_mm`` made irrelevant findings: a hit on one is neither a true
    nor a false positive, and it is not counted (how LUNA16 treats nodules under 3 mm)."""
    return [replace(n, ignore=n.ignore or n.diameter_mm < min_diameter_mm) for n in nodules]


@dataclass
class Matching:
    """``outcome[d]`` in tp / fp / duplicate / ignored; ``nodule_of[d]`` the nodule a TP took;
    ``detection_of[n]`` the detection that took nodule ``n`` (indices into the inputs)."""

    outcome: list[str]
    nodule_of: dict[int, int] = field(default_factory=dict)
    detection_of: dict[int, int] = field(default_factory=dict)


def match_detections(detections: Sequence[Detection], nodules: Sequence[ReferenceNodule]) -> Matching:
    """Greedy LUNA16-style hit matching (see the module docstring)."""
    by_case: dict[str, list[int]] = {}
    for n, nodule in enumerate(nodules):
        by_case.setdefault(nodule.case, []).append(n)
    centres = np.array([n.center_lps for n in nodules], float).reshape(-1, 3)
    radii = np.array([n.diameter_mm / 2 for n in nodules], float)
    result = Matching(["fp"] * len(detections))
    order = sorted(range(len(detections)), key=lambda d: -detections[d].score)  # stable: ties keep input order
    for d in order:
        candidates = by_case.get(detections[d].case, [])
        if not candidates:
            continue
        idx = np.asarray(candidates)
        rel = np.linalg.norm(centres[idx] - np.asarray(detections[d].center_lps, float), axis=1) / radii[idx]
        hit = [(float(r), int(n)) for r, n in zip(rel, idx) if r <= 1.0]
        free = sorted((r, n) for r, n in hit if not nodules[n].ignore and n not in result.detection_of)
        if free:
            n = free[0][1]
            result.outcome[d] = "tp"
            result.nodule_of[d], result.detection_of[n] = n, d
        elif any(nodules[n].ignore for _, n in hit):
            result.outcome[d] = "ignored"
        elif hit:
            result.outcome[d] = "duplicate"
    return result


@dataclass
class Froc:
    """FROC operating points: false positives per scan, sensitivity, and the score threshold of each."""

    fps_per_scan: np.ndarray
    sensitivity: np.ndarray
    thresholds: np.ndarray
    n_nodules: int
    n_scans: int

    def sensitivity_at(self, rates: Sequence[float] = FP_RATES) -> np.ndarray:
        """Sensitivity at each FP rate, read as the module docstring describes."""
        x, y = self.fps_per_scan, self.sensitivity
        out = []
        for rate in rates:
            j = int(np.searchsorted(x, rate, side="right")) - 1  # x[0] = 0, so j >= 0 for rate >= 0
            if j >= len(x) - 1:
                out.append(float(y[-1]))
            else:
                t = (rate - x[j]) / (x[j + 1] - x[j])
                out.append(float(y[j] + t * (y[j + 1] - y[j])))
        return np.array(out)

    def cpm(self, rates: Sequence[float] = FP_RATES) -> float:
        """Competition performance metric: mean sensitivity at ``rates`` (LUNA16: 1/8 ... 8 FPs per scan)."""
        return float(np.mean(self.sensitivity_at(rates)))


def froc(detections: Sequence[Detection], nodules: Sequence[ReferenceNodule], n_scans: int,
         matching: Matching | None = None) -> Froc:
    """FROC over ``n_scans`` scans (those without detections or nodules count too)."""
    if n_scans < 1:
        raise ValueError("n_scans must be at least 1")
    n_nodules = sum(not n.ignore for n in nodules)
    if n_nodules == 0:
        raise ValueError("no reference nodule to measure sensitivity against")
    matching = matching or match_detections(detections, nodules)
    scores = np.array([d.score for d in detections], float)
    kinds = np.array(matching.outcome)
    counted = (kinds == "tp") | (kinds == "fp")
    scores, is_tp = scores[counted], kinds[counted] == "tp"
    thresholds = np.unique(scores)[::-1]
    # Cumulative counts at each distinct threshold (scores >= t), via the sorted scores.
    desc = np.argsort(-scores, kind="stable")
    tp_cum, fp_cum = np.cumsum(is_tp[desc]), np.cumsum(~is_tp[desc])
    last = np.searchsorted(-scores[desc], -thresholds, side="right") - 1
    fps = np.concatenate([[0.0], fp_cum[last] / n_scans]) if len(last) else np.zeros(1)
    sens = np.concatenate([[0.0], tp_cum[last] / n_nodules]) if len(last) else np.zeros(1)
    return Froc(fps, sens, np.concatenate([[np.inf], thresholds]), n_nodules, int(n_scans))


# --- per-nodule segmentation overlap -------------------------------------------------------------------------------

def size_bin(diameter_mm: float) -> str:
    """"3-6", "6-10", "10-20", "20-30" (lower bound included), "<3" or ">=30" mm."""
    for lo, hi in SIZE_BINS:
        if lo <= diameter_mm < hi:
            return f"{lo:g}-{hi:g}"
    return f"<{SIZE_BINS[0][0]:g}" if diameter_mm < SIZE_BINS[0][0] else f">={SIZE_BINS[-1][1]:g}"


def _box_union(a: tuple[slice, ...], b: tuple[slice, ...] | None) -> tuple[slice, ...]:
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def nodule_overlaps(pred_labels: np.ndarray, gt_labels: np.ndarray,
                    pairs: Mapping[int, int] | None = None) -> dict[int, dict]:
    """Dice and IoU of every reference nodule (label of ``gt_labels``) with one predicted instance.

    The predicted instance is ``pairs[gt_label]`` (e.g. from the detection matching; 0 or absent: none)
    when ``pairs`` is given, else the predicted label overlapping the nodule most. Returns
    ``{gt_label: {"pred_label", "dice", "iou"}}`` (0 / 0 without a predicted instance).
    """
    pred, gt = np.asarray(pred_labels), np.asarray(gt_labels)
    if pred.shape != gt.shape:
        raise ValueError(f"shapes differ: {pred.shape} vs {gt.shape}")
    gt_boxes = ndimage.find_objects(gt.astype(np.int64, copy=False) if gt.dtype.kind not in "iu" else gt)
    pred_boxes = ndimage.find_objects(pred.astype(np.int64, copy=False) if pred.dtype.kind not in "iu" else pred)
    out: dict[int, dict] = {}
    for index, box in enumerate(gt_boxes):
        if box is None:
            continue
        g = index + 1
        if pairs is not None:
            p = int(pairs.get(g, 0))
        else:
            inside = pred[box][gt[box] == g]
            counts = np.bincount(inside[inside > 0].astype(np.int64))
            p = int(np.argmax(counts)) if counts.size else 0
        if p <= 0 or p > len(pred_boxes) or pred_boxes[p - 1] is None:
            out[g] = {"pred_label": 0, "dice": 0.0, "iou": 0.0}
            continue
        union_box = _box_union(box, pred_boxes[p - 1])
        a, b = gt[union_box] == g, pred[union_box] == p
        inter, na, nb = int(np.count_nonzero(a & b)), int(np.count_nonzero(a)), int(np.count_nonzero(b))
        out[g] = {"pred_label": p, "dice": 2 * inter / (na + nb), "iou": inter / (na + nb - inter)}
    return out


def _stats(values: list[float]) -> dict:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()) if v.size else None, "sd": float(v.std()) if v.size else None, "n": int(v.size)}


def nodule_rows(nodules: Sequence[ReferenceNodule], detections: Sequence[Detection], matching: Matching,
                overlaps: Mapping[str, Mapping[int, dict]] | None = None) -> list[dict]:
    """One row per counted reference nodule: case, label, type, diameter, size bin, detected, score, Dice, IoU.

    ``overlaps[case][label]`` (from :func:`nodule_overlaps`) gives Dice / IoU; None where absent.
    """
    rows = []
    for n, nodule in enumerate(nodules):
        if nodule.ignore:
            continue
        d = matching.detection_of.get(n)
        seg = (overlaps or {}).get(nodule.case, {}).get(nodule.label)
        rows.append({
            "case": nodule.case, "label": nodule.label, "type": nodule.kind or "unknown",
            "diameter_mm": nodule.diameter_mm, "size_bin": size_bin(nodule.diameter_mm), "detected": d is not None,
            "score": None if d is None else detections[d].score,
            "dice": None if seg is None else seg["dice"], "iou": None if seg is None else seg["iou"],
        })
    return rows


def nodule_summary(rows: Sequence[dict]) -> dict:
    """Sensitivity (any score) and Dice / IoU mean and population sd, over all nodules, by type and by size bin.

    Dice / IoU are averaged over the detected nodules that have a value (the NoduleNet convention of
    scoring the segmentation of found nodules); ``n`` says how many.
    """
    def group(members: list[dict]) -> dict:
        found = [r for r in members if r["detected"]]
        scored = [r for r in found if r["dice"] is not None]
        return {"nodules": len(members), "detected": len(found),
                "sensitivity": len(found) / len(members) if members else None,
                "dice": _stats([r["dice"] for r in scored]), "iou": _stats([r["iou"] for r in scored])}

    out = {"all": group(list(rows)), "type": {}, "size_bin": {}}
    for key in ("type", "size_bin"):
        for value in sorted({r[key] for r in rows}, key=_bin_order if key == "size_bin" else str):
            out[key][value] = group([r for r in rows if r[key] == value])
    return out


def _bin_order(name: str) -> float:
    digits = name.lstrip("<>=").split("-")[0]
    return float(digits) - (0.5 if name.startswith("<") else 0.0) + (0.5 if name.startswith(">") else 0.0)


def evaluate_detections(detections: Sequence[Detection], nodules: Sequence[ReferenceNodule], n_scans: int,
                        label_maps: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> dict:
    """The whole nodule evaluation of ``n_scans`` scans: matching, FROC, CPM, sensitivity at ``FP_RATES`` and,
    for the cases in ``label_maps`` (case -> predicted and reference instance labels), per-nodule overlap.

    A case whose detections carry labels pairs each matched nodule with its detection's instance; otherwise
    instances are paired by overlap."""
    import math

    matching = match_detections(detections, nodules)
    overlaps = {}
    for case, (pred, gt) in (label_maps or {}).items():
        labelled = any(d.label for d in detections if d.case == case)
        pairs = {nodules[n].label: detections[d].label for n, d in matching.detection_of.items()
                 if nodules[n].case == case} if labelled else None
        overlaps[case] = nodule_overlaps(pred, gt, pairs)
    curve = froc(detections, nodules, n_scans, matching)
    rows = nodule_rows(nodules, detections, matching, overlaps)
    return {
        "nodules": len(nodules), "detections": len(detections),
        **{k: matching.outcome.count(k) for k in ("tp", "fp", "duplicate")},
        "froc": {"fps_per_scan": curve.fps_per_scan.tolist(), "sensitivity": curve.sensitivity.tolist(),
                 "thresholds": [float(t) if math.isfinite(t) else None for t in curve.thresholds]},
        "sensitivity_at": dict(zip((f"{r:g}" for r in FP_RATES), curve.sensitivity_at().tolist())),
        "cpm": curve.cpm(), "per_nodule": rows, "summary": nodule_summary(rows),
    }
