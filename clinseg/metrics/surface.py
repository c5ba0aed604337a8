"""Surface distances in mm between two binary masks on an (anisotropic) voxel grid.

Definitions used here:

* Surface voxels: foreground voxels with at least one background 6-neighbour (the mask minus its erosion by the
  6-connected cross); voxels on the array's edge count as surface (outside the grid is background).
* Directed distances: for each surface voxel of one mask, the Euclidean distance in mm from its centre to the
  nearest surface-voxel centre of the other (``scipy.ndimage.distance_transform_edt`` with ``sampling`` = spacing
  in array order k, j, i).
* HD: the larger of the two directed maxima. HD95: the 95th percentile (numpy's linear interpolation) of the two
  directed distance sets pooled together (MedPy's definition; MONAI instead takes the larger of the two directed
  95th percentiles, which is >= the pooled value). ASD: the mean of the pooled distances (average symmetric
  surface distance, every surface voxel weighted equally).
* Surface Dice at tolerance t (Nikolov et al. 2018): the surface area of both masks lying within t of the other
  surface, over the total area of both. Area is approximated per surface voxel by its faces exposed to background
  (a face normal to array axis a has area prod(spacing) / spacing[a]), distances as above (voxel centres).

Empty masks: both empty gives HD = HD95 = ASD = 0.0 and surface Dice 1.0 (perfect agreement, as overlap.py's Dice
of two empty masks); exactly one empty gives inf distances and surface Dice 0.0. Nothing raises for empty inputs.

Everything runs on the union bounding box of the two masks plus one voxel, so a full-size CT costs what the
masks' extent costs (the nearest surface voxel always lies inside that box).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..volume import Volume
from .overlap import union_box

_CROSS = ndimage.generate_binary_structure(3, 1)

Mask = Volume | np.ndarray
Spacing = tuple[float, float, float]


def as_mask_and_spacing(
    pred: Mask, ref: Mask, spacing: Spacing | None
) -> tuple[np.ndarray, np.ndarray, Spacing]:
    """Raw arrays of two masks of one shape and the spacing (i, j, k) mm, taken from a Volume when not given."""
    if spacing is None:
        source = next((v for v in (ref, pred) if isinstance(v, Volume)), None)
        if source is None:
            raise ValueError("spacing is required for plain arrays")
        spacing = source.spacing
    p = pred.array if isinstance(pred, Volume) else np.asarray(pred)
    r = ref.array if isinstance(ref, Volume) else np.asarray(ref)
    if p.shape != r.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {r.shape}")
    if p.ndim != 3 or len(spacing) != 3:
        raise ValueError(f"expected 3-D masks and 3 spacings, got {p.ndim}-D and {len(spacing)}")
    return p, r, tuple(float(s) for s in spacing)


def padded_union_box(pred: np.ndarray, ref: np.ndarray, pad: int = 1) -> tuple[slice, ...] | None:
    """Union bounding box of two arrays grown by ``pad`` voxels (clipped to the grid); None when both are empty."""
    box = union_box(pred, ref)
    if box is None:
        return None
    return tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(box, pred.shape))


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Boolean array of the mask's surface voxels (foreground with a background 6-neighbour)."""
    mask = np.asarray(mask, bool)
    return mask & ~ndimage.binary_erosion(mask, structure=_CROSS, border_value=0)


def exposed_area(mask: np.ndarray, spacing_kji: tuple[float, float, float]) -> np.ndarray:
    """Per voxel, the area (mm^2) of its faces that touch background or the grid's edge (0 off the surface)."""
    mask = np.asarray(mask, bool)
    padded = np.pad(mask, 1)
    core = tuple(slice(1, -1) for _ in range(3))
    area = np.zeros(mask.shape, float)
    face = np.prod(spacing_kji) / np.asarray(spacing_kji, float)
    for axis in range(3):
        for step in (-1, 1):
            neighbour = list(core)
            neighbour[axis] = slice(1 + step, padded.shape[axis] - 1 + step)
            area += face[axis] * (mask & ~padded[tuple(neighbour)])
    return area


