"""Weight-free airway segmentation: wavefront region growing with local leak control.

The lumen is grown from the trachea seed as a breadth-first wavefront through voxels
darker than a threshold. Every few layers (a 2 mm slab) the newest voxels are cut into
connected pieces, one per branch front; a piece whose cross-section grows far beyond
that of its own recent ancestors is a front that broke through a wall into parenchyma
(a leak): that piece alone is removed and stops, while every other front goes on.

The threshold rises pass after pass, from just above the trachea's own air and noise
up to -480 HU (partial-volume small bronchi lie between -900 and -500 HU). What a pass
adds next to its leaks (their necks) is rolled back, and around each leak later passes
keep the last threshold that did not leak there, so emphysematous parenchyma (about
-950 HU) or a missing wall limits the threshold locally while elsewhere growth goes
on. Since a leaking front stops with everything beyond it, a pass that misses much of what
earlier passes found is grown again with its leaks already held back (a few times at
most): one leak high in the tree no longer costs that pass every branch below it. A
pass that floods (more than ``MAX_FRACTION_OF_LUNGS`` of the lungs: a front percolating
too gradually to look like a leak) is grown again the same way, with the piece it
flooded held back. One that still floods, or rejects more than it keeps, ends the
sequence and is discarded. ATM'22 labels (and our phantoms)
are the lumen: real top-team tracheas measure 16-18 mm across, the adult lumen. On request
(``include_wall``) a wall shell whose thickness follows the local lumen radius is added, only
into voxels denser than parenchyma, for wall-thickness work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cc3d
import edt
import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ...anatomy.lungs import ChestMasks
from ...errors import InputError
from ...progress import CancelToken, ProgressCallback, ProgressTracker
from ...volume import Volume

SMOOTH_MM = 0.45  # denoising before thresholds; more would erase 2-3 mm bronchi...
NOISE_REF_HU = 40.0  # ...unless the trachea air is noisier than this (sigma grows with the noise)
MAX_SMOOTH_FACTOR = 2.0
NOISE_MARGIN = 4.0  # the first threshold sits this many (smoothed) noise sigmas above the trachea air
SEED_BOX_MM = 5.0
SLAB_MM = 2.0  # wavefront layers grouped per leak test
LEAK_GROWTH = 2.6  # a front larger than this times its smallest recent ancestor is a leak
ANCESTOR_SLABS = 4  # "recent" ancestors for the growth test
MIN_LEAK_MM2 = 12.0  # fronts smaller than this cross-section are never called a leak
MAX_FRACTION_OF_LUNGS = 0.12  # a lumen larger than this share of the lungs is a flood, not airways
# The last three passes reach the partial-volume rims and the sub-millimetre bronchi of fine grids: DSC +0.008 over
# the nine held-out cases, TD +0.020 on the three full-resolution real trees (docs/airway.md, session 7).
THRESHOLDS_HU = (-960, -930, -900, -870, -840, -810, -780, -750, -720, -690, -660, -630, -600, -570, -540, -510, -480)
STOP_REJECTED_FRACTION = 1.0  # a pass whose leaks reach this share of its kept voxels ends the sequence
ROLLBACK_MM = 2.0  # voxels a pass adds this close to one of its leaks are dropped with it
LEAK_RETRIES = 6  # a pass cut short by a leak is grown again with its leaks held back, at most this many times
# (6, not 3: at 3 the late passes were still cut short on the full-resolution real trees ATM_224 / ATM_305;
# 6 gives TD +0.019 / +0.031 there and leaves the nine held-out cases unchanged)
FLOOD_RETRIES = 2  # of those, at most this many after a flood: each costs a growth up to the flood limit
MAX_CUT_FRACTION = 0.05  # "cut short": it misses more than this share of what earlier passes found
FREEZE_CELL_MM = 2.5  # around a leak (its cells of this size and their neighbours), later passes keep the
# last threshold that did not leak there
WALL_OFFSET_VOXELS = 0.75  # outer surface beyond the thresholded lumen: partial-volume part (voxels)...
WALL_RATIO = 0.3  # ...plus this share of the local lumen radius (wall ~0.34 r, lumen undersegmented)
WALL_MIN_HU = -750.0  # the shell only takes voxels denser than this (wall, not parenchyma)
MAX_WALL_MM = 3.5
WALL_CONTRAST_HU = 120.0  # a large piece a later pass adds needs this much more than the pass's threshold, at
# the median, just outside it: a wall; a front percolating through parenchyma is bounded by barely denser voxels
WALL_CHECK_MM3 = 100.0  # smaller pieces (partial-volume rims, short branch tips) are not judged


@dataclass
class _Pass:
    """What one growth pass kept (flat padded-crop indices) and what it rejected as leaks."""

    name: str
    kept: np.ndarray
    rejected_voxels: np.ndarray
    leaks: int
    fronts: int
    notes: dict = field(default_factory=dict)


class _Field:
    """Which voxels a pass may grow into: smoothed HU below that pass's threshold, inside the search region.

    Holds the HU of the padded crop (int16, outside the region set to a value no threshold
    admits) and a coarse map of the most permissive step each place may use, lowered
    around leaks (``freeze``). Queried sparsely, only at the voxels a front touches.
    """

    def __init__(self, hu: np.ndarray, region: np.ndarray, steps: tuple[float, ...], spacing_zyx) -> None:
        padded = np.full(tuple(n + 2 for n in hu.shape), np.iinfo(np.int16).max, dtype=np.int16)
        padded[1:-1, 1:-1, 1:-1] = np.where(region, np.clip(np.rint(hu), -2000, 3000), padded.max()).astype(np.int16)
        self.shape = padded.shape
        self.hu = padded.ravel()
        self.steps = np.asarray(steps, dtype=np.int16)
        self.cell = np.array([max(1, int(round(FREEZE_CELL_MM / s))) for s in spacing_zyx])
        self.cap = np.full(tuple(-(-n // c) for n, c in zip(self.shape, self.cell)), len(steps) - 1, dtype=np.int8)
        self.frozen = False

    def name(self, step: int) -> str:
        return f"hu<{int(self.steps[step])}"

    def admits(self, flat: np.ndarray, step: int) -> np.ndarray:
        if not self.frozen:
            return self.hu[flat] < self.steps[step]
        cells = tuple(c // s for c, s in zip(np.unravel_index(flat, self.shape), self.cell))
        return self.hu[flat] < self.steps[np.minimum(self.cap[cells], step)]

    def freeze(self, flat: np.ndarray, step: int) -> None:
        """Allow at most ``step`` in the cells holding ``flat`` and their 26 neighbours."""
        cells = np.unique(np.stack(np.unravel_index(flat, self.shape), axis=1) // self.cell, axis=0)
        for offset in np.stack(np.meshgrid(*[(-1, 0, 1)] * 3, indexing="ij"), axis=-1).reshape(-1, 3):
            near = np.clip(cells + offset, 0, np.array(self.cap.shape) - 1)
            view = tuple(near.T)
            self.cap[view] = np.minimum(self.cap[view], max(step, 0))
        self.frozen = True


class _Grower:
    """Breadth-first growth (6-connected) on a crop padded with one False voxel, as flat indices."""

    def __init__(self, shape: tuple[int, int, int], spacing_zyx: tuple[float, float, float]) -> None:
        self.shape = shape
        nz, ny, nx = shape
        self.spacing = np.asarray(spacing_zyx, dtype=float)
        self.offsets = np.array([1, -1, nx, -nx, nx * ny, -nx * ny], dtype=np.int64)
        # Pieces of a front are labelled 26-connected: a breadth-first shell is not face-connected.
        steps = [(dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        self.pair_offsets = np.array(sorted({abs(dz * nx * ny + dy * nx + dx) for dz, dy, dx in steps} - {0}))
        self.voxel_mm3 = float(np.prod(spacing_zyx))
        self.layer_mm = float(min(spacing_zyx))
        self.layers_per_slab = max(2, int(round(SLAB_MM / self.layer_mm)))

    def coords_mm(self, flat: np.ndarray) -> np.ndarray:
        return np.stack(np.unravel_index(flat, self.shape), axis=1) * self.spacing

    def near(self, flat: np.ndarray, others: np.ndarray, radius_mm: float) -> np.ndarray:
        """Which of ``flat`` lie within ``radius_mm`` of any voxel of ``others``."""
        tree = cKDTree(self.coords_mm(others))
        dist, _ = tree.query(self.coords_mm(flat), distance_upper_bound=radius_mm)
        return np.isfinite(dist)

    def _components(self, voxels: np.ndarray) -> tuple[int, np.ndarray]:
        """26-connected pieces of a sparse voxel set (sorted flat indices)."""
        rows, cols = [], []
        for o in self.pair_offsets:
            pos = np.searchsorted(voxels, voxels + o)
            pos[pos == voxels.size] = 0
            hit = voxels[pos] == voxels + o
            rows.append(np.flatnonzero(hit))
            cols.append(pos[hit])
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(voxels.size, voxels.size))
        return connected_components(graph, directed=False)

    def grow(self, field: _Field, step: int, start: np.ndarray, limit: int, cancel) -> _Pass:
        """Grow through the voxels ``field`` admits at ``step``, from ``start`` (flat indices)."""
        visited = np.zeros(int(np.prod(self.shape)), dtype=bool)
        start = start[field.admits(start, step)]
        visited[start] = True
        # Per front piece: the cross-sections (mm^2) of its last few ancestors, itself last.
        history: list[tuple[float, ...]] = [(start.size * self.voxel_mm3 / self.layer_mm,)]
        front, front_src = start, np.zeros(start.size, dtype=np.int64)
        kept, rejected = [start], []
        kept_count, leaks, fronts = start.size, 0, 0
        while front.size:
            if cancel is not None:
                cancel.check("classical airway")
            slab, slab_src = [], []
            for _ in range(self.layers_per_slab):
                nb = (front[:, None] + self.offsets[None, :]).ravel()
                src = np.repeat(front_src, self.offsets.size)
                fresh = ~visited[nb]
                nb, src = nb[fresh], src[fresh]
                ok = field.admits(nb, step)
                nb, first = np.unique(nb[ok], return_index=True)
                if nb.size == 0:
                    break
                src = src[ok][first]
                visited[nb] = True
                slab.append(nb)
                slab_src.append(src)
                front, front_src = nb, src
            if not slab:
                break
            last = slab[-1]
            voxels, srcs = np.concatenate(slab), np.concatenate(slab_src)
            order = np.argsort(voxels)
            voxels, srcs = voxels[order], srcs[order]
            n, labels = self._components(voxels)
            area = np.bincount(labels, minlength=n) * self.voxel_mm3 / (self.layers_per_slab * self.layer_mm)
            parent = _majority_parent(labels, srcs, n)
            first_id = len(history)
            leak = np.zeros(n, dtype=bool)
            for piece in range(n):
                recent = history[parent[piece]]
                leak[piece] = area[piece] > MIN_LEAK_MM2 and area[piece] > LEAK_GROWTH * min(recent)
                history.append((recent + (float(area[piece]),))[-ANCESTOR_SLABS:])
            fronts += n
            bad = leak[labels]
            if bad.any():
                leaks += int(leak.sum())
                rejected.append(voxels[bad])  # they stay visited: no other front may enter them
            good = voxels[~bad]
            kept.append(good)
            kept_count += good.size
            at_front = np.isin(voxels, last, assume_unique=True) & ~bad
            front, front_src = voxels[at_front], first_id + labels[at_front]
            if kept_count > limit:
                # Everything it reached counts as rejected: the caller finds where it broke out.
                return _Pass(field.name(step), np.zeros(0, np.int64), np.concatenate(rejected + kept), leaks + 1,
                             fronts, {"flooded": True})
        rejected_voxels = np.concatenate(rejected) if rejected else np.zeros(0, np.int64)
        return _Pass(field.name(step), np.concatenate(kept), rejected_voxels, leaks, fronts)


def _majority_parent(labels: np.ndarray, srcs: np.ndarray, n: int) -> np.ndarray:
    """For each piece, the ancestor piece most of its voxels were reached from."""
    order = np.lexsort((srcs, labels))
    lab, src = labels[order], srcs[order]
    change = np.r_[True, (lab[1:] != lab[:-1]) | (src[1:] != src[:-1])]
    starts = np.flatnonzero(change)
    counts = np.diff(np.r_[starts, lab.size])
    run_lab, run_src = lab[starts], src[starts]
    best = np.lexsort((counts, run_lab))  # per label, the largest count comes last
    last_of_label = np.r_[run_lab[best][1:] != run_lab[best][:-1], True]
    parent = np.zeros(n, dtype=np.int64)
    parent[run_lab[best][last_of_label]] = run_src[best][last_of_label]
    return parent


def _crop_box(masks: ChestMasks, seed: np.ndarray, shape) -> tuple[tuple[slice, ...], np.ndarray]:
    lungs = masks.lungs > 0
    nz = [np.flatnonzero(np.any(lungs, axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    lo = [max(0, min(int(a[0]), int(s)) - 3) for a, s in zip(nz, seed)]
    hi = [min(n, max(int(a[-1]), int(s)) + 4) for a, s, n in zip(nz, seed, shape)]
    return tuple(slice(a, b) for a, b in zip(lo, hi)), np.array(lo)


def _seed_box(seed: tuple[int, int, int], shape, spacing_zyx) -> tuple[slice, ...]:
    """A box of +-``SEED_BOX_MM`` around the seed: inside the trachea for any adult or child."""
    half = [max(1, int(round(SEED_BOX_MM / s))) for s in spacing_zyx]
    return tuple(slice(max(0, c - h), min(n, c + h + 1)) for c, h, n in zip(seed, half, shape))


def _robust_sigma(values: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(values - np.median(values)))) if values.size else 0.0


def _start_region(hu: np.ndarray, seed: tuple[int, int, int], near: tuple[slice, ...]) -> np.ndarray:
    """The seed's air region near the seed, so the first front is a trachea cross-section, not a point."""
    air = np.zeros(hu.shape, dtype=bool)
    air[near] = hu[near] < -850.0
    labels = cc3d.connected_components(air, connectivity=6)
    return labels == labels[seed]


