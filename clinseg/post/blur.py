"""What the scanner's blur makes of a small uniform sphere: its core read and the threshold that gives back its size.

A sphere a few voxels across loses its peak to the reconstruction kernel and the slice profile, so a small solid
nodule's core can read as low as a part-solid one's, and half its contrast is no longer its edge. A sphere of the
given radius is blurred as a standard kernel, the slice profile and ``segment.py``'s smoothing would blur it, on a
grid three times finer than the CT's, and read as ``segment.py`` reads a candidate: the upper quartile of the
voxels near the centre (averaged over where the centre falls within a voxel), and the level above which the
blurred sphere holds its own volume. Both as shares of the sphere's contrast over its background; in mm, so they
carry to any sampling (a kernel sharper or softer than the standard moves them a little).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

IN_PLANE_PSF_MM = 0.55  # point-spread sigma of a standard chest reconstruction kernel
SLICE_PSF_SHARE = 0.42  # through-plane sigma / slice spacing (slice profile's FWHM about one slice)
SUPERSAMPLE = 3  # sub-voxel samples per axis (the edge level's count, the core read's centre offsets)
CORE_PERCENTILE = 75  # a candidate's core read: this percentile of the voxels near its centre
LARGEST_MM = 8.0  # past this radius the shares hardly change (core 1, edge within 0.04 of half)


def scanner_sigma_mm(spacing: np.ndarray) -> np.ndarray:
    """Per-axis (k, j, i) point-spread sigma in mm of a grid with ``spacing`` (k, j, i) in mm."""
    return np.array([SLICE_PSF_SHARE * spacing[0], IN_PLANE_PSF_MM, IN_PLANE_PSF_MM])


def _field(radius_mm: float, spacing: tuple[float, float, float],
           smooth_vox: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(blurred sphere, distance from its centre, fine samples each side) on a grid SUPERSAMPLE times finer."""
    sp = np.asarray(spacing)
    fine = sp / SUPERSAMPLE
    sigma_mm = np.sqrt(scanner_sigma_mm(sp) ** 2 + (np.asarray(smooth_vox) * sp) ** 2)
    half = np.ceil((radius_mm + 4 * sigma_mm.max() + sp) / sp).astype(int) * SUPERSAMPLE
    axes = [(np.arange(2 * h + 1) - h) * s for h, s in zip(half, fine)]
    dist = np.sqrt(axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2)
    # A CT value is the object blurred by the kernel and the slice profile, read at the voxel centre (the
    # detector's and the slice's extent are in that blur), then smoothed as segment.py smooths.
    field = ndimage.gaussian_filter((dist <= radius_mm).astype(np.float32), sigma_mm / fine, mode="constant")
    return field, dist, half


@lru_cache(maxsize=1024)
def _core(radius_mm: float, spacing: tuple[float, float, float], smooth_vox: tuple[float, float, float],
          read_mm: float) -> float:
    field, dist, half = _field(radius_mm, spacing, smooth_vox)
    n = SUPERSAMPLE
    # Averaged over where the centre falls within a voxel: a coarse grid's read depends on it.
    reads = []
    for offset in np.ndindex(n, n, n):
        sub = tuple(slice((h + o) % n, None, n) for h, o in zip(half, offset))
        near = dist[sub] <= read_mm
        if near.any():
            reads.append(np.percentile(field[sub][near], CORE_PERCENTILE))
    return float(np.mean(reads))


@lru_cache(maxsize=1024)
def _edge(radius_mm: float, spacing: tuple[float, float, float], smooth_vox: tuple[float, float, float]) -> float:
    field, dist, _ = _field(radius_mm, spacing, smooth_vox)
    count = int(np.count_nonzero(dist <= radius_mm))  # the sampled sphere's own volume, in step with its field
    ranked = np.partition(-field.ravel(), (count - 1, count))
    return -float(ranked[count - 1] + ranked[count]) / 2


def _key(radius_mm: float, spacing: np.ndarray, smooth_vox: np.ndarray) -> tuple:
    radius_mm = min(float(radius_mm), LARGEST_MM)
    step = max(0.05, 0.03 * radius_mm)  # 0.05 mm or 3 %: the caches hold few sizes
    return (round(radius_mm / step) * step, tuple(float(s) for s in spacing),
            tuple(round(float(s), 3) for s in smooth_vox))


def sphere_core(radius_mm: float, spacing: np.ndarray, smooth_vox: np.ndarray, read_mm: float) -> float:
    """A blurred uniform sphere's core read as a share of its contrast: the upper quartile of the voxels within
    ``read_mm`` of its centre (``spacing``, ``smooth_vox``: the CT grid's and segment.py's smoothing, k, j, i)."""
    return _core(*_key(radius_mm, spacing, smooth_vox), round(float(read_mm) * 20) / 20)


def sphere_edge(radius_mm: float, spacing: np.ndarray, smooth_vox: np.ndarray) -> float:
    """The level (share of the contrast) above which a blurred uniform sphere holds as many voxels as it has voxel
    centres: where to threshold it to get its size back."""
    return _edge(*_key(radius_mm, spacing, smooth_vox))



LUNG_HU, TISSUE_HU = -850.0, 30.0  # aerated lung and solid soft tissue: a solid nodule's background and body


@lru_cache(maxsize=1024)
def _share_above(radius_mm: float, spacing: tuple[float, float, float], smooth_vox: tuple[float, float, float],
                 level: float) -> float:
    field, _, _ = _field(radius_mm, spacing, smooth_vox)
    kept = field >= _edge(radius_mm, spacing, smooth_vox)
    return float(np.count_nonzero(field[kept] > level)) / max(int(np.count_nonzero(kept)), 1)


def solid_sphere_share(radius_mm: float, spacing: np.ndarray, hu: float) -> float:
    """The share of a blurred solid sphere (soft tissue in lung; its mask at the level that keeps its volume) that
    reads above ``hu``: about 1 for a large nodule, less for a small one, whose rim and even core blur below it.
    ``spacing``: the CT grid's, k, j, i."""
    level = round((hu - LUNG_HU) / (TISSUE_HU - LUNG_HU), 3)
    return _share_above(*_key(radius_mm, spacing, np.zeros(3)), level)
