"""Fast rasterisation of tubes on a voxel grid, in physical (LPS) millimetres.

Every primitive is evaluated only inside its own index bounding box, as a
signed distance in mm (negative inside). A union of primitives is the minimum
of their distances, kept in an :class:`SdfCanvas` that covers a sub-box of the
grid. Any grid direction works: voxel positions are always computed as
``origin + direction @ (spacing * ijk)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..volume import Volume

FAR_MM = 64.0  # "no structure near": initial distance of a canvas


@dataclass(frozen=True)
class Grid:
    """The target voxel grid (shape in array order ``(nk, nj, ni)``)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[tuple[float, float, float], ...]

    @classmethod
    def of(cls, volume: Volume) -> Grid:
        return cls(volume.shape, volume.spacing, volume.origin, tuple(map(tuple, volume.direction)))

    @property
    def matrix(self) -> np.ndarray:
        """3x3 map from index steps ``(i, j, k)`` to LPS millimetres."""
        return np.asarray(self.direction, dtype=float) @ np.diag(self.spacing)

    @property
    def edge_mm(self) -> float:
        """Width of the partial-volume ramp: the geometric mean voxel size."""
        return float(np.prod(self.spacing) ** (1.0 / 3.0))

    def volume(self, array: np.ndarray, name: str = "") -> Volume:
        return Volume(array, self.spacing, self.origin, np.asarray(self.direction, dtype=float), name)

    def to_index(self, lps: np.ndarray) -> np.ndarray:
        """LPS ``(..., 3)`` to continuous ``(i, j, k)``."""
        return (np.asarray(lps, dtype=float) - np.asarray(self.origin)) @ np.linalg.inv(self.matrix).T

    def to_lps(self, ijk: np.ndarray) -> np.ndarray:
        return np.asarray(ijk, dtype=float) @ self.matrix.T + np.asarray(self.origin)

    def box(self, lo_lps: np.ndarray, hi_lps: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Array slices ``(k, j, i)`` of the voxels inside an LPS axis-aligned box (``None`` if empty)."""
        lo, hi = np.asarray(lo_lps, float), np.asarray(hi_lps, float)
        corners = np.array([[(lo, hi)[a][0], (lo, hi)[b][1], (lo, hi)[c][2]] for a in (0, 1) for b in (0, 1)
                            for c in (0, 1)])
        ijk = self.to_index(corners)
        start = np.maximum(np.floor(ijk.min(0)).astype(int), 0)
        stop = np.minimum(np.ceil(ijk.max(0)).astype(int) + 1, np.array(self.shape[::-1]))
        if np.any(stop <= start):
            return None
        return slice(start[2], stop[2]), slice(start[1], stop[1]), slice(start[0], stop[0])

    def coords(self, box: tuple[slice, slice, slice], full: bool = True) -> tuple[np.ndarray, ...]:
        """LPS ``x, y, z`` (float32) of the voxel centres in ``box``.

        With ``full=False`` each coordinate keeps only the axes it depends on
        (e.g. ``z`` is ``(nk, 1, 1)`` on an axial grid), so fields that ignore
        ``z`` are computed once per slab; arrays broadcast to the box's shape.
        """
        ks, js, is_ = box
        k = np.arange(ks.start, ks.stop, dtype=np.float32)[:, None, None]
        j = np.arange(js.start, js.stop, dtype=np.float32)[None, :, None]
        i = np.arange(is_.start, is_.stop, dtype=np.float32)[None, None, :]
        m = self.matrix.astype(np.float32)
        o = np.asarray(self.origin, dtype=np.float32)
        shape = (k.shape[0], j.shape[1], i.shape[2])
        out = []
        for row in range(3):
            c = np.full((1, 1, 1), o[row], np.float32)
            for coef, ramp_ in ((m[row, 0], i), (m[row, 1], j), (m[row, 2], k)):
                if abs(coef) > 1e-9:
                    c = c + coef * ramp_
            out.append(np.broadcast_to(c, shape).copy() if full else c)
        return out[0], out[1], out[2]


def part(a: np.ndarray, box: tuple[slice, slice, slice]) -> np.ndarray:
    """``a[box]`` for an array that may be broadcast-shaped (size-1 axes are kept whole)."""
    return a[tuple(s if n > 1 else slice(None) for s, n in zip(box, a.shape))]


def ramp(sd: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume fraction of a voxel whose centre is ``sd`` mm from a locally flat surface.

    A linear ramp over one voxel width is exactly the box-filtered coverage of a
    plane seen face-on; the scanner PSF applied later smooths it further.
    """
    f = np.float32(0.5) - sd * np.float32(1.0 / width)
    np.clip(f, 0.0, 1.0, out=f)
    return f


def blend(hu: np.ndarray, value, fraction: np.ndarray) -> None:
    """In place: ``hu = hu + fraction * (value - hu)`` (partial-volume compositing)."""
    hu += fraction * (np.asarray(value, dtype=np.float32) - hu)


class SdfCanvas:
    """Union (minimum) of signed distances in mm over the voxels of one grid sub-box."""

    def __init__(self, grid: Grid, lo_lps: np.ndarray, hi_lps: np.ndarray) -> None:
        self.grid = grid
        box = grid.box(lo_lps, hi_lps)
        if box is None:  # nothing of it in the field of view: an empty, valid canvas
            box = (slice(0, 0), slice(0, 0), slice(0, 0))
        self.box = box
        self.offset = np.array([box[0].start, box[1].start, box[2].start])
        self.sd = np.full(tuple(s.stop - s.start for s in box), FAR_MM, dtype=np.float32)

    @property
    def empty(self) -> bool:
        return self.sd.size == 0

    def _local(self, lo: np.ndarray, hi: np.ndarray) -> tuple[tuple[slice, slice, slice], tuple] | None:
        box = self.grid.box(lo, hi)
        if box is None or self.empty:
            return None
        local = []
        for b, c in zip(box, self.box):
            start, stop = max(b.start, c.start), min(b.stop, c.stop)
            if stop <= start:
                return None
            local.append(slice(start - c.start, stop - c.start))
        glob = tuple(slice(s.start + o, s.stop + o) for s, o in zip(local, self.offset))
        return tuple(local), glob

    def add_capsules(self, p0: np.ndarray, p1: np.ndarray, r0: np.ndarray, r1: np.ndarray,
                     margin: float = 2.0) -> None:
        """Union with tapered capsules ``p0 -> p1`` (radii ``r0 -> r1`` mm), each within its own box."""
        p0, p1 = np.atleast_2d(p0).astype(float), np.atleast_2d(p1).astype(float)
        r0 = np.broadcast_to(np.asarray(r0, float), (len(p0),))
        r1 = np.broadcast_to(np.asarray(r1, float), (len(p0),))
        for a, b, ra, rb in zip(p0, p1, r0, r1):
            pad = max(ra, rb) + margin
            boxes = self._local(np.minimum(a, b) - pad, np.maximum(a, b) + pad)
            if boxes is None:
                continue
            local, glob = boxes
            x, y, z = self.grid.coords(glob, full=False)
            ab = (b - a).astype(np.float32)
            ab2 = float(ab @ ab)
            x = x - np.float32(a[0])
            y = y - np.float32(a[1])
            z = z - np.float32(a[2])
            if ab2 > 1e-12:
                t = (x * ab[0] + y * ab[1] + z * ab[2]) * np.float32(1.0 / ab2)
                np.clip(t, 0.0, 1.0, out=t)
                x = x - t * ab[0]
                y = y - t * ab[1]
                z = z - t * ab[2]
                radius = np.float32(ra) + t * np.float32(rb - ra)
            else:
                radius = np.float32(ra)
            d = np.sqrt(x * x + y * y + z * z)
            d -= radius
            view = self.sd[local]
            np.minimum(view, d, out=view)

    def add_field(self, lo: np.ndarray, hi: np.ndarray, field) -> None:
        """Union with ``field(x, y, z) -> sd`` evaluated on the voxels of the LPS box ``[lo, hi]``."""
        boxes = self._local(np.asarray(lo, float), np.asarray(hi, float))
        if boxes is None:
            return
        local, glob = boxes
        d = field(*self.grid.coords(glob)).astype(np.float32, copy=False)
        view = self.sd[local]
        np.minimum(view, d, out=view)

    def global_view(self, array: np.ndarray) -> np.ndarray:
        """The part of a full-grid array that this canvas covers."""
        return array[self.box]


def polyline_segments(points: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, ...]:
    """Consecutive point pairs of a polyline and their radii, as capsule arguments."""
    points = np.asarray(points, float)
    radii = np.broadcast_to(np.asarray(radii, float), (len(points),))
    return points[:-1], points[1:], radii[:-1], radii[1:]


def mark_polylines(mask: np.ndarray, grid: Grid, polylines: list[np.ndarray]) -> None:
    """Set the voxel containing each point of each densely resampled polyline (26-connected chains)."""
    step = 0.45 * min(grid.spacing)
    shape = np.array(grid.shape[::-1])
    for pts in polylines:
        pts = np.asarray(pts, float)
        dense = [pts[:1]]
        for a, b in zip(pts[:-1], pts[1:]):
            n = max(1, int(np.ceil(np.linalg.norm(b - a) / step)))
            dense.append(a + (b - a) * (np.arange(1, n + 1)[:, None] / n))
        ijk = np.rint(grid.to_index(np.concatenate(dense))).astype(int)
        ok = np.all((ijk >= 0) & (ijk < shape), axis=1)
        ijk = ijk[ok]
        mask[ijk[:, 2], ijk[:, 1], ijk[:, 0]] = 1


def capsule_distance_points(points: np.ndarray, p0: np.ndarray, p1: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Minimum signed distance (mm) of ``points (N, 3)`` to a set of capsules (for placement checks)."""
    points = np.asarray(points, float)
    best = np.full(len(points), np.inf)
    for a, b, rr in zip(np.atleast_2d(p0), np.atleast_2d(p1), np.broadcast_to(r, (len(np.atleast_2d(p0)),))):
        ab = b - a
        t = np.clip(((points - a) @ ab) / max(ab @ ab, 1e-12), 0.0, 1.0)
        d = np.linalg.norm(points - (a + t[:, None] * ab), axis=1) - rr
        np.minimum(best, d, out=best)
    return best
