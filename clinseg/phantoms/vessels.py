"""Pulmonary vessels: arteries running beside the bronchi, veins as a second tree between them.

* Each intrapulmonary bronchus gets a companion artery of about its lumen
  diameter, displaced sideways by the bronchus's outer radius, the artery's
  radius and a gap; the artery tree starts at the hilar pulmonary artery and
  continues past the terminal bronchi into their regions (CT shows vessels
  closer to the pleura than airways).
* Veins grow from the left atrium by the same space-filling rules but with
  their own random cuts, so they run between the bronchovascular bundles.

Vessels never touch the airway: the renderer subtracts a shell of ``gap`` mm
around the airway from the vessel distance field (exact ground truth unaffected).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .airway_tree import Branch, GrowthRules, TreeBuilder
from .anatomy import Patient

ARTERY, VEIN = 1, 2


@dataclass
class VesselSegment:
    p0: np.ndarray
    p1: np.ndarray
    r0: float
    r1: float
    kind: int  # ARTERY or VEIN


def _perpendicular(v: np.ndarray, hint: np.ndarray) -> np.ndarray:
    w = hint - (hint @ v) * v
    if np.linalg.norm(w) < 1e-6:
        w = np.cross(v, [0.0, 0.0, 1.0]) if abs(v[2]) < 0.9 else np.cross(v, [1.0, 0.0, 0.0])
    return w / np.linalg.norm(w)


def build_vessels(p: Patient, airway: list[Branch], regions: dict[int, np.ndarray], builder: TreeBuilder,
                  rng: np.random.Generator, lung_points: np.ndarray, gap_mm: float = 1.0,
                  min_vessel_mm: float = 1.2) -> list[VesselSegment]:
    """Artery and vein centrelines (as tapered segments) for one patient."""
    segs: list[VesselSegment] = []
    hilum = {t.name: t.points[-1] for t in p.tubes if t.name.endswith("pulmonary_artery")}
    art_end: dict[int, np.ndarray] = {}
    radius_at: dict[tuple, float] = {}  # artery end point -> its radius (children start as wide)
    offset: dict[int, np.ndarray] = {}
    ext_rules = GrowthRules(min_lumen_mm=min_vessel_mm, min_points=3, wall_ratio=0.0)
    extender = TreeBuilder(rng, ext_rules, builder.inside)
    for b in airway:
        if b.generation < 2:
            continue
        parent_is_central = airway[b.parent].generation < 2
        v = b.direction
        if parent_is_central:
            side = "right" if b.points_lps[-1][0] < p.med_x else "left"
            start = hilum[f"{side}_pulmonary_artery"]
            hint = np.array([-1.0 if side == "right" else 1.0, -1.0, 0.0])
        else:
            start = art_end[b.parent]
            hint = offset[b.parent]
        o = _perpendicular(v, hint)
        r_art = b.radius_mm * rng.uniform(0.95, 1.15)
        shift = b.radius_mm + b.wall_mm + r_art + gap_mm + 0.3
        end = b.points_lps[-1] + o * shift
        r_start = max(r_art, min(radius_at.get(tuple(start), r_art), 1.3 * r_art))
        radius_at[tuple(end)] = r_art
        segs.append(VesselSegment(start, end, r_start, r_art, ARTERY))
        art_end[b.id], offset[b.id] = end, o
        if not b.children and b.id in regions and len(regions[b.id]) >= 4:
            # Continue the artery into the region the terminal bronchus supplies.
            root = extender.add(-1, [start, end], r_art, bend=0)
            extender.grow(root, regions[b.id])
    for e in extender.branches:
        if e.parent >= 0:
            pts = e.points_lps
            segs.append(VesselSegment(pts[0], pts[-1], e.radius_mm, e.radius_mm, ARTERY))
    segs.extend(_veins(p, rng, builder, lung_points, 1.4 * min_vessel_mm))
    return segs


def _veins(p: Patient, rng: np.random.Generator, builder: TreeBuilder, lung_points: np.ndarray,
           min_vessel_mm: float) -> list[VesselSegment]:
    atrium = next(t for t in p.tubes if t.name == "left_atrium")
    rules = GrowthRules(min_lumen_mm=min_vessel_mm, min_points=3, wall_ratio=0.0)
    tb = TreeBuilder(rng, rules, builder.inside)
    segs: list[VesselSegment] = []
    s = p.s
    for sign, end_lps in ((-1, atrium.points[0]), (1, atrium.points[-1])):
        side_pts = lung_points[(lung_points[:, 0] - p.med_x) * sign > 0]
        for level, sel in (("upper", side_pts[:, 2] > end_lps[2]), ("lower", side_pts[:, 2] <= end_lps[2])):
            region = side_pts[sel]
            if len(region) < 20:
                continue
            d = 13.0 * s * rng.uniform(0.9, 1.1)
            hilum = end_lps + np.array([sign * 28 * s, rng.uniform(-4, 4) * s, (12 if level == "upper" else -8) * s])
            root = tb.add(-1, [end_lps, hilum], d / 2, bend=0.1)
            segs.append(VesselSegment(end_lps, hilum, d / 2, d / 2, VEIN))
            tb.grow(root, region)
    for b in tb.branches:
        if b.parent >= 0:
            segs.append(VesselSegment(b.points_lps[0], b.points_lps[-1], b.radius_mm, b.radius_mm, VEIN))
    return segs
