"""Where nodules are searched for: each lung closed with a large ball, so that juxta-pleural nodules
(solid tissue touching the chest wall, hence missing from an air-threshold lung mask) fall inside it."""

from __future__ import annotations

import edt
import fill_voids
import numpy as np

from ...anatomy.lungs import ChestMasks

CLOSE_MM = 17.0  # > the radius of the largest (30 mm) nodule, which a closing must bridge
COARSE_MM = 1.5  # the closing runs on a grid of about this step (the lung masks' own)


def _repeat_to(mask: np.ndarray, stride: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    out = mask
    for axis, s in enumerate(stride):
        out = np.repeat(out, s, axis=axis) if s > 1 else out
    out = np.pad(out, [(0, max(0, n - o)) for n, o in zip(shape, out.shape)], mode="edge")
    return out[: shape[0], : shape[1], : shape[2]]


def close_mask(mask: np.ndarray, spacing_kji: tuple[float, ...], radius_mm: float) -> np.ndarray:
    """Morphological closing with a ball of ``radius_mm`` (two distance transforms), holes filled."""
    grown = mask | (edt.edt(~mask, anisotropy=spacing_kji, black_border=False) <= radius_mm)
    closed = edt.edt(grown, anisotropy=spacing_kji, black_border=False) > radius_mm
    return fill_voids.fill(closed | mask, in_place=False)


def search_region(masks: ChestMasks, spacing_ijk: tuple[float, float, float],
                  close_mm: float = CLOSE_MM) -> np.ndarray:
    """bool ``[k, j, i]``: the lungs, each closed on its own (a closing of both would bridge the
    mediastinum), within the body."""
    spacing_kji = tuple(float(s) for s in spacing_ijk[::-1])
    stride = tuple(max(1, round(COARSE_MM / s)) for s in spacing_kji)
    coarse = masks.lungs[:: stride[0], :: stride[1], :: stride[2]]
    coarse_spacing = tuple(s * st for s, st in zip(spacing_kji, stride))
    closed = np.zeros(coarse.shape, bool)
    # Each lung is closed in its bounding box grown by more than the ball: the box's rim is then background,
    # so distances, the closing and the filled holes inside it are those of the whole grid, at a fraction of
    # the cost.
    margin = np.ceil(close_mm / np.asarray(coarse_spacing)).astype(int) + 2
    for label in (1, 2):
        lung = coarse == label
        where = np.argwhere(lung)
        if where.size:
            box = tuple(slice(int(a), int(b)) for a, b in zip(np.maximum(where.min(0) - margin, 0),
                                                            where.max(0) + 1 + margin))
            closed[box] |= close_mask(lung[box], coarse_spacing, close_mm)
    region = _repeat_to(closed, stride, masks.lungs.shape) | (masks.lungs > 0)
    return region & masks.body
