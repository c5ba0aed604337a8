"""Brain extraction on a DWI or T1 image: threshold, keep the deepest component, close and fill.

No atlas and no external tool: on both contrasts the brain is bright and enclosed by a dark skull (and dark
CSF), while the scalp, bright too on T1 and on many DWI scans, lies in a thin shell outside it. The component
of the thresholded image that reaches deepest into the head is therefore the brain. The work is done on a
grid of about 2 mm (block means), which is ample for a mask and keeps the morphology fast on 1 mm scans.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage

from ...volume import Volume

WORK_MM = 2.0
MAX_BRAIN_ML = 1900.0  # above any adult brain with its ventricles


@dataclass(frozen=True)
class _Settings:
    fraction: float  # of the Otsu threshold inside the head
    erode_mm: float  # cuts thin bridges between brain and scalp (optic nerves, partial-volume skull)
    close_mm: float  # closes sulci and fissures so the mask is one solid brain


# On T1 grey matter sits between CSF and white matter, so the threshold is lowered to keep the cortex; the
# scalp's fat is then bright too, hence the deeper erosion, and the wider closing bridges a chronic cavity.
SETTINGS = {"DWI": _Settings(1.0, 3.0, 6.0), "T1": _Settings(0.55, 5.0, 10.0)}


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that maximises the between-class variance of ``values`` (1-D)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist).astype(float)
    mean = np.cumsum(hist * centres)
    w0, w1 = weight[:-1], weight[-1] - weight[:-1]
    valid = (w0 > 0) & (w1 > 0)
    m0 = mean[:-1] / np.maximum(w0, 1)
    m1 = (mean[-1] - mean[:-1]) / np.maximum(w1, 1)
    between = np.where(valid, w0 * w1 * (m0 - m1) ** 2, -1)
    return float(centres[int(np.argmax(between))])


def _ball(radius_mm: float, spacing_kji: np.ndarray) -> np.ndarray:
    r = np.maximum(1, np.round(radius_mm / spacing_kji)).astype(int)
    grids = np.ogrid[tuple(slice(-n, n + 1) for n in r)]
    return sum((g * s / radius_mm) ** 2 for g, s in zip(grids, spacing_kji)) <= 1.0


def _sample(values: np.ndarray) -> np.ndarray:
    return values[:: max(1, values.size // 200000)]


def head_mask(array: np.ndarray) -> np.ndarray:
    """Everything brighter than a fraction of the foreground level, holes filled: the head with its skull."""
    positive = array[array > 0]
    if positive.size == 0:
        return np.zeros(array.shape, bool)
    level = otsu_threshold(_sample(positive))
    return ndimage.binary_fill_holes(ndimage.binary_closing(array > 0.3 * level, iterations=2))


def _block_mean(array: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    shape = [n - n % f for n, f in zip(array.shape, factors)]
    a = array[: shape[0], : shape[1], : shape[2]]
    return a.reshape(shape[0] // factors[0], factors[0], shape[1] // factors[1], factors[1],
                     shape[2] // factors[2], factors[2]).mean(axis=(1, 3, 5))


def _expand(mask: np.ndarray, factors: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    out = mask
    for axis, f in enumerate(factors):
        out = np.repeat(out, f, axis=axis)
    pad = [(0, n - m) for n, m in zip(shape, out.shape)]
    return np.pad(out, pad, mode="edge")


def brain_mask(volume: Volume, contrast: str = "DWI") -> np.ndarray:
    """Binary brain (parenchyma with its ventricles and sulci) of a DWI or T1 image, on its grid."""
    settings = SETTINGS["T1" if contrast.upper() == "T1" else "DWI"]
    spacing_kji = np.asarray(volume.spacing[::-1], float)
    factors = tuple(int(max(1, np.floor(WORK_MM / s))) for s in spacing_kji)
    a = _block_mean(volume.array.astype(np.float32), factors)
    spacing = spacing_kji * factors
    mask = _brain_on_grid(ndimage.gaussian_filter(a, 0.6), spacing, settings)
    return _expand(mask, factors, volume.shape)


def _deepest_piece(bright: np.ndarray, depth: np.ndarray, spacing: np.ndarray, radius_mm: float) -> np.ndarray:
    core = ndimage.binary_erosion(bright, _ball(radius_mm, spacing))
    labels, n = cc3d.connected_components(core.astype(np.uint8), connectivity=6, return_N=True)
    if n == 0:
        return np.zeros(bright.shape, bool)
    deepest = np.asarray(ndimage.maximum(depth, labels, index=np.arange(1, n + 1)))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    # The deepest component, ties (several pieces touching the centre) broken by size.
    chosen = int(np.lexsort((-sizes, -np.round(deepest, 0)))[0]) + 1
    return ndimage.binary_dilation(labels == chosen, _ball(radius_mm, spacing)) & bright


def _brain_on_grid(a: np.ndarray, spacing: np.ndarray, settings: _Settings) -> np.ndarray:
    head = head_mask(a)
    if not head.any():
        return head
    bright = head & (a > settings.fraction * otsu_threshold(_sample(a[head])))
    depth = ndimage.distance_transform_edt(head, sampling=spacing)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    # A brain still joined to the neck or scalp (through the foramen magnum, a thin skull) is too big: erode
    # deeper until the deepest piece has a brain's size.
    for step in range(4):
        radius = settings.erode_mm + 2.0 * step
        brain = _deepest_piece(bright, depth, spacing, radius)
        if brain.sum() * voxel_ml <= MAX_BRAIN_ML:
            break
    pad = tuple(int(n) + 1 for n in np.round(settings.close_mm / spacing))
    closed = ndimage.binary_closing(np.pad(brain, [(p, p) for p in pad]), _ball(settings.close_mm, spacing))
    filled = ndimage.binary_fill_holes(closed[tuple(slice(p, -p) for p in pad)])
    for k in range(filled.shape[0]):  # ventricles open to a slab's edge are still inside the brain
        filled[k] = ndimage.binary_fill_holes(filled[k])
    return filled & head
