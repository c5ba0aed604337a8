"""Lung nodules (solid, part-solid, ground-glass; round, lobulated, spiculated) and look-alike distractors.

A nodule is an analytic signed-distance shape; its label is the set of voxel
centres inside it. ``volume_mm3`` is the shape's own volume (integrated on a
fine grid) and ``diameter_mm`` its equivalent-sphere diameter, so a label's
voxel count converges to them as the grid gets finer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .raster import capsule_distance_points

KINDS = ("solid", "part-solid", "ground-glass")
SHAPES = ("round", "lobulated", "spiculated")
LOCATIONS = ("isolated", "juxta-vascular", "juxta-pleural")
NODULE_HU = {"solid": 30.0, "part-solid": -600.0, "ground-glass": -630.0}


@dataclass
class NoduleSpec:
    """One nodule: position (LPS mm), size, appearance and where it sits."""

    label: int
    center_lps: np.ndarray
    diameter_mm: float  # equivalent-sphere diameter of the shape
    volume_mm3: float
    kind: str
    shape: str
    location: str
    radius_mm: float = 0.0  # base radius of the shape before lobulation / spicules
    hu: float = 0.0
    lobes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # (k, 4): direction xyz, amplitude
    spikes: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))  # (k, 7): direction, length, r0, r1, -

    def to_json(self) -> dict:
        return {"label": self.label, "center_lps": np.round(self.center_lps, 3).tolist(),
                "diameter_mm": round(self.diameter_mm, 3), "volume_mm3": round(self.volume_mm3, 2),
                "kind": self.kind, "shape": self.shape, "location": self.location, "hu": round(self.hu, 1)}

    @property
    def extent_mm(self) -> float:
        """Radius of a sphere that holds the whole shape."""
        amp = float(np.abs(self.lobes[:, 3]).sum()) if len(self.lobes) else 0.0
        spike = float(self.spikes[:, 3].max()) if len(self.spikes) else 0.0
        return self.radius_mm * (1 + amp) + spike + 0.5

    def sd(self, x, y, z):
        """Signed distance (mm, approximate off the surface) of coordinate arrays to the nodule."""
        c = [float(v) for v in self.center_lps]
        dx, dy, dz = x - c[0], y - c[1], z - c[2]
        r = np.sqrt(dx * dx + dy * dy + dz * dz) + 1e-6
        radius = np.full_like(r, self.radius_mm)
        for ux, uy, uz, amp in self.lobes:
            cosang = (dx * ux + dy * uy + dz * uz) / r
            radius += np.float32(self.radius_mm * amp) * np.clip(cosang, 0, 1) ** 3
        d = r - radius
        for ux, uy, uz, length, r0, r1, _ in self.spikes:
            t = np.clip((dx * ux + dy * uy + dz * uz) / (self.radius_mm + length), 0, 1)
            px, py, pz = dx - t * ux * (self.radius_mm + length), dy - t * uy * (self.radius_mm + length), \
                dz - t * uz * (self.radius_mm + length)
            ds = np.sqrt(px * px + py * py + pz * pz) - (r0 + t * (r1 - r0))
            d = np.minimum(d, ds)
        return d.astype(np.float32, copy=False)


def _measure(spec: NoduleSpec) -> float:
    """Volume of the shape (mm^3) by counting centres of a fine grid (~110 k samples)."""
    ext = spec.extent_mm
    n = 48
    step = 2 * ext / n
    ax = (np.arange(n, dtype=np.float32) + 0.5) * step - ext
    x, y, z = np.meshgrid(ax, ax, ax, indexing="ij")
    c = spec.center_lps
    inside = spec.sd(x + np.float32(c[0]), y + np.float32(c[1]), z + np.float32(c[2])) <= 0
    return float(inside.sum()) * step**3


def _unit(rng: np.random.Generator, k: int) -> np.ndarray:
    v = rng.normal(size=(k, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_nodule(rng: np.random.Generator, label: int, center: np.ndarray, diameter: float, kind: str, shape: str,
                location: str) -> NoduleSpec:
    r = diameter / 2
    spec = NoduleSpec(label, np.asarray(center, float), diameter, 0.0, kind, shape, location, r)
    spec.hu = NODULE_HU[kind] + rng.normal(0, 15 if kind == "solid" else 40)
    if shape in ("lobulated", "spiculated"):
        k = int(rng.integers(3, 6))
        spec.lobes = np.column_stack([_unit(rng, k), rng.uniform(0.1, 0.25, k)])
    if shape == "spiculated":
        k = int(rng.integers(4, 9))
        dirs = _unit(rng, k)
        length = rng.uniform(0.5, 1.2, k) * r + 2.0
        r0 = np.clip(rng.uniform(0.12, 0.2, k) * r, 0.5, 1.5)
        spec.spikes = np.column_stack([dirs, length, r0, np.full(k, 0.25), np.zeros(k)])
    spec.volume_mm3 = _measure(spec) if shape != "round" else np.pi / 6 * diameter**3
    spec.diameter_mm = float((6 * spec.volume_mm3 / np.pi) ** (1 / 3))
    return spec


def place_nodules(rng: np.random.Generator, count: int, lung_points: np.ndarray, lung_sd, airway_caps: tuple,
                  vessel_caps: tuple, min_mm: float = 3.0, max_mm: float = 30.0,
                  kinds: tuple[str, ...] = KINDS) -> list[NoduleSpec]:
    """Draw ``count`` nodules at free places in the lungs, never touching the airway.

    ``lung_sd(points) -> sd``; ``*_caps = (p0, p1, radius)`` arrays of capsules.
    """
    out: list[NoduleSpec] = []
    vp0, vp1, vr = vessel_caps
    big_vessels = np.flatnonzero(vr >= 1.2)
    for label in range(1, count + 1):
        for _attempt in range(60):
            d = float(min_mm + (max_mm - min_mm) * rng.uniform() ** 2.2)
            kind = str(rng.choice(kinds, p=_kind_p(kinds)))
            shape = str(rng.choice(SHAPES, p=[0.5, 0.3, 0.2]))
            location = str(rng.choice(LOCATIONS, p=[0.45, 0.3, 0.25]))
            r = d / 2
            if location == "juxta-vascular" and len(big_vessels):
                i = int(rng.choice(big_vessels))
                t = rng.uniform(0.2, 0.8)
                axis = vp1[i] - vp0[i]
                side = np.cross(axis, rng.normal(size=3))
                side /= max(np.linalg.norm(side), 1e-9)
                center = vp0[i] + t * axis + side * (vr[i] + 0.8 * r)
            else:
                center = lung_points[int(rng.integers(len(lung_points)))]
            spec = make_nodule(rng, label, center, d, kind, shape, location)
            ext = spec.extent_mm
            sd_lung = float(lung_sd(center[None])[0])
            if location == "juxta-pleural":
                # Slide the centre outwards until the shape touches the pleura.
                if sd_lung > -ext - 1.0 or sd_lung < -ext - 25.0:
                    continue
                grad = _gradient(lung_sd, center)
                center = center + grad * (-(sd_lung + spec.radius_mm + 0.3))
                spec.center_lps = center
            elif sd_lung > -ext - 2.0:
                continue
            if len(airway_caps[0]) and capsule_distance_points(center[None], *airway_caps)[0] < ext + 2.0:
                continue
            if location == "isolated" and capsule_distance_points(center[None], vp0, vp1, vr)[0] < ext + 1.5:
                continue
            if any(np.linalg.norm(center - o.center_lps) < ext + o.extent_mm + 3 for o in out):
                continue
            out.append(spec)
            break
    return out


def _kind_p(kinds: tuple[str, ...]) -> list[float]:
    w = {"solid": 0.6, "part-solid": 0.2, "ground-glass": 0.2}
    p = np.array([w[k] for k in kinds])
    return list(p / p.sum())


def _gradient(f, point: np.ndarray, h: float = 1.0) -> np.ndarray:
    g = np.array([(f((point + e * h)[None])[0] - f((point - e * h)[None])[0]) / (2 * h) for e in np.eye(3)])
    return g / max(np.linalg.norm(g), 1e-9)


@dataclass
class Distractor:
    """A nodule look-alike that is not a nodule: a linear scar or a vessel crossing."""

    kind: str  # "scar" or "vessel-crossing"
    p0: np.ndarray
    p1: np.ndarray
    radius_mm: float
    hu: float

    def to_json(self) -> dict:
        return {"kind": self.kind, "p0": np.round(self.p0, 3).tolist(), "p1": np.round(self.p1, 3).tolist(),
                "radius_mm": round(self.radius_mm, 3), "hu": round(self.hu, 1)}


def place_distractors(rng: np.random.Generator, count: int, lung_points: np.ndarray, lung_sd,
                      airway_caps: tuple) -> list[Distractor]:
    """Linear scars (thin dense bands, often subpleural) and short crossing vessel pairs."""
    out: list[Distractor] = []
    for _ in range(count * 20):
        if len(out) >= count:
            break
        c = lung_points[int(rng.integers(len(lung_points)))]
        kind = "scar" if rng.uniform() < 0.5 else "vessel-crossing"
        length = rng.uniform(12, 30) if kind == "scar" else rng.uniform(10, 18)
        radius = rng.uniform(0.6, 1.2) if kind == "scar" else rng.uniform(1.2, 2.2)
        axis = _unit(rng, 1)[0]
        pair = [(c - axis * length / 2, c + axis * length / 2)]
        if kind == "vessel-crossing":
            other = np.cross(axis, _unit(rng, 1)[0])
            other /= np.linalg.norm(other)
            pair.append((c - other * length / 2, c + other * length / 2))
        ends = np.array([e for seg in pair for e in seg])
        if np.any(lung_sd(ends) > -radius - 1.0) or float(lung_sd(c[None])[0]) > -radius - 2:
            continue
        if len(airway_caps[0]) and np.min(capsule_distance_points(ends, *airway_caps)) < radius + 3:
            continue
        if len(airway_caps[0]) and capsule_distance_points(c[None], *airway_caps)[0] < radius + 3:
            continue
        hu = rng.uniform(-250, 0) if kind == "scar" else 40.0
        out.extend(Distractor(kind, a, b, radius, hu) for a, b in pair)
    return out
