"""Weight-free airway segmentation: wavefront region growing with local leak control.

The lumen is grown from the trachea seed as a breadth-first wavefront through
"lumen candidate" voxels (air-dark, or darker than their surroundings). Every few
layers the newest voxels are cut into connected pieces (one per branch front); a
piece whose cross-section grows far beyond that of its own recent ancestors is a
front that broke through a wall into parenchyma (a leak): that piece alone is
removed and stops there, while every other front goes on. Several candidate
definitions, from strict to permissive, are grown this way and united; the
permissive passes stop when they leak too often. Finally the airway wall is added
as a shell whose thickness follows the local lumen radius (ATM'22 labels and our
phantoms count lumen + wall), only into voxels denser than the lumen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ...anatomy.lungs import ChestMasks
from ...errors import InputError
from ...progress import CancelToken, ProgressCallback, ProgressTracker
from ...volume import Volume

SMOOTH_MM = 0.45  # denoising before thresholds; more would erase 2-3 mm bronchi
SLAB_MM = 2.0  # wavefront layers grouped per leak test
LEAK_GROWTH = 2.6  # a front larger than this times its smallest recent ancestor is a leak
ANCESTOR_SLABS = 4  # "recent" ancestors for the growth test
MIN_LEAK_MM2 = 12.0  # fronts smaller than this cross-section are never called a leak
MAX_FRACTION_OF_LUNGS = 0.12  # a lumen larger than this share of the lungs is a leak
THRESHOLDS_HU = (-960, -930, -900, -870, -840)
CONTRAST_HU = (220, 160, 110)  # "darker than the surroundings by" levels, lung-relative
WALL_RATIO = 0.34  # wall thickness / lumen radius (adult bronchi: ~0.3-0.4)
MAX_WALL_MM = 2.5
STOP_REJECTED_FRACTION = 0.5  # a pass whose rejected voxels reach this share of its kept ones leaks too much


@dataclass
class _Pass:
    """Result of one growth pass."""

    name: str
    kept: np.ndarray  # flat crop indices
    rejected: int
    leaks: int
    fronts: int = 0
    notes: dict = field(default_factory=dict)


class _Grower:
    """Breadth-first growth (6-connected) on a padded crop, given as flat indices."""

    def __init__(self, shape: tuple[int, int, int], spacing_zyx: tuple[float, float, float]) -> None:
        self.shape = shape
        nz, ny, nx = shape
        self.offsets = np.array([1, -1, nx, -nx, nx * ny, -nx * ny], dtype=np.int64)
        # Pieces of a front are labelled 26-connected: a breadth-first shell is not face-connected.
        steps = [(dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        flat = sorted({abs(dz * nx * ny + dy * nx + dx) for dz, dy, dx in steps} - {0})
        self.pair_offsets = np.array(flat, dtype=np.int64)
        self.voxel_mm3 = float(np.prod(spacing_zyx))
        self.layer_mm = float(min(spacing_zyx))
        self.layers_per_slab = max(2, int(round(SLAB_MM / self.layer_mm)))

    def _components(self, voxels: np.ndarray) -> tuple[int, np.ndarray]:
        """Face-connected pieces of a sparse voxel set (sorted flat indices)."""
        rows, cols = [], []
        for o in self.pair_offsets:
            target = voxels + o
            pos = np.searchsorted(voxels, target)
            pos[pos == voxels.size] = 0
            hit = voxels[pos] == target
            rows.append(np.flatnonzero(hit))
            cols.append(pos[hit])
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(voxels.size, voxels.size))
        return connected_components(graph, directed=False)

    def grow(self, candidates: np.ndarray, start: np.ndarray, name: str, limit: int, cancel) -> _Pass:
        """Grow through ``candidates`` (bool crop, padded with False) from ``start`` (flat indices)."""
        cand = candidates.ravel().copy()
        visited = np.zeros(cand.size, dtype=bool)
        start = np.unique(start[cand[start]])
        visited[start] = True
        # Component records: area (mm^2), parent id, ancestors' minimum area.
        areas: list[float] = [start.size * self.voxel_mm3 / self.layer_mm]
        history: list[tuple[float, ...]] = [(areas[0],)]
        front, front_src = start, np.zeros(start.size, dtype=np.int64)
        kept_parts = [start]
        kept_count, rejected, leaks, fronts = start.size, 0, 0, 0
        while front.size:
            if cancel is not None:
                cancel.check("classical airway")
            slab, slab_src = [], []
            for _ in range(self.layers_per_slab):
                nb = (front[:, None] + self.offsets[None, :]).ravel()
                src = np.repeat(front_src, self.offsets.size)
                ok = cand[nb] & ~visited[nb]
                nb, src = nb[ok], src[ok]
                if nb.size == 0:
                    front = nb
                    break
                nb, first = np.unique(nb, return_index=True)
                src = src[first]
                visited[nb] = True
                slab.append(nb)
                slab_src.append(src)
                front, front_src = nb, src
            if not slab:
                break
            voxels = np.concatenate(slab)
            srcs = np.concatenate(slab_src)
            order = np.argsort(voxels)
            voxels, srcs = voxels[order], srcs[order]
            last = np.isin(voxels, front, assume_unique=True)
            n, labels = self._components(voxels)
            sizes = np.bincount(labels, minlength=n)
            area = sizes * self.voxel_mm3 / (self.layers_per_slab * self.layer_mm)
            # Parent: the ancestor component most of the piece came from.
            parent = np.zeros(n, dtype=np.int64)
            pairs = labels.astype(np.int64) * (len(areas) + 1) + srcs
            uniq, counts = np.unique(pairs, return_counts=True)
            best = np.full(n, -1)
            for u, c in zip(uniq, counts):
                lab, s = divmod(int(u), len(areas) + 1)
                if c > best[lab]:
                    best[lab], parent[lab] = c, s
            leak = np.zeros(n, dtype=bool)
            new_ids = np.arange(len(areas), len(areas) + n)
            for lab in range(n):
                recent = history[parent[lab]]
                reference = min(recent)
                leak[lab] = area[lab] > MIN_LEAK_MM2 and area[lab] > LEAK_GROWTH * reference
                areas.append(float(area[lab]))
                history.append((recent + (float(area[lab]),))[-ANCESTOR_SLABS:])
            fronts += n
            bad = leak[labels]
            if bad.any():
                leaks += int(leak.sum())
                rejected += int(bad.sum())
                cand[voxels[bad]] = False  # those voxels stay visited: no other front may take them
            good = voxels[~bad]
            kept_parts.append(good)
            kept_count += good.size
            keep_front = last & ~bad
            front, front_src = voxels[keep_front], new_ids[labels[keep_front]]
            if kept_count > limit:
                return _Pass(name, np.zeros(0, dtype=np.int64), rejected, leaks + 1, fronts, {"overflow": True})
        return _Pass(name, np.concatenate(kept_parts), rejected, leaks, fronts)


def _crop_box(masks: ChestMasks, seed: np.ndarray, shape) -> tuple[tuple[slice, ...], np.ndarray]:
    lungs = masks.lungs > 0
    nz = [np.flatnonzero(np.any(lungs, axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    lo = [max(0, min(int(a[0]), int(s)) - 3) for a, s in zip(nz, seed)]
    hi = [min(n, max(int(a[-1]), int(s)) + 4) for a, s, n in zip(nz, seed, shape)]
    return tuple(slice(a, b) for a, b in zip(lo, hi)), np.array(lo)


def _start_region(hu: np.ndarray, seed: tuple[int, int, int], threshold: float) -> np.ndarray:
    """The seed's air region within a small ball (so the first front is a whole trachea cross-section)."""
    ball = np.zeros(hu.shape, dtype=bool)
    r = 3
    sl = tuple(slice(max(0, s - r), s + r + 1) for s in seed)
    ball[sl] = hu[sl] < threshold
    labels, _ = ndimage.label(ball)
    return labels == labels[seed]


