"""Connected components of binary masks: largest component, hole filling, island report.

All operations run on the mask's bounding box (plus one background voxel) and
paste the answer back, so a 512x512x700 CT with a small foreground costs what
the foreground costs.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import fill_voids
import numpy as np

from ..volume import Volume


def bounding_box(mask: np.ndarray, pad: int = 0) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding every nonzero voxel, grown by ``pad`` (clipped); None when empty."""
    slices = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(np.any(mask, axis=others))
        if hit.size == 0:
            return None
        slices.append(slice(max(int(hit[0]) - pad, 0), min(int(hit[-1]) + 1 + pad, mask.shape[axis])))
    return tuple(slices)


def _raw(mask: Volume | np.ndarray) -> np.ndarray:
    return mask.array if isinstance(mask, Volume) else np.asarray(mask)


def _crop(mask: Volume | np.ndarray, pad: int = 0) -> tuple[tuple[slice, ...] | None, np.ndarray | None]:
    """Box of the nonzero voxels and the binary (> 0) crop, without a full-size temporary."""
    raw = _raw(mask)
    box = bounding_box(raw, pad)
    return box, (None if box is None else np.ascontiguousarray(raw[box] > 0))


def largest_component(mask: Volume | np.ndarray, connectivity: int = 26) -> np.ndarray:
    """Boolean array keeping only the largest ``connectivity``-connected component (6, 18 or 26)."""
    raw = _raw(mask)
    out = np.zeros(raw.shape[:3], dtype=bool)
    box, crop = _crop(raw)
    if box is not None and crop.any():
        out[box] = largest_in_crop(crop, connectivity)
    return out


def largest_in_crop(crop: np.ndarray, connectivity: int = 26) -> np.ndarray:
    """The largest component of a small binary array (no bounding-box step)."""
    return cc3d.largest_k(crop.astype(np.uint8, copy=False), k=1, connectivity=connectivity) > 0


def component_near(
    mask: Volume | np.ndarray, point_kji: np.ndarray, radius_vox: tuple[int, int, int], connectivity: int = 26
) -> np.ndarray:
    """Boolean array keeping the largest component that reaches into the box of ``radius_vox`` around
    ``point_kji`` (e.g. the trachea seed); the largest component overall when none does."""
    raw = _raw(mask)
    out = np.zeros(raw.shape[:3], dtype=bool)
    box, crop = _crop(raw)
    if box is None or not crop.any():
        return out
    labels = cc3d.connected_components(crop.astype(np.uint8, copy=False), connectivity=connectivity)
    near = tuple(
        slice(max(int(p) - r - b.start, 0), max(int(p) + r + 1 - b.start, 0))
        for p, r, b in zip(point_kji, radius_vox, box)
    )
    candidates = np.unique(labels[near])
    candidates = candidates[candidates > 0]
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    keep = candidates[np.argmax(counts[candidates])] if candidates.size else int(np.argmax(counts))
    out[box] = labels == keep
    return out


def fill_holes(mask: Volume | np.ndarray) -> np.ndarray:
    """Boolean array with every enclosed background cavity filled (3-D, fill_voids)."""
    raw = _raw(mask)
    out = np.zeros(raw.shape[:3], dtype=bool)
    # The one-voxel pad keeps cavities that touch the box edge connected to the outside, as in the full grid.
    box, crop = _crop(raw, pad=1)
    if box is not None:
        out[box] = fill_voids.fill(crop, in_place=False)
    return out


@dataclass
class Island:
    """One connected component: size and centre of mass (LPS mm when the mask is a Volume)."""

    voxels: int
    volume_mm3: float
    centroid_lps: tuple[float, float, float]

    def as_dict(self) -> dict:
        return {"voxels": self.voxels, "volume_mm3": self.volume_mm3, "centroid_lps": list(self.centroid_lps)}


def component_report(
    mask: Volume | np.ndarray, spacing: tuple[float, float, float] | None = None, connectivity: int = 26
) -> list[Island]:
    """Every component of ``mask``, largest first (index 0 is the main body, the rest are islands).

    A ``Volume`` gives LPS centroids; a plain array is placed with ``spacing``
    (i, j, k order, default 1 mm) at the origin with identity direction.
    """
    return labelled_components(mask, spacing, connectivity)[2]


def labelled_components(
    mask: Volume | np.ndarray, spacing: tuple[float, float, float] | None = None, connectivity: int = 26
) -> tuple[tuple[slice, ...] | None, np.ndarray | None, list[Island], list[int]]:
    """Bounding box, component labels inside it, islands largest first and their label values (same order)."""
    volume = mask if isinstance(mask, Volume) else Volume(np.asarray(mask), spacing or (1.0, 1.0, 1.0))
    box, crop = _crop(volume)
    if box is None or not crop.any():
        return None, None, [], []
    labels = cc3d.connected_components(crop.astype(np.uint8), connectivity=connectivity)
    stats = cc3d.statistics(labels)
    counts = np.asarray(stats["voxel_counts"])[1:]
    centroids_kji = np.asarray(stats["centroids"])[1:] + np.array([s.start for s in box], dtype=float)
    centroids = volume.index_to_physical(centroids_kji[:, ::-1])
    voxel_mm3 = float(np.prod(volume.spacing))
    order = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    islands = [
        Island(int(counts[i]), float(counts[i]) * voxel_mm3, tuple(float(v) for v in centroids[i])) for i in order
    ]
    return box, labels, islands, [i + 1 for i in order]
