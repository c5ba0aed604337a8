"""Grid operations used before inference: resampling, intensity windowing, cropping and padding.

All functions return new ``Volume`` objects whose geometry stays physically
correct (origin moved with a crop or pad, extent and centre kept by a resample).
Bounding boxes are tuples of slices in array order ``(k, j, i)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .volume import Volume

BBox = tuple[slice, slice, slice]

_INTERPOLATORS = {0: "sitkNearestNeighbor", 1: "sitkLinear", 3: "sitkBSpline"}


def _interpolator(order: int):
    import SimpleITK as sitk

    if order not in _INTERPOLATORS:
        raise ValueError(f"interpolation order must be one of {sorted(_INTERPOLATORS)}, got {order}")
    return getattr(sitk, _INTERPOLATORS[order])


def _sitk_resample(volume: Volume, size, spacing, origin, direction, order: int, default_value: float) -> Volume:
    """Resample onto the given grid with an identity transform (same physical frame)."""
    import SimpleITK as sitk

    array = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
    image = Volume(array, volume.spacing, volume.origin, volume.direction).to_sitk()
    if order == 0:
        pixel = image.GetPixelID()
    elif volume.array.dtype == np.float64:
        pixel = sitk.sitkFloat64
    else:
        pixel = sitk.sitkFloat32  # interpolated values are not integers
    out = sitk.Resample(
        image,
        [int(n) for n in size],
        sitk.Transform(),
        _interpolator(order),
        [float(o) for o in origin],
        [float(s) for s in spacing],
        [float(d) for d in np.asarray(direction).ravel()],
        float(default_value),
        pixel,
    )
    result = sitk.GetArrayFromImage(out)
    if volume.array.dtype == bool:
        result = result.astype(bool)
    return Volume(result, spacing, origin, np.asarray(direction, dtype=float), volume.name)


def resample(
    volume: Volume,
    spacing: float | Sequence[float],
    order: int = 1,
    default_value: float = 0.0,
) -> Volume:
    """Resample to ``spacing`` (mm, ``i, j, k`` order; one number for isotropic) keeping extent and centre.

    The new grid has ``round(size * old / new)`` voxels per axis (at least 1)
    and the same physical centre and direction, so the field of view changes by
    less than one new voxel. ``order``: 0 nearest (labels keep their dtype),
    1 linear, 3 B-spline (both give float32). Points outside get ``default_value``.
    """
    new_spacing = np.broadcast_to(np.asarray(spacing, dtype=float), (3,)).copy()
    if np.any(new_spacing <= 0):
        raise ValueError(f"spacing must be positive, got {tuple(new_spacing)}")
    old_spacing = np.asarray(volume.spacing)
    old_size = np.asarray(volume.size_ijk, dtype=float)
    new_size = np.maximum(1, np.round(old_size * old_spacing / new_spacing)).astype(int)
    centre = volume.index_to_physical((old_size - 1) / 2)
    origin = centre - volume.direction @ (new_spacing * (new_size - 1) / 2)
    return _sitk_resample(volume, new_size, new_spacing, origin, volume.direction, order, default_value)


def resample_to(volume: Volume, reference: Volume, order: int = 1, default_value: float = 0.0) -> Volume:
    """Resample ``volume`` onto ``reference``'s grid (shape, spacing, origin, direction); physical points match."""
    out = _sitk_resample(
        volume, reference.size_ijk, reference.spacing, reference.origin, reference.direction, order, default_value
    )
    out.spacing, out.origin = reference.spacing, reference.origin  # exact copies, not float round trips
    return out


