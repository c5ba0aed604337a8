"""Bronchoscopic route planning on an airway tree: trachea -> nearest airway point to a target.

The route follows the centerline from the trachea's free end through the
branch sequence to the centerline point nearest the target (e.g. a nodule),
reports the straight remaining distance, the narrowest lumen on the way and,
for a given scope, where the lumen first becomes narrower than the scope.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from ..errors import InputError
from ..result import Curve, Table
from ..volume import Volume
from .tree import AirwayTree

MAX_TARGET_DISTANCE_MM = 40.0


@dataclass
class Route:
    """A centerline path (proximal to distal) with lumen radius and distance along the path per point."""

    target_lps: np.ndarray
    points_lps: np.ndarray  # (N, 3)
    radius_mm: np.ndarray  # (N,)
    distance_mm: np.ndarray  # (N,) along the path from the trachea's end
    branch_ids: np.ndarray  # (N,) branch each point belongs to
    branches: list[dict] = field(default_factory=list)  # id, name, generation, lobe, start_mm, end_mm, min_diameter_mm
    remaining_mm: float = 0.0  # straight line from the route's end to the target
    scope_diameter_mm: float | None = None
    scope_stop: dict | None = None  # first point where the lumen is narrower than the scope

    @property
    def path_length_mm(self) -> float:
        return float(self.distance_mm[-1])

    @property
    def narrowest_index(self) -> int:
        return int(np.argmin(self.radius_mm))

    @property
    def narrowest_diameter_mm(self) -> float:
        return float(2.0 * self.radius_mm[self.narrowest_index])

    def summary(self) -> dict:
        """Plain-JSON figures of the route (for ``Result.metrics`` and reports)."""
        last = self.branches[-1]
        return {
            "target_lps": [round(float(v), 2) for v in self.target_lps],
            "end_lps": [round(float(v), 2) for v in self.points_lps[-1]],
            "path_length_mm": round(self.path_length_mm, 2),
            "remaining_mm": round(self.remaining_mm, 2),
            "end_branch": {"id": last["id"], "name": last["name"], "generation": last["generation"]},
            "branch_sequence": [b["name"] or f"Branch {b['id']}" for b in self.branches],
            "narrowest_diameter_mm": round(self.narrowest_diameter_mm, 2),
            "narrowest_at_mm": round(float(self.distance_mm[self.narrowest_index]), 2),
            "scope_diameter_mm": self.scope_diameter_mm,
            "scope_stop": self.scope_stop,
        }

    def to_curve(self, name: str = "Route") -> Curve:
        attributes = {k: v for k, v in self.summary().items() if k not in ("target_lps",)}
        attributes["target_lps"] = [float(v) for v in self.target_lps]
        return Curve(name, self.points_lps.copy(), self.radius_mm.copy(), None, attributes)

    def to_table(self) -> Table:
        """One row per branch along the route, trachea first."""
        keys = ("order", "branch_id", "name", "generation", "lobe", "start_mm", "end_mm", "min_diameter_mm",
                "scope_passes")
        cols: dict[str, list] = {k: [] for k in keys}
        for n, b in enumerate(self.branches):
            passes = None if self.scope_diameter_mm is None else bool(b["min_diameter_mm"] >= self.scope_diameter_mm)
            row = (n, b["id"], b["name"], b["generation"], b["lobe"], b["start_mm"], b["end_mm"], b["min_diameter_mm"],
                   passes)
            for key, value in zip(keys, row):
                cols[key].append(value)
        return Table("airway_route", cols)


def plan_route(
    tree: AirwayTree,
    target_lps: np.ndarray,
    scope_diameter_mm: float | None = None,
    lung_mask: Volume | None = None,
    max_distance_mm: float = MAX_TARGET_DISTANCE_MM,
) -> Route:
    """Route from the trachea to the airway centerline point nearest ``target_lps`` (LPS mm).

    Raises ``InputError`` when the target is farther than ``max_distance_mm``
    from every airway centerline point, or outside ``lung_mask`` when given.
    """
    target = np.asarray(target_lps, dtype=float).reshape(3)
    if not np.all(np.isfinite(target)):
        raise InputError("target", f"target {target.tolist()} is not a finite LPS point")
    if scope_diameter_mm is not None and not scope_diameter_mm > 0:
        raise InputError("scope diameter", f"must be positive, got {scope_diameter_mm}")
    if lung_mask is not None and not _inside(lung_mask, target):
        raise InputError("target", f"target {_fmt(target)} lies outside the lung mask")

    owners = np.concatenate([np.full(len(b.points_lps), b.id) for b in tree.branches])
    indices = np.concatenate([np.arange(len(b.points_lps)) for b in tree.branches])
    points = np.concatenate([b.points_lps for b in tree.branches])
    gap, nearest = cKDTree(points).query(target)
    if gap > max_distance_mm:
        raise InputError(
            "target", f"target {_fmt(target)} is {gap:.1f} mm from the nearest airway (limit {max_distance_mm:g} mm)"
        )
    end_branch, end_index = int(owners[nearest]), int(indices[nearest])

    pts, radii, ids = [], [], []
    for bid in tree.lineage(end_branch):
        b = tree.branches[bid]
        stop = end_index + 1 if bid == end_branch else len(b.points_lps)
        start = 1 if pts else 0  # a child's first point repeats its parent's junction
        pts.append(b.points_lps[start:stop])
        radii.append(b.radius_mm[start:stop])
        ids.append(np.full(max(stop - start, 0), bid))
    points_path = np.concatenate(pts)
    radius_path = np.concatenate(radii)
    branch_path = np.concatenate(ids).astype(int)
    steps = np.linalg.norm(np.diff(points_path, axis=0), axis=1)
    distance = np.concatenate([[0.0], np.cumsum(steps)])

    route = Route(target, points_path, radius_path, distance, branch_path, remaining_mm=float(gap),
                  scope_diameter_mm=scope_diameter_mm)
    for bid in tree.lineage(end_branch):
        on = branch_path == bid
        if not on.any():
            continue
        b = tree.branches[bid]
        route.branches.append({
            "id": bid, "name": b.name, "generation": b.generation, "lobe": b.lobe,
            "start_mm": round(float(distance[on][0]), 2), "end_mm": round(float(distance[on][-1]), 2),
            "min_diameter_mm": round(float(2 * radius_path[on].min()), 2),
        })
    if scope_diameter_mm is not None:
        narrow = np.flatnonzero(2.0 * radius_path < scope_diameter_mm)
        if narrow.size:
            i = int(narrow[0])
            b = tree.branches[int(branch_path[i])]
            route.scope_stop = {
                "distance_mm": round(float(distance[i]), 2),
                "to_target_mm": round(float(distance[-1] - distance[i] + gap), 2),
                "branch_id": b.id, "name": b.name, "generation": b.generation,
                "point_lps": [round(float(v), 2) for v in points_path[i]],
                "lumen_diameter_mm": round(float(2 * radius_path[i]), 2),
            }
    return route


def _inside(mask: Volume, point: np.ndarray) -> bool:
    ijk = np.rint(mask.physical_to_index(point)).astype(int)
    k, j, i = ijk[2], ijk[1], ijk[0]
    nk, nj, ni = mask.shape
    return 0 <= i < ni and 0 <= j < nj and 0 <= k < nk and bool(mask.array[k, j, i] > 0)


def _fmt(point: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in point) + ")"