@dataclass(frozen=True)
class SurfaceDistances:
    """Directed surface distances (mm) of both masks and the exposed area (mm^2) of each surface voxel."""

    pred_to_ref: np.ndarray
    ref_to_pred: np.ndarray
    pred_area: np.ndarray
    ref_area: np.ndarray

    @property
    def n_empty(self) -> int:
        """How many of the two masks are empty (0, 1 or 2)."""
        return int(self.pred_area.size == 0) + int(self.ref_area.size == 0)

    def _pooled(self) -> np.ndarray:
        return np.concatenate([self.pred_to_ref, self.ref_to_pred])

    def _distance(self, statistic) -> float:
        if self.n_empty:
            return 0.0 if self.n_empty == 2 else float("inf")
        return float(statistic(self._pooled()))

    def hd(self) -> float:
        """Symmetric Hausdorff distance (mm)."""
        return self._distance(np.max)

    def hd_percentile(self, percentile: float = 95.0) -> float:
        """``percentile`` of the pooled directed distances (mm)."""
        return self._distance(lambda d: np.percentile(d, percentile))

    def asd(self) -> float:
        """Average symmetric surface distance (mm)."""
        return self._distance(np.mean)

    def surface_dice(self, tolerance_mm: float) -> float:
        """Area fraction of both surfaces within ``tolerance_mm`` of the other."""
        if self.n_empty:
            return 1.0 if self.n_empty == 2 else 0.0
        within = self.pred_area[self.pred_to_ref <= tolerance_mm].sum() + self.ref_area[
            self.ref_to_pred <= tolerance_mm
        ].sum()
        return float(within / (self.pred_area.sum() + self.ref_area.sum()))


def _directed(from_surface: np.ndarray, to_surface: np.ndarray, spacing_kji: tuple[float, ...]) -> np.ndarray:
    if not from_surface.any() or not to_surface.any():
        return np.zeros(0)
    field = ndimage.distance_transform_edt(~to_surface, sampling=spacing_kji)
    return field[from_surface]


def surface_distances(pred: Mask, ref: Mask, spacing: Spacing | None = None) -> SurfaceDistances:
    """Directed distances between the surfaces of two same-shape masks; ``spacing`` is (i, j, k) mm."""
    p, r, spacing = as_mask_and_spacing(pred, ref, spacing)
    box = padded_union_box(p, r)
    if box is None:
        empty = np.zeros(0)
        return SurfaceDistances(empty, empty, empty, empty)
    p, r = np.ascontiguousarray(p[box] > 0), np.ascontiguousarray(r[box] > 0)
    kji = tuple(spacing[::-1])
    sp, sr = surface_voxels(p), surface_voxels(r)
    return SurfaceDistances(
        pred_to_ref=_directed(sp, sr, kji),
        ref_to_pred=_directed(sr, sp, kji),
        pred_area=exposed_area(p, kji)[sp],
        ref_area=exposed_area(r, kji)[sr],
    )


def surface_metrics(
    pred: Mask, ref: Mask, spacing: Spacing | None = None, tolerance_mm: float = 2.0
) -> dict[str, float]:
    """HD, HD95, ASD (mm) and surface Dice at ``tolerance_mm`` from one pair of distance transforms."""
    d = surface_distances(pred, ref, spacing)
    return {
        "hd_mm": d.hd(),
        "hd95_mm": d.hd_percentile(95.0),
        "asd_mm": d.asd(),
        "surface_dice": d.surface_dice(tolerance_mm),
    }


def hausdorff(pred: Mask, ref: Mask, spacing: Spacing | None = None, percentile: float | None = None) -> float:
    """Symmetric Hausdorff distance (mm); ``percentile`` (e.g. 95) of the pooled directed distances instead of max."""
    d = surface_distances(pred, ref, spacing)
    return d.hd() if percentile is None else d.hd_percentile(percentile)


def hd95(pred: Mask, ref: Mask, spacing: Spacing | None = None) -> float:
    """95th percentile of the pooled directed surface distances (mm)."""
    return surface_distances(pred, ref, spacing).hd_percentile(95.0)


def average_surface_distance(pred: Mask, ref: Mask, spacing: Spacing | None = None) -> float:
    """Average symmetric surface distance (mm): mean of both directed distance sets pooled."""
    return surface_distances(pred, ref, spacing).asd()


def surface_dice(pred: Mask, ref: Mask, spacing: Spacing | None = None, tolerance_mm: float = 2.0) -> float:
    """Fraction of both surfaces' (face-weighted) area within ``tolerance_mm`` of the other surface."""
    return surface_distances(pred, ref, spacing).surface_dice(tolerance_mm)
