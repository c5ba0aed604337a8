"""Physiological bronchial tree: named central airways, then space-filling asymmetric dichotomy.

The growth rules follow the model of Kitaoka, Takaki & Suki (J Appl Physiol 1999):

* every branch supplies a region of lung (a cloud of sample points); the
  region is cut in two by a plane containing the parent branch and the
  children head towards the centroids of their halves;
* the flow a child carries is proportional to its region; its diameter follows
  the flow-division law ``d_parent**n = d_1**n + d_2**n`` (``n = 2.8``);
* branching angles follow the minimum-power rule for that flow ratio;
* a branch is three times as long as it is wide (never past its centroid);
* growth stops when a lumen gets thinner than ``min_lumen_mm``, a region
  gets too small, or a branch would leave the lung.

The first generations are laid down explicitly (trachea, main bronchi at
their usual angles, the five lobar bronchi) so that the lobar names exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .anatomy import Patient, lung_sd

FLOW_EXPONENT = 2.8
LENGTH_RATIO = 3.0
LOBAR_NAMES = ("RightUpperLobeBronchus", "RightMiddleLobeBronchus", "RightLowerLobeBronchus",
               "LeftUpperLobeBronchus", "LeftLowerLobeBronchus")


@dataclass
class Branch:
    """One airway (or vessel) branch: centreline in LPS mm, lumen radius and wall thickness in mm."""

    id: int
    parent: int  # -1 for the root
    generation: int
    name: str
    points_lps: np.ndarray  # (N, 3), from the parent's end to this branch's end
    radius_mm: float
    wall_mm: float
    children: list[int] = field(default_factory=list)

    @property
    def diameter_mm(self) -> float:
        return 2.0 * self.radius_mm

    @property
    def length_mm(self) -> float:
        return float(np.linalg.norm(np.diff(self.points_lps, axis=0), axis=1).sum())

    @property
    def direction(self) -> np.ndarray:
        d = self.points_lps[-1] - self.points_lps[0]
        return d / max(np.linalg.norm(d), 1e-9)

    def to_json(self) -> dict:
        return {"id": self.id, "parent": self.parent, "generation": self.generation, "name": self.name,
                "radius_mm": round(self.radius_mm, 4), "wall_mm": round(self.wall_mm, 4),
                "length_mm": round(self.length_mm, 3), "children": list(self.children),
                "points_lps": np.round(self.points_lps, 4).tolist()}


@dataclass
class GrowthRules:
    min_lumen_mm: float = 1.5
    min_points: int = 6
    wall_ratio: float = 0.17  # wall thickness / lumen diameter
    max_generation: int = 24


class TreeBuilder:
    """Accumulates branches; ``grow`` applies the space-filling rules below a given branch."""

    def __init__(self, rng: np.random.Generator, rules: GrowthRules, inside: Callable[[np.ndarray], np.ndarray]):
        self.rng = rng
        self.rules = rules
        self.inside = inside  # (N, 3) -> signed distance to the organ (negative inside)
        self.branches: list[Branch] = []
        self.regions: dict[int, np.ndarray] = {}  # terminal branch -> the lung points it supplies

    def add(self, parent: int, points: np.ndarray, radius: float, name: str = "", bend: float = 0.04) -> int:
        points = np.asarray(points, float)
        if len(points) == 2 and bend > 0:
            # A slight, random bow so that centrelines are not ruler-straight.
            a, b = points
            axis = b - a
            g = self.rng.normal(size=3)
            perp = g - (g @ axis) / max(axis @ axis, 1e-12) * axis
            perp /= max(np.linalg.norm(perp), 1e-9)
            mid = (a + b) / 2 + perp * bend * np.linalg.norm(axis) * self.rng.uniform(-1, 1)
            points = np.stack([a, mid, b])
        gen = 0 if parent < 0 else self.branches[parent].generation + 1
        bid = len(self.branches)
        wall = self.rules.wall_ratio * 2 * radius
        self.branches.append(Branch(bid, parent, gen, name, points, float(radius), float(wall)))
        if parent >= 0:
            self.branches[parent].children.append(bid)
        return bid

    def grow(self, bid: int, points: np.ndarray) -> None:
        """Recursively split ``points`` (the region of branch ``bid``) below that branch."""
        stack = [(bid, points)]
        rules = self.rules
        n = FLOW_EXPONENT
        while stack:
            bid, pts = stack.pop()
            parent = self.branches[bid]
            start = parent.points_lps[-1]
            u = parent.direction
            if len(pts) < 2 * rules.min_points or parent.generation >= rules.max_generation:
                self.regions[bid] = pts
                continue
            halves = self._split(pts, start, u)
            kids = []
            d0 = parent.diameter_mm
            for half in halves:
                r = np.clip(len(half) / len(pts), 0.05, 0.95)
                d = d0 * r ** (1.0 / n) * self.rng.uniform(0.97, 1.03)
                if d < rules.min_lumen_mm or len(half) < rules.min_points:
                    continue
                end = self._child_end(start, u, half, r, d)
                if end is None:
                    continue
                kids.append((self.add(bid, [start, end], d / 2), half))
            if not kids:
                self.regions[bid] = pts
            stack.extend(kids)

    def _split(self, pts: np.ndarray, start: np.ndarray, u: np.ndarray) -> list[np.ndarray]:
        """Cut the region by the plane containing the parent axis, across the region's widest extent."""
        rel = pts - start
        perp = rel - np.outer(rel @ u, u)
        cov = perp.T @ perp
        w, v = np.linalg.eigh(cov)
        normal = v[:, -1]
        side = rel @ normal > 0
        frac = side.mean()
        if frac < 0.12 or frac > 0.88:  # the parent axis misses the region: cut through its centroid
            side = (pts - pts.mean(0)) @ normal > 0
        return [pts[side], pts[~side]]

    def _child_end(self, start, u, half, r, d) -> np.ndarray | None:
        n = FLOW_EXPONENT
        # Minimum-power branching angle for a child carrying flow fraction r.
        cos_t = (1 + r ** (4 / n) - (1 - r) ** (4 / n)) / (2 * r ** (2 / n))
        theta = np.arccos(np.clip(cos_t, np.cos(np.radians(75)), 1.0))
        c = half.mean(0)
        w = c - start
        w_perp = w - (w @ u) * u
        if np.linalg.norm(w_perp) < 1e-6:
            w_perp = np.array([0.0, -u[2], u[1]]) if abs(u[0]) < 0.9 else np.array([-u[2], 0.0, u[0]])
        direction = np.cos(theta) * u + np.sin(theta) * w_perp / np.linalg.norm(w_perp)
        length = min(LENGTH_RATIO * d * self.rng.uniform(0.85, 1.15), max(np.linalg.norm(w), 1.2 * d))
        outer = d / 2 * (1 + 2 * self.rules.wall_ratio)
        for _ in range(3):  # shorten rather than leave the lung
            end = start + direction * length
            if self.inside(end[None])[0] < -outer:
                return end
            length *= 0.6
            if length < 1.2 * d:
                break
        return None


