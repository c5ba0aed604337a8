"""ATM'22 airway metrics: DSC, precision, sensitivity, FPR, FNR, tree length detected (TD), branches detected (BD).

As in the ATM'22 evaluation: the prediction is reduced to its largest
26-connected component first; the reference centerline is the 3-D thinning
(Lee) of the ground truth; TD = |pred ∩ GT skeleton| / |GT skeleton|; for BD
the GT skeleton is parsed into branches (skeleton minus the 26-neighbourhood
of every bifurcation voxel; each remaining 26-component is a branch, and
bifurcation voxels go back to the adjacent branch) and a branch counts as
detected when at least 80 % of its skeleton voxels lie in the prediction.
All values are fractions (0-1).

Speed: everything runs inside the union bounding box, and the GT skeleton
and branch labels (the slow part, seconds) are cached per ground truth, so
several predictions against one GT pay for thinning once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..errors import InputError
from ..post.components import bounding_box, largest_in_crop
from ..post.skeleton import neighbour_table, skeletonize
from ..volume import Volume
from .overlap import confusion, overlap_from_counts

DETECTED_FRACTION = 0.8
_CACHE: OrderedDict[str, AirwayReference] = OrderedDict()
_CACHE_SIZE = 4


@dataclass
class AirwayReference:
    """A ground truth prepared for evaluation: its crop, skeleton voxels and their branch labels."""

    shape: tuple[int, int, int]
    box: tuple[slice, ...]
    mask: np.ndarray  # bool, the GT inside ``box``
    skeleton: np.ndarray  # (M, 3) full-grid indices (k, j, i)
    branch: np.ndarray  # (M,) branch label 0..n_branches-1 per skeleton voxel

    @property
    def n_branches(self) -> int:
        return int(self.branch.max()) + 1 if self.branch.size else 0

    @classmethod
    def from_mask(cls, gt: np.ndarray) -> AirwayReference:
        gt = np.asarray(gt)
        box = bounding_box(gt)
        if box is None:
            raise InputError("ground truth", "airway mask is empty")
        mask = np.ascontiguousarray(gt[box] > 0)
        coords = np.argwhere(skeletonize(mask))
        offset = np.array([s.start for s in box])
        return cls(tuple(gt.shape[:3]), box, mask, coords + offset, parse_branches(coords, mask.shape))


def parse_branches(coords: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Branch label (0..B-1) of every skeleton voxel: cut at bifurcation neighbourhoods, label the pieces."""
    m = len(coords)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    nbr = neighbour_table(coords, shape)
    has = nbr >= 0
    junction = has.sum(axis=1) >= 3
    near = junction | (has & junction[np.where(has, nbr, 0)]).any(axis=1)
    keep = ~near
    rows, cols = np.nonzero(has)
    targets = nbr[rows, cols]
    both = keep[rows] & keep[targets]
    graph = coo_matrix((np.ones(int(both.sum())), (rows[both], targets[both])), shape=(m, m))
    _, comp = connected_components(graph, directed=False)
    label = np.full(m, -1, dtype=np.int64)
    if keep.any():
        _, label[keep] = np.unique(comp[keep], return_inverse=True)
    else:  # a skeleton that is all junction: one branch per piece
        _, label = np.unique(connected_components(coo_matrix((np.ones(len(rows)), (rows, targets)), shape=(m, m)),
                                                  directed=False)[1], return_inverse=True)
        return label
    # Junction voxels join a touching branch (grown one ring at a time).
    while (label < 0).any():
        neighbour_labels = np.where(has, label[np.where(has, nbr, 0)], -1)
        best = neighbour_labels.max(axis=1)
        grow = (label < 0) & (best >= 0)
        if not grow.any():
            break
        label[grow] = best[grow]
    stranded = label < 0
    if stranded.any():  # junction voxels cut off from every branch (cannot happen on a connected skeleton)
        label[stranded] = label.max() + 1
    return label


