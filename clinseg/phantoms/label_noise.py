"""Simulated annotation noise: some masks of a training set dilated or eroded by a few voxels.

Follows the noisy-label setting of the CTV thesis (Pick-and-Learn): each clean mask is, with probability
set by ``fraction`` (exactly ``round(fraction * N)`` masks), dilated or eroded (even odds) by ``n`` voxels,
``n`` drawn uniformly from ``{lo..hi}``: ``"low"`` = 1..8, ``"high"`` = 5..13. Deviations, documented:
the thesis worked on 2-D X-rays; here the structuring element is a ball in the mask's own dimension
(``in_plane=True`` uses per-slice discs on 3-D masks, for thick slices); an erosion that would delete a
mask entirely is shortened to the largest ``n`` that keeps at least one voxel (the record says which).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

NOISE_LEVELS: dict[str, tuple[int, int]] = {"low": (1, 8), "high": (5, 13)}


@dataclass(frozen=True)
class Perturbation:
    """What was done to one mask: ``op`` is ``'dilate'``, ``'erode'`` or ``'none'``; ``n`` voxels applied."""

    index: int
    op: str
    n: int
    requested: int


def _ball(n: int, ndim: int) -> np.ndarray:
    r = np.arange(-n, n + 1)
    grids = np.meshgrid(*([r] * ndim), indexing="ij")
    return sum(g * g for g in grids) <= n * n + 1e-9


def perturb_mask(mask: np.ndarray, n: int, op: str, in_plane: bool = False) -> np.ndarray:
    """Dilate or erode ``mask`` by ``n`` voxels (Euclidean ball; per-slice disc when ``in_plane``)."""
    import edt

    mask = np.asarray(mask, bool)
    if op not in ("dilate", "erode"):
        raise InputError("op", f"must be 'dilate' or 'erode', got {op!r}")
    if n < 0:
        raise InputError("n", f"must be >= 0, got {n}")
    if n == 0:
        return mask.copy()
    # Distance transforms give the ball operation exactly and in time independent of n.
    if in_plane and mask.ndim == 3:
        return np.stack([_perturb_2d(s, n, op) for s in mask]) if len(mask) else mask.copy()
    if op == "dilate":
        return mask | (edt.edt(~mask, black_border=False) <= n)
    return edt.edt(mask, black_border=False) > n


def _perturb_2d(mask: np.ndarray, n: int, op: str) -> np.ndarray:
    import edt

    if op == "dilate":
        return mask | (edt.edt(~mask, black_border=False) <= n)
    return edt.edt(mask, black_border=False) > n


def noisy_labels(masks: Sequence[np.ndarray] | np.ndarray, fraction: float, n_voxels: int | tuple[int, int] | str,
                 seed: int, in_plane: bool = False) -> tuple[list[np.ndarray], list[Perturbation]]:
    """Perturb ``round(fraction * len(masks))`` masks chosen at random; the others are returned unchanged.

    ``n_voxels``: a fixed ``n``, a range ``(lo, hi)`` (inclusive) or ``"low"`` / ``"high"``.
    Returns the masks (new arrays) and one ``Perturbation`` per mask.
    """
    if not 0.0 <= fraction <= 1.0:
        raise InputError("fraction", f"must be within 0-1, got {fraction}")
    if isinstance(n_voxels, str):
        if n_voxels not in NOISE_LEVELS:
            raise InputError("n_voxels", f"unknown level {n_voxels!r} (use {', '.join(NOISE_LEVELS)})")
        lo, hi = NOISE_LEVELS[n_voxels]
    elif isinstance(n_voxels, (tuple, list)):
        lo, hi = int(n_voxels[0]), int(n_voxels[1])
    else:
        lo = hi = int(n_voxels)
    if lo < 0 or hi < lo:
        raise InputError("n_voxels", f"needs 0 <= lo <= hi, got {n_voxels!r}")
    masks = [np.asarray(m, bool) for m in masks]
    rng = np.random.default_rng(seed)
    count = int(round(fraction * len(masks)))
    chosen = set(rng.choice(len(masks), size=count, replace=False).tolist()) if count else set()
    out: list[np.ndarray] = []
    record: list[Perturbation] = []
    for i, mask in enumerate(masks):
        if i not in chosen:
            out.append(mask.copy())
            record.append(Perturbation(i, "none", 0, 0))
            continue
        n = int(rng.integers(lo, hi + 1))
        op = "dilate" if rng.random() < 0.5 else "erode"
        applied = n
        noisy = perturb_mask(mask, n, op, in_plane)
        while op == "erode" and applied > 0 and mask.any() and not noisy.any():
            applied -= 1
            noisy = perturb_mask(mask, applied, op, in_plane)
        out.append(noisy)
        record.append(Perturbation(i, op, applied, n))
    return out, record
