"""Left/right assignment of paired organs by the patient's midsagittal plane.

A network's left/right guess for a parotid or an eye is unreliable (it mixes the two), while which side of the
midline an organ lies on is not. So each pair's probabilities are merged and handed back by side: patient left
is +x in LPS. The midsagittal plane ``x = a + b*y + c*z`` (LPS mm, so a turned or tilted head is followed) is
fitted through the row-by-row centroids of the midline organs stage 1 finds reliably (brain, brainstem, spinal cord
and canal, mandible), with outliers dropped; without enough of them, through those of the body.

Pairs are read from the model's labels (same SNOMED type, Left / Right modifiers), never from organ names.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...terminology import LEFT, RIGHT, Segment
from ...volume import Volume

BODY_HU = -400.0  # above this a voxel counts as body for the fallback midline
MIN_POINTS = 4


def paired_labels(segments: Sequence[Segment]) -> list[tuple[int, int]]:
    """``(left value, right value)`` of every organ the labels have on both sides."""
    left = {s.type[1]: s.label for s in segments if s.modifier and s.modifier[1] == LEFT[1]}
    right = {s.type[1]: s.label for s in segments if s.modifier and s.modifier[1] == RIGHT[1]}
    return [(left[code], right[code]) for code in left if code in right]


def _row_centroids(grid: Volume, mask: np.ndarray, min_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    """LPS centroids (N, 3) and voxel counts (N,) of ``mask`` along each image row (fixed k, j) holding at least
    ``min_voxels``: rows at every depth y let the fit see a head turned about the vertical axis."""
    counts = mask.sum(2)
    k, j = np.nonzero(counts >= min_voxels)
    if not len(k):
        return np.zeros((0, 3)), np.zeros(0)
    i_mean = (mask[k, j] * np.arange(mask.shape[2])).sum(1) / counts[k, j]
    points = grid.index_to_physical(np.column_stack([i_mean, j, k]).astype(float))
    return np.atleast_2d(points), counts[k, j].astype(float)


def _fit_plane(points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least squares ``x = a + b*y + c*z``, refitted without points beyond 3 robust sigmas."""
    keep = np.ones(len(points), bool)
    coef = np.array([np.average(points[:, 0], weights=weights), 0.0, 0.0])
    for _ in range(4):
        w = weights[keep]
        centre = np.average(points[keep], axis=0, weights=w)  # centred: a y or z without spread gets no tilt
        design = np.column_stack([np.ones(keep.sum()), points[keep, 1] - centre[1], points[keep, 2] - centre[2]])
        sol = np.linalg.lstsq(design * np.sqrt(w)[:, None], points[keep, 0] * np.sqrt(w), rcond=None)[0]
        coef = np.array([sol[0] - sol[1] * centre[1] - sol[2] * centre[2], sol[1], sol[2]])
        residual = points[:, 0] - (coef[0] + coef[1] * points[:, 1] + coef[2] * points[:, 2])
        sigma = 1.4826 * np.median(np.abs(residual[keep])) + 0.5
        new_keep = np.abs(residual) <= 3 * sigma
        if new_keep.sum() < MIN_POINTS or (new_keep == keep).all():
            break
        keep = new_keep
    return coef


def midline_plane(grid: Volume, labels: np.ndarray, midline_values: Sequence[int],
                  hu: np.ndarray | None = None) -> np.ndarray:
    """Coefficients ``(a, b, c)`` of the midsagittal plane ``x = a + b*y + c*z`` (LPS mm) of a label map on
    ``grid``; ``hu`` (the CT on the same grid) is the fallback when the midline organs give too few slices."""
    found = [_row_centroids(grid, labels == value, 2) for value in midline_values]
    points = np.concatenate([p for p, _ in found] or [np.zeros((0, 3))])
    weights = np.concatenate([w for _, w in found] or [np.zeros(0)])
    if len(points) < MIN_POINTS and hu is not None:
        points, weights = _row_centroids(grid, hu > BODY_HU, 5)
    if len(points) < MIN_POINTS:  # nothing to go on: the grid's centre
        centre = grid.index_to_physical((np.array(grid.size_ijk, float) - 1) / 2)
        return np.array([centre[0], 0.0, 0.0])
    return _fit_plane(points, weights)


def left_of_midline(grid: Volume, plane: np.ndarray) -> np.ndarray:
    """Boolean map on ``grid``: True where the voxel centre lies on the patient's left (+x) of the plane."""
    k, j, i = np.indices(grid.shape, dtype=np.float32)
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], 1)
    xyz = grid.index_to_physical(ijk)
    side = xyz[:, 0] > plane[0] + plane[1] * xyz[:, 1] + plane[2] * xyz[:, 2]
    return side.reshape(grid.shape)


def assign_sides(prob: np.ndarray, grid: Volume, pairs: Sequence[tuple[int, int]], plane: np.ndarray) -> None:
    """Each pair's class probabilities (``prob``: C x D x H x W on ``grid``) merged, then given to the left
    class on the left of ``plane`` and to the right class on the right (in place)."""
    if not pairs:
        return
    left = left_of_midline(grid, plane)
    for value_l, value_r in pairs:
        merged = prob[value_l] + prob[value_r]
        prob[value_l] = np.where(left, merged, 0.0)
        prob[value_r] = np.where(left, 0.0, merged)