def detected_branches(ref: AirwayReference, hit: np.ndarray) -> np.ndarray:
    """Per reference branch, whether ``hit`` (bool per skeleton voxel) covers at least 80 % of its skeleton."""
    total = np.bincount(ref.branch, minlength=ref.n_branches)
    return np.bincount(ref.branch[hit], minlength=ref.n_branches) >= DETECTED_FRACTION * total


def _digest(gt: np.ndarray) -> tuple[str, tuple[slice, ...] | None]:
    box = bounding_box(gt)
    h = hashlib.blake2b(repr((gt.shape, box)).encode(), digest_size=16)
    if box is not None:
        h.update(np.packbits(gt[box] > 0).tobytes())
    return h.hexdigest(), box


def reference_for(gt: np.ndarray) -> AirwayReference:
    """Prepared reference of ``gt``, from a small cache keyed by the mask's content."""
    key, _ = _digest(gt)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    ref = AirwayReference.from_mask(gt)
    _CACHE[key] = ref
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return ref


def _array(x: Volume | np.ndarray) -> np.ndarray:
    return x.array if isinstance(x, Volume) else np.asarray(x)


def airway_metrics(
    pred: Volume | np.ndarray,
    gt: Volume | np.ndarray | AirwayReference,
    spacing: tuple[float, float, float] | None = None,
) -> dict:
    """ATM'22 metrics of ``pred`` against ``gt`` (binary, same grid), plus counts and volumes.

    ``spacing`` (i, j, k, mm) only adds volumes in ml; a ``Volume`` brings its own.
    """
    if spacing is None:
        spacing = next((v.spacing for v in (pred, gt) if isinstance(v, Volume)), None)
    ref = gt if isinstance(gt, AirwayReference) else reference_for(_array(gt))
    p = _array(pred)
    if tuple(p.shape[:3]) != ref.shape:
        raise InputError("prediction", f"grid {tuple(p.shape)} differs from the ground truth's {ref.shape}")
    pbox = bounding_box(p)
    boxes = [ref.box] if pbox is None else [ref.box, pbox]
    box = tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))
    pred_crop = np.ascontiguousarray(p[box] > 0)
    raw_voxels = int(np.count_nonzero(pred_crop))
    lcc = largest_in_crop(pred_crop) if raw_voxels else pred_crop
    gt_crop = np.zeros(lcc.shape, dtype=bool)
    gt_crop[tuple(slice(r.start - b.start, r.stop - b.start) for r, b in zip(ref.box, box))] = ref.mask
    counts = confusion(lcc, gt_crop, total=int(np.prod(ref.shape)))
    result: dict = overlap_from_counts(counts)

    offset = np.array([s.start for s in box])
    local = ref.skeleton - offset
    hit = lcc[tuple(local.T)] if len(local) else np.zeros(0, dtype=bool)
    detected = int(np.count_nonzero(detected_branches(ref, hit)))
    result["td"] = float(hit.mean()) if hit.size else 1.0
    result["bd"] = detected / ref.n_branches if ref.n_branches else 1.0
    result.update(
        gt_branches=ref.n_branches,
        detected_branches=detected,
        gt_skeleton_voxels=len(local),
        pred_voxels=raw_voxels,
        pred_voxels_outside_largest=raw_voxels - counts["tp"] - counts["fp"],
        **counts,
    )
    if spacing is not None:
        ml = float(np.prod(spacing)) / 1000.0
        result["gt_volume_ml"] = round(int(ref.mask.sum()) * ml, 3)
        result["pred_volume_ml"] = round((counts["tp"] + counts["fp"]) * ml, 3)
    return result


def aggregate(results: list[dict]) -> dict[str, dict[str, float]]:
    """Mean and (population) standard deviation of every numeric metric over cases."""
    keys = [k for k in (results[0] if results else {}) if all(isinstance(r.get(k), (int, float)) for r in results)]
    out = {}
    for key in keys:
        values = np.array([float(r[key]) for r in results])
        out[key] = {"mean": float(values.mean()), "std": float(values.std()), "n": len(values)}
    return out