class LungLookup:
    """Signed distance to the lungs from a precomputed 2 mm table (fast point queries while growing trees)."""

    def __init__(self, p: Patient, step: float = 2.0) -> None:
        lo, hi = p.lps_bounds()
        self.lo = lo - 4.0
        self.step = step
        axes = [np.arange(a, b + 4.0 + step, step, dtype=np.float32) for a, b in zip(self.lo, hi)]
        x, y, z = np.meshgrid(*axes, indexing="ij")
        left, right = lung_sd(p, x, y, z)
        self.table = np.minimum(left, right)
        self.hi_index = np.array(self.table.shape) - 1

    def __call__(self, q: np.ndarray) -> np.ndarray:
        idx = np.rint((np.atleast_2d(q) - self.lo) / self.step).astype(int)
        inside = np.all((idx >= 0) & (idx <= self.hi_index), axis=1)
        idx = np.clip(idx, 0, self.hi_index)
        return np.where(inside, self.table[idx[:, 0], idx[:, 1], idx[:, 2]], 99.0)


def sample_lung_points(p: Patient, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform points inside the lungs and their lobe (0 RUL, 1 RML, 2 RLL, 3 LUL, 4 LLL)."""
    lo, hi = p.lps_bounds()
    found: list[np.ndarray] = []
    total = 0
    while total < count:
        q = rng.uniform(lo, hi, size=(count, 3)).astype(np.float32)
        left, right = lung_sd(p, q[:, 0], q[:, 1], q[:, 2])
        keep = q[np.minimum(left, right) < -1.0]
        found.append(keep)
        total += len(keep)
    pts = np.concatenate(found)[:count].astype(float)
    return pts, lobe_of(p, pts)


def lobe_of(p: Patient, pts: np.ndarray) -> np.ndarray:
    """Lobes by fissure planes: oblique fissure high at the back, low in front; right horizontal fissure."""
    x, y, z = pts.T
    y_post, y_ant = p.cav_cy + p.cav_b, p.cav_cy - p.cav_b
    z_post, z_ant = p.carina[2] + 5 * p.s, 0.5 * (p.dome_r + p.dome_l) - 5 * p.s
    z_obl = z_ant + (y - y_ant) * (z_post - z_ant) / (y_post - y_ant)
    lower = z < z_obl
    left = x > p.med_x
    horizontal = z < p.carina[2] - 40 * p.s
    lobe = np.where(left, np.where(lower, 4, 3), np.where(lower, 2, np.where(horizontal, 1, 0)))
    return lobe


def _angled(axis_down: np.ndarray, lateral: float, angle_deg: float, posterior: float = 0.0) -> np.ndarray:
    a = np.radians(angle_deg)
    v = np.array([lateral * np.sin(a), posterior, -np.cos(a)])
    return v / np.linalg.norm(v)


def build_airway_tree(p: Patient, rng: np.random.Generator, rules: GrowthRules,
                      n_points: int = 60000) -> AirwayModel:
    """The whole tree for one patient: named central airways, then Kitaoka growth per lobe."""
    pts, lobe = sample_lung_points(p, rng, n_points)
    tb = TreeBuilder(rng, rules, LungLookup(p))
    n = FLOW_EXPONENT
    s = p.s
    d_trachea = 17.0 * s * rng.uniform(0.94, 1.06)
    top, carina = np.asarray(p.trachea_top, float), np.asarray(p.carina, float)
    ts = np.linspace(0, 1, 7)[:, None]
    trachea = top + ts * (carina - top)
    trachea[:, 0] += -2.5 * s * np.sin(np.pi * ts[:, 0]) * rng.uniform(0.5, 1.5)  # pushed right by the arch
    trachea[:, 1] += 3.0 * s * ts[:, 0] ** 2  # runs slightly backwards as it descends
    carina = trachea[-1].copy()
    t_id = tb.add(-1, trachea, d_trachea / 2, "Trachea", bend=0)

    counts = np.bincount(lobe, minlength=5).astype(float)
    right_n, left_n = counts[:3].sum(), counts[3:].sum()
    total = right_n + left_n

    def diam(parent_d: float, frac: float) -> float:
        return parent_d * frac ** (1.0 / n)

    down = np.array([0.0, 0.0, -1.0])
    d_r, d_l = diam(d_trachea, right_n / total), diam(d_trachea, left_n / total)
    rmb_end = carina + _angled(down, -1, rng.uniform(22, 28), 0.15) * rng.uniform(21, 25) * s
    lmb_end = carina + _angled(down, 1, rng.uniform(40, 48), 0.2) * rng.uniform(44, 50) * s
    rmb = tb.add(t_id, [carina, rmb_end], d_r / 2, "RightMainBronchus")
    lmb = tb.add(t_id, [carina, lmb_end], d_l / 2, "LeftMainBronchus")

    def toward(start: np.ndarray, sel: np.ndarray, length: float, lift: np.ndarray | None = None) -> np.ndarray:
        c = pts[sel].mean(0)
        v = c - start
        if lift is not None:
            v = v / np.linalg.norm(v) + lift
        return start + v / np.linalg.norm(v) * length

    rul_sel, rml_sel, rll_sel = lobe == 0, lobe == 1, lobe == 2
    lul_sel, lll_sel = lobe == 3, lobe == 4
    d_rul = diam(d_r, counts[0] / right_n)
    d_bi = diam(d_r, (counts[1] + counts[2]) / right_n)
    rul = tb.add(rmb, [rmb_end, toward(rmb_end, rul_sel, 13 * s, np.array([-0.6, 0, 0.2]))], d_rul / 2,
                 "RightUpperLobeBronchus")
    bi_end = rmb_end + _angled(down, -1, rng.uniform(8, 16), 0.25) * rng.uniform(22, 28) * s
    bi = tb.add(rmb, [rmb_end, bi_end], d_bi / 2, "BronchusIntermedius")
    d_rml = diam(d_bi, counts[1] / (counts[1] + counts[2]))
    d_rll = diam(d_bi, counts[2] / (counts[1] + counts[2]))
    rml = tb.add(bi, [bi_end, toward(bi_end, rml_sel, 12 * s, np.array([0, -0.5, 0]))], d_rml / 2,
                 "RightMiddleLobeBronchus")
    rll = tb.add(bi, [bi_end, toward(bi_end, rll_sel, 11 * s, np.array([0, 0.2, -1.0]))], d_rll / 2,
                 "RightLowerLobeBronchus")
    d_lul = diam(d_l, counts[3] / left_n)
    d_lll = diam(d_l, counts[4] / left_n)
    lul = tb.add(lmb, [lmb_end, toward(lmb_end, lul_sel, 12 * s, np.array([0.3, -0.4, 0.5]))], d_lul / 2,
                 "LeftUpperLobeBronchus")
    lll = tb.add(lmb, [lmb_end, toward(lmb_end, lll_sel, 12 * s, np.array([0, 0.3, -1.0]))], d_lll / 2,
                 "LeftLowerLobeBronchus")
    for bid, sel in ((rul, rul_sel), (rml, rml_sel), (rll, rll_sel), (lul, lul_sel), (lll, lll_sel)):
        tb.grow(bid, pts[sel])
    return AirwayModel(tb.branches, tb.regions, tb, pts, lobe)


@dataclass
class AirwayModel:
    """The grown tree plus what vessels and nodules need: lung sample points and terminal regions."""

    branches: list[Branch]
    regions: dict[int, np.ndarray]
    builder: TreeBuilder
    lung_points: np.ndarray
    lobes: np.ndarray