def _lumen_passes(hu, hu_fine, contrast, region, start, grower, limit, cancel, tracker):
    results: list[_Pass] = []
    padded_shape = grower.shape

    def padded(mask: np.ndarray) -> np.ndarray:
        out = np.zeros(padded_shape, dtype=bool)
        out[1:-1, 1:-1, 1:-1] = mask
        return out

    start_flat = np.flatnonzero(padded(start))
    for threshold in THRESHOLDS_HU:
        p = grower.grow(padded((hu < threshold) & region), start_flat, f"hu<{threshold}", limit, cancel)
        results.append(p)
        if p.notes.get("overflow") or p.rejected > STOP_REJECTED_FRACTION * max(p.kept.size, 1):
            break
    tracker.step(message="threshold fronts")
    base = max(p.kept.size for p in results)
    for level in CONTRAST_HU:
        cands = (((contrast > level) & (hu_fine < -600)) | (hu < THRESHOLDS_HU[0])) & region
        p = grower.grow(padded(cands), start_flat, f"contrast>{level}", limit, cancel)
        results.append(p)
        if p.notes.get("overflow") or p.rejected > STOP_REJECTED_FRACTION * max(p.kept.size, base):
            break
    tracker.step(message="contrast fronts")
    return results


def _add_wall(lumen: np.ndarray, hu: np.ndarray, spacing_zyx) -> np.ndarray:
    """Lumen plus a wall shell: thickness ``WALL_RATIO`` x local lumen radius, into denser-than-lumen voxels."""
    sampling = np.asarray(spacing_zyx)
    depth = ndimage.distance_transform_edt(lumen, sampling=sampling).astype(np.float32)
    # Local lumen radius at each lumen voxel: the deepest depth nearby (a small grey dilation).
    reach = tuple(max(3, int(round(2 * 2.0 / s)) | 1) for s in sampling)
    radius = ndimage.maximum_filter(depth, size=reach)
    radius[~lumen] = 0
    outside_dist, nearest = ndimage.distance_transform_edt(~lumen, sampling=sampling, return_indices=True)
    local_radius = radius[tuple(nearest)]
    # voxel centres within the outer surface: distance to lumen surface counts from the voxel boundary
    half = 0.5 * float(min(sampling))
    thickness = np.clip(WALL_RATIO * local_radius, 0.0, MAX_WALL_MM)
    shell = (~lumen) & (outside_dist - half <= thickness) & (hu > -950)
    return lumen | shell