def window(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip to ``[low, high]`` then scale linearly to float32 ``[0, 1]`` (e.g. CT lung window -1000..400 HU)."""
    if not high > low:
        raise ValueError(f"window needs high > low, got [{low}, {high}]")
    out = np.clip(np.asarray(array, dtype=np.float32), low, high)
    out -= np.float32(low)
    out /= np.float32(high - low)
    return out


def _normalise(bbox: Sequence[slice], shape: tuple[int, ...]) -> list[tuple[int, int]]:
    if len(bbox) != 3:
        raise ValueError(f"bounding box needs 3 slices (k, j, i), got {len(bbox)}")
    bounds = []
    for s, n in zip(bbox, shape):
        start, stop, step = s.indices(n)
        if step != 1:
            raise ValueError("bounding box slices must have step 1")
        if stop <= start:
            raise ValueError(f"empty bounding box {tuple(bbox)} for shape {shape}")
        bounds.append((start, stop))
    return bounds


def crop(volume: Volume, bbox: Sequence[slice]) -> Volume:
    """The sub-volume ``array[bbox]`` (slices in ``k, j, i`` order) with its origin moved to its first voxel."""
    bounds = _normalise(bbox, volume.shape)
    (k0, k1), (j0, j1), (i0, i1) = bounds
    origin = volume.index_to_physical(np.array([i0, j0, k0], dtype=float))
    array = volume.array[k0:k1, j0:j1, i0:i1].copy()
    return Volume(array, volume.spacing, tuple(origin), volume.direction.copy(), volume.name)


def bounding_box(mask: np.ndarray, margin_voxels: int | Sequence[int] = 0) -> BBox | None:
    """Smallest slices ``(k, j, i)`` holding every non-zero voxel, grown by ``margin_voxels`` and clipped.

    ``margin_voxels`` is one number or three in array order ``(k, j, i)``.
    Returns ``None`` for an all-zero mask.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3-D, got shape {mask.shape}")
    margin = np.broadcast_to(np.asarray(margin_voxels, dtype=int), (3,))
    slices = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=other))
        if hits.size == 0:
            return None
        start = max(0, int(hits[0]) - int(margin[axis]))
        stop = min(mask.shape[axis], int(hits[-1]) + 1 + int(margin[axis]))
        slices.append(slice(start, stop))
    return tuple(slices)  # type: ignore[return-value]


def pad_to(volume: Volume, shape: Sequence[int], value: float = 0.0, center: bool = False) -> Volume:
    """Pad the array up to at least ``shape`` (array order ``k, j, i``) with ``value``.

    Axes already as large are left alone (never cropped). Padding goes at the
    end of each axis, or split evenly with ``center=True`` (then the origin
    moves back by the voxels added in front).
    """
    if len(shape) != 3:
        raise ValueError(f"shape needs 3 values (k, j, i), got {tuple(shape)}")
    extra = [max(0, int(n) - s) for n, s in zip(shape, volume.shape)]
    before = [e // 2 for e in extra] if center else [0, 0, 0]
    widths = [(b, e - b) for b, e in zip(before, extra)]
    if volume.array.ndim == 4:
        widths.append((0, 0))
    array = np.pad(volume.array, widths, mode="constant", constant_values=value)
    k0, j0, i0 = before
    origin = volume.index_to_physical(np.array([-i0, -j0, -k0], dtype=float))
    return Volume(array, volume.spacing, tuple(origin), volume.direction.copy(), volume.name)


CT_PADDING_BELOW_HU = -1500.0  # scanners mark voxels outside the reconstruction circle with -2000, -2048, -3024 ...
CT_AIR_HU = -1024.0


def padding_as_air(array: np.ndarray) -> np.ndarray:
    """``array`` (CT in HU) with scanner padding (below ``CT_PADDING_BELOW_HU``) set to air; the same array
    when there is none."""
    padding = array < CT_PADDING_BELOW_HU
    return np.where(padding, np.asarray(CT_AIR_HU, dtype=array.dtype), array) if padding.any() else array


def fill_ct_padding(volume: Volume) -> Volume:
    """``volume`` with voxels outside the reconstruction field of view (padding values far below air) set to air.

    Real CT series store the corners outside the scanner's reconstruction circle as -2000 / -2048 / -3024;
    left as they are they would dominate intensity statistics and count as a separate tissue."""
    filled = padding_as_air(volume.array)
    return volume if filled is volume.array else volume.with_array(filled)