def _threshold_steps(hu: np.ndarray, start: np.ndarray) -> tuple[float, ...]:
    """The threshold sequence, starting just above the (smoothed) trachea air and its noise."""
    values = hu[start]
    first = float(np.median(values) + NOISE_MARGIN * _robust_sigma(values))
    first = max(first, THRESHOLDS_HU[0])
    return (round(first),) + tuple(t for t in THRESHOLDS_HU if t > first + 10)


def _lumen_passes(field: _Field, start: np.ndarray, grower: _Grower, limit: int, cancel, tracker, subject: str):
    """Grow at ever more permissive thresholds, each place only as permissive as it stayed leak-free.

    Voxels a pass adds close to one of its rejected (leaked) fronts are the necks of those
    leaks and are rolled back; around the leak the threshold is frozen at the last one that
    did not leak there, so later passes go through that place strictly and on beyond it.
    """
    padded = np.zeros(grower.shape, dtype=bool)
    padded[1:-1, 1:-1, 1:-1] = start
    start_flat = np.flatnonzero(padded)
    del padded
    union = np.zeros(int(np.prod(grower.shape)), dtype=bool)
    passes: list[_Pass] = []
    for n in range(len(field.steps)):
        p = grower.grow(field, n, start_flat, limit, cancel)
        # A leaking front stops with everything beyond it: a leak high in the tree can leave this pass short of
        # branches earlier passes had. Then grow it again with its leaks already held back. A flood (a front
        # percolating in steps too small to look like a leak) is held back the same way, where it broke out.
        retries, floods, leaked, found = 0, 0, 0, int(np.count_nonzero(union))
        while n and retries < LEAK_RETRIES:
            flooded = bool(p.notes.get("flooded"))
            if not (floods < FLOOD_RETRIES if flooded else _cut_off(p, union, found)):
                break
            field.freeze(_breakout(p, union, grower) if flooded else p.rejected_voxels, n - 1)
            floods += flooded
            leaked += p.leaks
            retries += 1
            p = grower.grow(field, n, start_flat, limit, cancel)
        if retries:
            p.notes.update(regrown=retries, leaks_held=leaked, **({"floods_held": floods} if floods else {}))
        passes.append(p)
        tracker.step(message=p.name)
        if p.notes.get("flooded") or p.rejected_voxels.size > STOP_REJECTED_FRACTION * p.kept.size:
            p.notes["used"] = False
            if n == 0:
                raise InputError(subject, "airway growing leaks into the lungs even at the strictest threshold")
            break
        added = p.kept[~union[p.kept]]
        if p.rejected_voxels.size:
            if added.size:
                near = grower.near(added, p.rejected_voxels, ROLLBACK_MM)
                p.notes["rolled_back"] = int(near.sum())
                added = added[~near]
            field.freeze(p.rejected_voxels, n - 1)
        if n and added.size:
            added, dropped = _drop_wall_less(added, union, field, grower, float(field.steps[n]))
            if dropped:
                p.notes["no_wall"] = dropped
        union[added] = True
        p.notes["added"] = int(added.size)
    return union.reshape(grower.shape)[1:-1, 1:-1, 1:-1], passes


