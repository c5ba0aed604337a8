"""Head-to-foot plausibility of stage 1's organs: each organ only within the band of heights (relative to an
anchor organ's centroid, LPS z in mm) where the training masks put it.

Stage 1 sees 32 x 48 x 48 cuboids, mostly centred on organs, and on scans reaching the chest it hallucinates
parotids or an eye among the shoulders; keeping the largest component then keeps the wrong one. The card op
``z_band`` (``{"anchor": "Brain", "bands_mm": {"Eye L": [low, high], ...}}``, ``null`` for an open end) zeroes
an organ's probability outside its band before the arg-max.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ...volume import Volume


def height_map(grid: Volume) -> np.ndarray:
    """LPS z (mm) of every voxel centre of ``grid`` (broadcast shape; full only for oblique grids)."""
    k, j, i = (np.arange(n, dtype=np.float32) for n in grid.shape)
    row = grid.direction[2] * np.asarray(grid.spacing)
    return (grid.origin[2] + row[0] * i[None, None, :] + row[1] * j[None, :, None] + row[2] * k[:, None, None])


def apply_z_bands(prob: np.ndarray, grid: Volume, anchor_value: int,
                  bands: Mapping[int, tuple[float | None, float | None]]) -> float | None:
    """Zero each banded class of ``prob`` (C x D x H x W on ``grid``) outside its band around the anchor's
    centroid height, in place; returns that height, or None (nothing changed) when the anchor is absent."""
    anchor = np.argwhere(prob.argmax(0) == anchor_value)
    if not len(anchor):
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