def segment_airway_classical(
    ct: Volume,
    masks: ChestMasks,
    seed: np.ndarray,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> tuple[np.ndarray, dict]:
    """Binary airway mask (lumen + wall) on the input grid and a report of every growth pass."""
    tracker = ProgressTracker("classical", 4, progress)
    subject = ct.name or "CT"
    box, lo = _crop_box(masks, seed, ct.shape)
    local_seed = tuple(int(s - a) for s, a in zip(seed, lo))
    spacing_zyx = tuple(float(s) for s in ct.spacing[::-1])
    raw = ct.array[box].astype(np.float32)
    hu = ndimage.gaussian_filter(raw, [SMOOTH_MM / s for s in spacing_zyx])
    if hu[local_seed] > -800:
        raise InputError(subject, f"trachea seed is not air ({hu[local_seed]:.0f} HU)")
    lungs = masks.lungs[box] > 0
    region = masks.air_inside[box] | ndimage.binary_dilation(lungs, iterations=2)
    # Local contrast: how much darker than the brightest voxels around (a grey closing, ~5 mm).
    size = tuple(max(3, int(round(5.0 / s)) | 1) for s in spacing_zyx)
    contrast = ndimage.grey_closing(hu, size=size) - hu
    tracker.step(message="filters")

    grower = _Grower(tuple(n + 2 for n in hu.shape), spacing_zyx)
    limit = int(MAX_FRACTION_OF_LUNGS * lungs.sum())
    start = _start_region(hu, local_seed, -850.0)
    passes = _lumen_passes(hu, hu, contrast, region, start, grower, limit, cancel, tracker)
    lumen_flat = np.zeros(int(np.prod(grower.shape)), dtype=bool)
    for p in passes:
        lumen_flat[p.kept] = True
    lumen = lumen_flat.reshape(grower.shape)[1:-1, 1:-1, 1:-1]
    if not lumen.any():
        raise InputError(subject, "airway region growing found no lumen at the trachea seed")
    lumen = ndimage.binary_closing(lumen, iterations=1) | lumen
    airway = _add_wall(lumen, hu, spacing_zyx)
    tracker.step(message="wall")

    out = np.zeros(ct.shape, dtype=bool)
    out[box] = airway
    report = {
        "passes": [
            {"name": p.name, "kept_voxels": int(p.kept.size), "rejected_voxels": p.rejected, "leaks": p.leaks,
             "fronts": p.fronts, **p.notes}
            for p in passes
        ],
        "lumen_voxels": int(lumen.sum()),
        "airway_voxels": int(airway.sum()),
    }
    return out, report
