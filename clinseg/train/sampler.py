"""Cuboid sampling for training and tiling for validation.

The thesis cuts every (lung-cropped) case into 80x192x304 cuboids on a regular grid with stride 64x96x152
and uses all of them, shuffled, every epoch. ``epoch_patches`` does that and adds foreground oversampling:
with probability ``fg_fraction`` a drawn cuboid is replaced by one holding a random airway voxel at a random
position inside it (airway voxels are 0.03-0.1 % of a CT, so most grid cuboids at the lung periphery hold
none; nnU-Net uses one third). Everything is reproducible from ``(seed, epoch)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Shape3 = tuple[int, int, int]
THESIS_PATCH: Shape3 = (80, 192, 304)
THESIS_TRAIN_STRIDE: Shape3 = (64, 96, 152)
THESIS_VAL_STRIDE: Shape3 = (64, 72, 72)


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Starts of windows of length ``patch`` every ``stride`` voxels covering ``[0, size)``; the last
    window is moved back to end at ``size``. A size smaller than the patch gives one window at 0 (pad it)."""
    if patch < 1 or stride < 1:
        raise ValueError(f"patch and stride must be positive, got {patch}, {stride}")
    if size <= patch:
        return [0]
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def grid_starts(shape: Sequence[int], patch: Sequence[int], stride: Sequence[int]) -> list[Shape3]:
    """All cuboid corners of the sliding-window grid over ``shape`` (array order)."""
    axes = [window_starts(int(n), int(p), int(s)) for n, p, s in zip(shape, patch, stride)]
    return [(a, b, c) for a in axes[0] for b in axes[1] for c in axes[2]]


def scaled_train_stride(patch: Sequence[int]) -> Shape3:
    """The thesis's train stride relative to its patch (0.8, 0.5, 0.5), applied to another patch size."""
    return tuple(max(1, round(p * s / t)) for p, s, t in zip(patch, THESIS_TRAIN_STRIDE, THESIS_PATCH))


def read_patch(array: np.ndarray, start: Sequence[int], patch: Sequence[int], fill: float = 0) -> np.ndarray:
    """``array[start : start + patch]`` padded with ``fill`` where the cuboid leaves the array."""
    out = np.full(tuple(int(p) for p in patch), fill, dtype=array.dtype)
    src = tuple(slice(max(0, s), min(n, s + p)) for s, p, n in zip(start, patch, array.shape))
    dst = tuple(slice(r.start - s, r.stop - s) for r, s in zip(src, start))
    out[dst] = array[src]
    return out


@dataclass(frozen=True)
class PatchRef:
    """One training cuboid: case index and corner (may be negative or overhang when padding is needed)."""

    case: int
    start: Shape3


def foreground_start(
    rng: np.random.Generator, point: Sequence[int], shape: Sequence[int], patch: Sequence[int]
) -> Shape3:
    """A corner placing ``point`` at a uniformly random position inside the cuboid, kept inside the
    volume when the volume is large enough."""
    start = []
    for c, n, p in zip(point, shape, patch):
        s = int(c) - int(rng.integers(0, p))
        s = min(max(s, 0), max(n - p, 0))
        start.append(s)
    return tuple(start)


def epoch_patches(
    shapes: Sequence[Sequence[int]],
    foreground: Sequence[np.ndarray],
    patch: Sequence[int],
    stride: Sequence[int],
    count: int | None,
    seed: int,
    epoch: int,
    fg_fraction: float = 1 / 3,
) -> list[PatchRef]:
    """The cuboids of one epoch.

    ``shapes``: array shape per case; ``foreground``: per case, an ``(M, 3)`` array of airway voxel indices
    (may be a subsample; empty when none). All grid cuboids are shuffled; ``count`` truncates (or cycles)
    the list; then each is replaced by a foreground-centred cuboid with probability ``fg_fraction``.
    """
    rng = np.random.default_rng([int(seed), int(epoch)])
    refs = [PatchRef(i, s) for i, shape in enumerate(shapes) for s in grid_starts(shape, patch, stride)]
    if not refs:
        return []
    order = rng.permutation(len(refs))
    if count is not None:
        order = np.resize(order, int(count))
    cases_with_fg = [i for i, f in enumerate(foreground) if len(f)]
    out = []
    for index in order:
        ref = refs[int(index)]
        if cases_with_fg and rng.random() < fg_fraction:
            case = cases_with_fg[int(rng.integers(len(cases_with_fg)))]
            points = foreground[case]
            point = points[int(rng.integers(len(points)))]
            ref = PatchRef(case, foreground_start(rng, point, shapes[case], patch))
        out.append(ref)
    return out


def foreground_points(label: np.ndarray, limit: int = 20000, seed: int = 0) -> np.ndarray:
    """Up to ``limit`` airway voxel indices ``(M, 3)`` of a label array (a fixed random subsample if more)."""
    points = np.argwhere(label > 0)
    if len(points) > limit:
        points = points[np.sort(np.random.default_rng(seed).choice(len(points), limit, replace=False))]
    return points.astype(np.int32)
