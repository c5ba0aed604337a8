"""Per-organ QA table of a multi-organ segmentation (OAR) against a reference, or of two observers.

One row per organ present in either segmentation (an organ empty in both is left out: nothing to compare) with
Dice, HD95 (mm), surface Dice at a tolerance (mm) and both volumes (ml), then a ``mean`` row averaging the metric
columns over organs (finite values only: an organ missing from one side has HD95 inf and Dice 0; the Dice mean
still shows the miss). Distance definitions are those of ``clinseg.metrics.surface``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
from scipy import ndimage

from ..result import Table
from ..volume import Volume
from .overlap import confusion, overlap_from_counts
from .surface import Mask, Spacing, as_mask_and_spacing, padded_union_box, surface_distances

Segmentation = Mask | Mapping[str, Mask]


def _raw(mask: Mask) -> np.ndarray:
    return mask.array if isinstance(mask, Volume) else np.asarray(mask)


def _spacing_of(*items: Segmentation) -> Spacing | None:
    for item in items:
        values = item.values() if isinstance(item, Mapping) else [item]
        for v in values:
            if isinstance(v, Volume):
                return v.spacing
    return None


def _nonnegative_ints(labelmap: np.ndarray) -> np.ndarray:
    """The label map as find_objects needs it; copied only when it is not already unsigned or non-negative."""
    if labelmap.dtype.kind == "u" or (labelmap.dtype.kind == "i" and labelmap.min() >= 0):
        return labelmap
    return np.clip(np.rint(labelmap), 0, None).astype(np.int32)


def _label_pairs(
    pred: np.ndarray, ref: np.ndarray, labels: Mapping[int, str] | None
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, pred crop, ref crop) per label, each cropped to the label's union box without full-size masks."""
    if pred.shape != ref.shape:
        raise ValueError(f"shapes differ: {pred.shape} vs {ref.shape}")
    if labels is None:
        values = np.union1d(np.unique(pred), np.unique(ref))
        labels = {int(v): str(int(v)) for v in values if v > 0}
    boxes = [ndimage.find_objects(_nonnegative_ints(m)) for m in (pred, ref)]
    for value, name in labels.items():
        found = [b[value - 1] for b in boxes if 0 < value <= len(b) and b[value - 1] is not None]
        if not found:
            continue
        box = tuple(
            slice(max(min(f[a].start for f in found) - 1, 0), min(max(f[a].stop for f in found) + 1, pred.shape[a]))
            for a in range(3)
        )
        yield name, pred[box] == value, ref[box] == value


def _mask_pairs(
    pred: Mapping[str, Mask], ref: Mapping[str, Mask]
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    names = list(ref) + [n for n in pred if n not in ref]
    for name in names:
        p = _raw(pred[name]) if name in pred else None
        r = _raw(ref[name]) if name in ref else None
        p = np.zeros_like(r, bool) if p is None else p
        r = np.zeros_like(p, bool) if r is None else r
        if p.shape != r.shape:
            raise ValueError(f"{name}: shapes differ: {p.shape} vs {r.shape}")
        box = padded_union_box(p, r)
        if box is not None:
            yield name, p[box] > 0, r[box] > 0


def organ_table(
    pred: Segmentation,
    ref: Segmentation,
    spacing: Spacing | None = None,
    labels: Mapping[int, str] | None = None,
    tolerance_mm: float = 2.0,
    name: str = "organ_qa",
) -> Table:
    """Per-organ Dice / HD95 / surface Dice / volumes of ``pred`` against ``ref``, plus a mean row.

    ``pred`` and ``ref`` are two label maps (arrays or Volumes; ``labels`` maps value -> organ name, default every
    nonzero value named by its number) or two dicts organ name -> binary mask (an organ absent from one dict is
    empty there). ``spacing`` is (i, j, k) mm, taken from a Volume when not given.
    """
    spacing = spacing if spacing is not None else _spacing_of(pred, ref)
    if spacing is None:
        raise ValueError("spacing is required for plain arrays")
    if isinstance(pred, Mapping) != isinstance(ref, Mapping):
        raise ValueError("pred and ref must both be label maps or both be dicts of masks")
    if isinstance(pred, Mapping):
        pairs = _mask_pairs(pred, ref)
    else:
        p, r, spacing = as_mask_and_spacing(pred, ref, spacing)
        pairs = _label_pairs(p, r, labels)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    sdice = f"surface_dice_{tolerance_mm:g}mm"
    columns: dict[str, list] = {k: [] for k in ("organ", "dice", "hd95_mm", sdice, "volume_pred_ml", "volume_ref_ml")}
    for organ, p, r in pairs:
        c = confusion(p, r)
        d = surface_distances(p, r, spacing)
        columns["organ"].append(organ)
        columns["dice"].append(overlap_from_counts(c)["dice"])
        columns["hd95_mm"].append(d.hd_percentile(95.0))
        columns[sdice].append(d.surface_dice(tolerance_mm))
        columns["volume_pred_ml"].append((c["tp"] + c["fp"]) * voxel_ml)
        columns["volume_ref_ml"].append((c["tp"] + c["fn"]) * voxel_ml)
    n = len(columns["organ"])
    columns["organ"].append("mean")
    for key in ("dice", "hd95_mm", sdice):
        values = np.array(columns[key][:n], float)
        finite = values[np.isfinite(values)]
        columns[key].append(float(finite.mean()) if finite.size else float("nan"))
    columns["volume_pred_ml"].append(None)
    columns["volume_ref_ml"].append(None)
    return Table(name, columns)
