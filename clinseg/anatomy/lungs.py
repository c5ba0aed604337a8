"""Threshold-based body and lung masks for any chest CT: used to crop, to check inputs
and as the classical engine's search region. Works on a coarse grid for speed; the
masks are returned on the input grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import fill_voids
import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..geometry import LEFT, SUPERIOR, array_axis, voxel_volume_mm3
from ..preprocess import CT_PADDING_BELOW_HU
from ..volume import Volume

AIR_HU = -400.0
LUNG_BOX_MARGIN_MM = 10.0  # crop margin around lungs + airways, shared by training and inference
# The largest air region inside the body must hold what lungs hold in a scan of this length: 150 ml, or
# 50 cm^2 per centimetre of superior-inferior extent for a thin slab (a real 15 mm chest slab: 150-200 cm^2
# per lung per slice; sinuses, airways and bowel gas: a few to a few tens of cm^2).
MIN_LUNG_ML = 150.0
MIN_LUNG_CM2 = 50.0


@dataclass
class ChestMasks:
    body: np.ndarray  # bool, input grid
    air_inside: np.ndarray  # bool: lungs + airways (everything air-like inside the body)
    lungs: np.ndarray  # uint8: 0 background, 1 left lung, 2 right lung (airways included)
    stride: tuple[int, int, int]

    @property
    def lung_volume_ml(self) -> float:
        return float(self.lungs.astype(bool).sum())  # caller multiplies by voxel volume


def _coarse_stride(volume: Volume, target_mm: float = 1.5) -> tuple[int, int, int]:
    si, sj, sk = volume.spacing
    return tuple(max(1, int(target_mm // s)) for s in (sk, sj, si))


def _upsample(mask: np.ndarray, stride: tuple[int, int, int], shape: tuple[int, int, int]) -> np.ndarray:
    out = mask
    for axis, s in enumerate(stride):
        if s > 1:
            out = np.repeat(out, s, axis=axis)
    pad = [(0, max(0, n - o)) for n, o in zip(shape, out.shape)]
    out = np.pad(out, pad, mode="edge")
    return out[: shape[0], : shape[1], : shape[2]]


def _close_edges(plane: np.ndarray) -> np.ndarray:
    """``plane`` with each image edge set between the first and last body pixel on it: where the
    reconstruction field of view cuts through the chest wall, the lung opens onto the image edge and
    would otherwise count as air outside the body."""
    closed = plane.copy()
    for edge in (closed[0], closed[-1], closed[:, 0], closed[:, -1]):  # views into ``closed``
        hits = np.flatnonzero(edge)
        if hits.size > 1:
            edge[hits[0] : hits[-1] + 1] = True
    return closed


def _extend_beyond_fov(body: np.ndarray, outside_fov: np.ndarray, axis: int) -> np.ndarray:
    """``body`` continued into the scanner's padding (outside the reconstruction circle) by the nearest pixel
    inside the circle, slice by slice: where the circle cuts through the chest wall the body then reaches the
    image edge, which ``_close_edges`` closes, instead of the lung opening onto the padding as if onto air."""
    body = np.moveaxis(body, axis, 0).copy()
    outside = np.moveaxis(outside_fov, axis, 0)
    previous, nearest = None, None
    for n in range(outside.shape[0]):
        plane = outside[n]
        if not plane.any() or plane.all():
            continue
        if previous is None or not np.array_equal(plane, previous):  # the circle rarely changes between slices
            nearest = ndimage.distance_transform_edt(plane, return_distances=False, return_indices=True)
            previous = plane
        body[n] = body[n][nearest[0], nearest[1]]
    return np.moveaxis(body, 0, axis)


def _fill_slices(mask: np.ndarray, axis: int) -> np.ndarray:
    """Fill holes in every 2-D slice across ``axis`` (closes the body around the lungs
    even where the scan cuts through them at the top or bottom, or at the sides)."""
    moved = np.moveaxis(mask, axis, 0)
    filled = np.empty_like(moved)
    for n in range(moved.shape[0]):
        filled[n] = fill_voids.fill(_close_edges(moved[n]), in_place=False) | moved[n]
    return np.moveaxis(filled, 0, axis)


def _extent_mm(ct: Volume) -> float:
    axis, _ = array_axis(ct, SUPERIOR)
    return float(ct.shape[axis] * ct.spacing[2 - axis])


def min_lung_ml(ct: Volume) -> float:
    """Air a scan of ``ct``'s superior-inferior extent must hold in one region to count as holding lungs:
    ``MIN_LUNG_ML``, or ``MIN_LUNG_CM2`` per centimetre of a thinner slab."""
    return min(MIN_LUNG_ML, MIN_LUNG_CM2 * _extent_mm(ct) / 10.0)


def chest_masks(ct: Volume, subject: str = "CT") -> ChestMasks:
    """Body, inside-air and left/right lung masks of a chest CT (HU; scanner padding below -1500 HU marks
    voxels outside the reconstruction circle, so pass the CT before ``fill_ct_padding``)."""
    stride = _coarse_stride(ct)
    coarse = ct.array[:: stride[0], :: stride[1], :: stride[2]]
    coarse_volume = Volume(coarse, tuple(s * st for s, st in zip(ct.spacing, stride[::-1])), ct.origin, ct.direction)
    sup_axis, _ = array_axis(ct, SUPERIOR)

    tissue = coarse > AIR_HU
    labels, n = cc3d.connected_components(tissue, connectivity=6, return_N=True)
    if n == 0:
        raise InputError(subject, "no body found (all voxels are air-like); is this a CT in HU?")
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    body = labels == int(np.argmax(counts))
    outside_fov = coarse < CT_PADDING_BELOW_HU
    if outside_fov.any():
        body = _extend_beyond_fov(body, outside_fov, sup_axis)
    body = _fill_slices(body, sup_axis) & ~outside_fov

    air_inside = body & ~tissue
    labels, n = cc3d.connected_components(air_inside, connectivity=26, return_N=True)
    voxel_ml = voxel_volume_mm3(coarse_volume) / 1000.0
    counts = np.bincount(labels.ravel()) if n else np.zeros(1, dtype=np.int64)
    counts[0] = 0
    order = np.argsort(counts)[::-1]
    found = 0.0 if n == 0 else float(counts[order[0]] * voxel_ml)
    required = min_lung_ml(ct)
    if found < required:
        extent = _extent_mm(ct)
        raise InputError(subject, f"no lungs in the field of view (largest air region inside the body {found:.0f} ml; "
                                  f"a chest scan {extent:.0f} mm long holds at least {required:.0f} ml of lung)")
    keep = [order[0]] + ([order[1]] if n > 1 and counts[order[1]] > 0.3 * counts[order[0]] else [])
    lungs_any = np.isin(labels, keep)

    lungs = _split_left_right(lungs_any, labels, keep, coarse_volume)
    full = ct.shape
    return ChestMasks(
        body=_upsample(body, stride, full),
        air_inside=_upsample(air_inside, stride, full),
        lungs=_upsample(lungs, stride, full),
        stride=stride,
    )


def _split_left_right(lungs_any: np.ndarray, labels: np.ndarray, keep: list, volume: Volume) -> np.ndarray:
    """1 = left, 2 = right. Two components: by mean LPS x; one (lungs joined by the
    airways or touching anteriorly): split at the mask's mid-sagittal plane."""
    out = np.zeros(lungs_any.shape, dtype=np.uint8)
    left_axis, left_sign = array_axis(volume, LEFT)
    if len(keep) == 2:
        means = []
        for label in keep:
            idx = np.nonzero(labels == label)[left_axis].mean()
            means.append(idx * left_sign)
        left_label, right_label = (keep[0], keep[1]) if means[0] > means[1] else (keep[1], keep[0])
        out[labels == left_label] = 1
        out[labels == right_label] = 2
        return out
    coords = np.nonzero(lungs_any)
    mid = 0.5 * (coords[left_axis].min() + coords[left_axis].max())
    index = np.arange(lungs_any.shape[left_axis]).reshape([-1 if a == left_axis else 1 for a in range(3)])
    is_left = (index > mid) if left_sign > 0 else (index < mid)
    out[lungs_any & is_left] = 1
    out[lungs_any & ~is_left] = 2
    return out


def lung_volume_ml(masks: ChestMasks, ct: Volume) -> float:
    return float(np.count_nonzero(masks.lungs)) * voxel_volume_mm3(ct) / 1000.0


def lung_box(ct: Volume, masks: ChestMasks, margin_mm: float = LUNG_BOX_MARGIN_MM) -> tuple[slice, slice, slice]:
    """Array-order bounding box of lungs + airways grown by ``margin_mm`` (the thesis's lung crop)."""
    from ..preprocess import bounding_box

    margin = [int(np.ceil(margin_mm / s)) for s in ct.spacing[::-1]]
    box = bounding_box(masks.lungs > 0, margin)
    return box if box is not None else tuple(slice(0, n) for n in ct.shape)