def _breakout(p: _Pass, union: np.ndarray, grower: _Grower) -> np.ndarray:
    """The largest connected piece of what a flooded pass reached beyond earlier passes: the flood and the tip
    it started from, not the other branches this pass extended."""
    new = np.sort(p.rejected_voxels[~union[p.rejected_voxels]])
    if new.size == 0:
        return p.rejected_voxels
    _, labels = grower._components(new)
    return new[labels == np.argmax(np.bincount(labels))]


def _cut_off(p: _Pass, union: np.ndarray, total: int) -> bool:
    """Whether pass ``p`` leaked and, downstream of its leaks, missed much of the lumen earlier passes found."""
    return bool(p.rejected_voxels.size and total
                and np.count_nonzero(union[p.kept]) < (1.0 - MAX_CUT_FRACTION) * total)


def _drop_wall_less(
    added: np.ndarray, union: np.ndarray, field: _Field, grower: _Grower, threshold: float
) -> tuple[np.ndarray, int]:
    """``added`` without its pieces that have no airway wall around them, and how many voxels went.

    A bronchus is air inside a dense wall; a front that percolates through parenchyma (each step too
    small to look like a leak) is air among air. So each connected piece a later pass adds is kept
    only when the voxels just outside it (not lumen already) are, at the median, at least
    ``WALL_CONTRAST_HU`` denser than the pass's ``threshold``. Small pieces are always kept."""
    shape, voxel_mm3 = grower.shape, grower.voxel_mm3
    coords = np.stack(np.unravel_index(added, shape), axis=1)
    lo = np.maximum(coords.min(axis=0) - 1, 0)
    hi = np.minimum(coords.max(axis=0) + 2, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    piece = np.zeros(tuple(hi - lo), dtype=bool)
    piece[tuple((coords - lo).T)] = True
    labels, n = cc3d.connected_components(piece, connectivity=26, return_N=True)
    if n == 0:
        return added, 0
    lumen = union.reshape(shape)[box]
    hu = field.hu.reshape(shape)[box]
    grown = ndimage.grey_dilation(labels, size=3)  # each shell voxel takes a neighbouring piece's label
    shell = (grown > 0) & (labels == 0) & ~lumen  # outside the search region = tissue: counts as dense
    medians = np.full(n + 1, np.inf)
    if shell.any():
        order = np.argsort(grown[shell], kind="stable")
        ids, values = grown[shell][order], hu[shell][order].astype(np.float32)
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        for start, stop in zip(starts, np.r_[starts[1:], ids.size]):
            medians[ids[start]] = np.median(values[start:stop])
    volume_mm3 = np.bincount(labels.ravel(), minlength=n + 1) * voxel_mm3
    bad = (medians < threshold + WALL_CONTRAST_HU) & (volume_mm3 >= WALL_CHECK_MM3)
    bad[0] = False
    drop = bad[labels[tuple((coords - lo).T)]]
    return added[~drop], int(drop.sum())


def _add_wall(lumen: np.ndarray, hu: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Lumen plus a wall shell as thick as the model says for the local lumen radius.

    A lumen voxel's local radius is the deepest lumen depth around it; a voxel outside
    the lumen joins the shell when it lies within the wall thickness of its nearest lumen
    surface voxel and is denser than ``WALL_MIN_HU`` (wall, not parenchyma).
    """
    sampling = np.asarray(spacing_zyx, dtype=float)
    depth = edt.edt(lumen, anisotropy=tuple(sampling), black_border=True, parallel=1)
    surface = np.argwhere(lumen & (depth <= sampling.max() + 1e-3))
    reach = tuple(max(3, int(round(5.0 / s)) | 1) for s in sampling)
    radius = ndimage.maximum_filter(depth, size=reach)[tuple(surface.T)]
    thickness = np.minimum(WALL_OFFSET_VOXELS * sampling.mean() + WALL_RATIO * radius, MAX_WALL_MM)
    outside = edt.edt(~lumen, anisotropy=tuple(sampling), black_border=False, parallel=1)
    candidates = np.argwhere((outside <= thickness.max()) & (hu > WALL_MIN_HU) & ~lumen)
    airway = lumen.copy()
    if candidates.size and surface.size:
        dist, nearest = cKDTree(surface * sampling).query(candidates * sampling, distance_upper_bound=MAX_WALL_MM + 1)
        hit = np.isfinite(dist)
        hit[hit] = dist[hit] <= thickness[nearest[hit]] + 1e-6
        airway[tuple(candidates[hit].T)] = True
    return airway


def segment_airway_classical(
    ct: Volume,
    masks: ChestMasks,
    seed: np.ndarray,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    include_wall: bool = False,
) -> tuple[np.ndarray, dict]:
    """Binary airway lumen (plus the wall with ``include_wall``) on the input grid and a report of every pass."""
    tracker = ProgressTracker("classical", len(THRESHOLDS_HU) + 3, progress)
    subject = ct.name or "CT"
    box, lo = _crop_box(masks, seed, ct.shape)
    local_seed = tuple(int(s - a) for s, a in zip(seed, lo))
    spacing_zyx = tuple(float(s) for s in ct.spacing[::-1])
    raw = ct.array[box].astype(np.float32)
    near_seed = _seed_box(local_seed, raw.shape, spacing_zyx)
    around = raw[near_seed]
    noise = _robust_sigma(around[around < -700])
    smooth_mm = SMOOTH_MM * float(np.clip(noise / NOISE_REF_HU, 1.0, MAX_SMOOTH_FACTOR))
    hu = ndimage.gaussian_filter(raw, [smooth_mm / s for s in spacing_zyx])
    del raw
    if hu[local_seed] > -800:
        raise InputError(subject, f"trachea seed is not air ({hu[local_seed]:.0f} HU)")
    lungs = masks.lungs[box] > 0
    limit = int(MAX_FRACTION_OF_LUNGS * np.count_nonzero(lungs))
    # The coarse masks are blocky: one voxel of slack so partial-volume airway edges stay inside.
    region = ndimage.maximum_filter((masks.air_inside[box] | lungs).view(np.uint8), size=3).view(bool)
    del lungs
    start = _start_region(hu, local_seed, near_seed)
    steps = _threshold_steps(hu, start)
    field = _Field(hu, region, steps, spacing_zyx)
    del region
    tracker.step(message="filters")

    grower = _Grower(field.shape, spacing_zyx)
    lumen, passes = _lumen_passes(field, start, grower, limit, cancel, tracker, subject)
    del field
    if not lumen.any():
        raise InputError(subject, "airway region growing found no lumen at the trachea seed")
    inner = _bounding(lumen, pad=int(np.ceil(4.0 / min(spacing_zyx))))
    part = lumen[inner]
    part |= ndimage.binary_closing(part, iterations=1)
    airway = np.zeros_like(lumen)
    airway[inner] = _add_wall(part, hu[inner], spacing_zyx) if include_wall else part
    tracker.step(message="wall" if include_wall else "lumen")

    out = np.zeros(ct.shape, dtype=bool)
    out[box] = airway
    report = {
        "passes": [
            {"name": p.name, "kept_voxels": int(p.kept.size), "rejected_voxels": int(p.rejected_voxels.size),
             "leaks": p.leaks, "fronts": p.fronts, **p.notes}
            for p in passes
        ],
        "noise_hu": round(noise, 1),
        "smoothing_mm": round(smooth_mm, 2),
        "lumen_voxels": int(lumen.sum()),
        "airway_voxels": int(airway.sum()),
    }
    return out, report


def _bounding(mask: np.ndarray, pad: int) -> tuple[slice, ...]:
    """Bounding box of a non-empty mask, grown by ``pad`` voxels (clipped)."""
    box = []
    for axis in range(3):
        hit = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(0, int(hit[0]) - pad), min(mask.shape[axis], int(hit[-1]) + 1 + pad)))
    return tuple(box)
