"""Head-to-foot plausibility of stage 1's organs: each organ only within the band of heights (relative to an
anchor organ's centroid, LPS z in mm) where the training masks put it.

Stage 1 sees 32 x 48 x 48 cuboids, mostly centred on organs, and on scans reaching the chest it hallucinates
parotids or an eye among the shoulders; keeping the largest component then keeps the wrong one. The card op
``z_band`` (``{"anchor": "Brain", "bands_mm": {"Eye L": [low, high], ...}}``, ``null`` for an open end) zeroes
an organ's probability outside its band before the arg-max.

The bands were learnt around whole brains (816-1765 ml in the real masks), so they apply only when the anchor's
largest component is at least ``min_anchor_ml``: on a neck scan a stray anchor voxel would otherwise erase
every organ (the lungs included) outside the bands of a brain that is not there.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ...post.components import largest_component
from ...volume import Volume

MIN_ANCHOR_ML = 600.0


def height_map(grid: Volume) -> np.ndarray:
    """LPS z (mm) of every voxel centre of ``grid`` (broadcast shape; full only for oblique grids)."""
    k, j, i = (np.arange(n, dtype=np.float32) for n in grid.shape)
    row = grid.direction[2] * np.asarray(grid.spacing)
    return (grid.origin[2] + row[0] * i[None, None, :] + row[1] * j[None, :, None] + row[2] * k[:, None, None])


def apply_z_bands(prob: np.ndarray, grid: Volume, anchor_value: int,
                  bands: Mapping[int, tuple[float | None, float | None]],
                  min_anchor_ml: float = MIN_ANCHOR_ML) -> float | None:
    """Zero each banded class of ``prob`` (C x D x H x W on ``grid``) outside its band around the centroid height
    of the anchor's largest component, in place; returns that height, or None (nothing changed) when the anchor
    is absent or smaller than ``min_anchor_ml``."""
    found = prob.argmax(0) == anchor_value
    if not found.any():
        return None
    anchor = np.argwhere(largest_component(found))
    if len(anchor) * float(np.prod(grid.spacing)) / 1000.0 < min_anchor_ml:
        return None
    z0 = float(grid.index_to_physical(anchor.mean(0)[::-1])[2])
    rel = height_map(grid) - z0
    for value, (low, high) in bands.items():
        outside = np.zeros(np.broadcast_shapes(rel.shape), bool)
        if low is not None:
            outside |= rel < low
        if high is not None:
            outside |= rel > high
        prob[value] *= ~np.broadcast_to(outside, prob.shape[1:])
    return z0
