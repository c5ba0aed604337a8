"""Head & neck organs at risk: the organ table (names, colours, codes, CT numbers) and analytic organ shapes.

Positions and sizes are in a patient frame (LPS mm) whose origin is the
brainstem centroid; the figures are the mean centroids, extents and volumes
measured on the oncologist masks of the TCIA/DeepMind H&N set (brainstem
26 ml, parotid 27 ml, eye 8.7 ml, mandible 59 ml, ...). Every organ is a
union of simple solids (ellipsoids, tapered capsules, a swept arch for the
mandible) evaluated only inside its own bounding box.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..terminology import ANATOMICAL_STRUCTURE, LEFT, RIGHT, Code, Segment


@dataclass(frozen=True)
class OrganSpec:
    """One organ of the phantom: its segment, its CT number and the names other datasets give it."""

    segment: Segment
    hu: float
    aliases: tuple[str, ...] = ()


def _seg(label: int, name: str, color: tuple[float, float, float], code: Code, side: Code | None = None) -> Segment:
    return Segment(label, name, color, ANATOMICAL_STRUCTURE, code, side)


# SNOMED CT codes. Sure: brain, brainstem, spinal cord, mandible, eye, lens, optic nerve, parotid,
# submandibular, lacrimal gland, lung. Less sure: optic chiasm 244453006 (matches the DICOM CID 7153 list),
# cochlea 80169004, spinal canal 61843000 (checked against no list: verify before relying on it).
_BRAIN = ("SCT", "12738006", "Brain")
_BRAINSTEM = ("SCT", "15926001", "Brainstem")
_CORD = ("SCT", "2748008", "Spinal cord")
_CANAL = ("SCT", "61843000", "Spinal canal")
_MANDIBLE = ("SCT", "91609006", "Mandible")
_EYE = ("SCT", "81745001", "Eye")
_LENS = ("SCT", "78076003", "Lens of eye")
_OPTIC_NERVE = ("SCT", "18234004", "Optic nerve")
_CHIASM = ("SCT", "244453006", "Optic chiasm")
_PAROTID = ("SCT", "45289007", "Parotid gland")
_SUBMANDIBULAR = ("SCT", "54019009", "Submandibular gland")
_COCHLEA = ("SCT", "80169004", "Cochlea")
_LACRIMAL = ("SCT", "13561001", "Lacrimal gland")
_LUNG = ("SCT", "39607008", "Lung")

# Label values are fixed: a model's output channel k is organ label k.
ORGANS: tuple[OrganSpec, ...] = (
    OrganSpec(_seg(1, "Brain", (0.98, 0.84, 0.70), _BRAIN), 32, ("Brain",)),
    OrganSpec(_seg(2, "Brainstem", (0.85, 0.60, 0.40), _BRAINSTEM), 30, ("Brainstem", "BrainStem")),
    OrganSpec(_seg(3, "Spinal cord", (1.00, 0.95, 0.40), _CORD), 35, ("Spinal-Cord", "SpinalCord")),
    OrganSpec(_seg(4, "Spinal canal", (0.55, 0.80, 0.95), _CANAL), 8, ("Spinal-Canal",)),
    OrganSpec(_seg(5, "Mandible", (0.95, 0.95, 0.85), _MANDIBLE), 700, ("Mandible",)),
    OrganSpec(_seg(6, "Eye L", (0.40, 0.70, 1.00), _EYE, LEFT), 15, ("Orbit-Lt", "Eye_L")),
    OrganSpec(_seg(7, "Eye R", (0.30, 0.60, 0.95), _EYE, RIGHT), 15, ("Orbit-Rt", "Eye_R")),
    OrganSpec(_seg(8, "Lens L", (0.85, 1.00, 1.00), _LENS, LEFT), 100, ("Lens-Lt", "Lens_L")),
    OrganSpec(_seg(9, "Lens R", (0.75, 0.95, 1.00), _LENS, RIGHT), 100, ("Lens-Rt", "Lens_R")),
    OrganSpec(_seg(10, "Optic nerve L", (1.00, 0.90, 0.20), _OPTIC_NERVE, LEFT), 30,
              ("Optic-Nerve-Lt", "OpticNerve_L")),
    OrganSpec(_seg(11, "Optic nerve R", (0.95, 0.80, 0.10), _OPTIC_NERVE, RIGHT), 30,
              ("Optic-Nerve-Rt", "OpticNerve_R")),
    OrganSpec(_seg(12, "Optic chiasm", (0.40, 0.42, 0.10), _CHIASM), 32, ("Chiasm", "OpticChiasm")),
    OrganSpec(_seg(13, "Parotid L", (0.20, 0.80, 0.40), _PAROTID, LEFT), 10, ("Parotid-Lt", "Parotid_L")),
    OrganSpec(_seg(14, "Parotid R", (0.10, 0.65, 0.30), _PAROTID, RIGHT), 10, ("Parotid-Rt", "Parotid_R")),
    OrganSpec(_seg(15, "Submandibular L", (0.60, 0.30, 0.80), _SUBMANDIBULAR, LEFT), 45,
              ("Submandibular-Lt", "Submandible_L", "Submandibular_L")),
    OrganSpec(_seg(16, "Submandibular R", (0.50, 0.20, 0.70), _SUBMANDIBULAR, RIGHT), 45,
              ("Submandibular-Rt", "Submandible_R", "Submandibular_R")),
    OrganSpec(_seg(17, "Cochlea L", (1.00, 0.40, 0.60), _COCHLEA, LEFT), 150, ("Cochlea-Lt", "Cochlea_L")),
    OrganSpec(_seg(18, "Cochlea R", (0.90, 0.30, 0.50), _COCHLEA, RIGHT), 150, ("Cochlea-Rt", "Cochlea_R")),
    OrganSpec(_seg(19, "Lacrimal L", (0.20, 0.90, 0.90), _LACRIMAL, LEFT), 45, ("Lacrimal-Lt", "Lacrimal_L")),
    OrganSpec(_seg(20, "Lacrimal R", (0.10, 0.75, 0.80), _LACRIMAL, RIGHT), 45, ("Lacrimal-Rt", "Lacrimal_R")),
    OrganSpec(_seg(21, "Lung L", (0.77, 0.69, 0.59), _LUNG, LEFT), -820, ("Lung-Lt", "Lung_L")),
    OrganSpec(_seg(22, "Lung R", (0.70, 0.62, 0.52), _LUNG, RIGHT), -820, ("Lung-Rt", "Lung_R")),
)
BY_NAME: dict[str, OrganSpec] = {o.segment.name: o for o in ORGANS}


def _key(name: str) -> str:
    """Datasets spell one structure 'Spinal_cord', 'Spinal-Cord' or 'spinal cord': compare them alike."""
    return " ".join(name.strip().lower().replace("_", " ").replace("-", " ").split())


_ALIASES = {_key(a): o.segment.name for o in ORGANS for a in (*o.aliases, o.segment.name)}

# A structure drawn inside another: a voxel holds one label, so the outer organ's full mask is its label
# plus its children's (lens inside the eye, cord inside the canal). Painting order: parents first.
CHILDREN: dict[str, tuple[str, ...]] = {
    "Spinal canal": ("Spinal cord",),
    "Eye L": ("Lens L",),
    "Eye R": ("Lens R",),
}
PAINT_ORDER: tuple[str, ...] = (
    "Lung L", "Lung R", "Brain", "Spinal canal", "Spinal cord", "Brainstem", "Mandible", "Parotid L", "Parotid R",
    "Submandibular L", "Submandibular R", "Eye L", "Eye R", "Lacrimal L", "Lacrimal R", "Optic nerve L",
    "Optic nerve R", "Optic chiasm", "Lens L", "Lens R", "Cochlea L", "Cochlea R",
)


def canonical_organ_name(name: str) -> str | None:
    """Our organ name for a dataset's structure name (``'Parotid-Lt'``, ``'OpticNerve_L'``...), or ``None``."""
    return _ALIASES.get(_key(name))


def organ_segments(names: list[str] | None = None) -> list[Segment]:
    """Segments of the named organs (all by default), in label order."""
    return [o.segment for o in ORGANS if names is None or o.segment.name in names]


# --- analytic shapes ------------------------------------------------------------------------------------------------


class Canvas:
    """Boolean masks on an axis-aligned LPS grid, drawn primitive by primitive inside bounding boxes."""

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float],
                 origin: tuple[float, float, float]) -> None:
        self.shape = shape
        self.spacing = np.asarray(spacing, float)
        self.origin = np.asarray(origin, float)

    def box(self, lo, hi) -> tuple[tuple[slice, slice, slice], tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
        """Array slices of the voxels inside the LPS box and their broadcastable ``x, y, z`` coordinates."""
        ilo = np.maximum(np.floor((np.asarray(lo) - self.origin) / self.spacing).astype(int), 0)
        ihi = np.minimum(np.ceil((np.asarray(hi) - self.origin) / self.spacing).astype(int) + 1,
                         np.array(self.shape[::-1]))
        if np.any(ihi <= ilo):
            return None
        sl = (slice(ilo[2], ihi[2]), slice(ilo[1], ihi[1]), slice(ilo[0], ihi[0]))
        x = (self.origin[0] + self.spacing[0] * np.arange(ilo[0], ihi[0], dtype=np.float32))[None, None, :]
        y = (self.origin[1] + self.spacing[1] * np.arange(ilo[1], ihi[1], dtype=np.float32))[None, :, None]
        z = (self.origin[2] + self.spacing[2] * np.arange(ilo[2], ihi[2], dtype=np.float32))[:, None, None]
        return sl, (x, y, z)

    def draw(self, mask: np.ndarray, lo, hi, inside: Callable) -> None:
        """``mask |= inside(x, y, z)`` over the LPS box ``[lo, hi]``."""
        found = self.box(lo, hi)
        if found is not None:
            sl, xyz = found
            mask[sl] |= inside(*xyz)

    def ellipsoid(self, mask: np.ndarray, c, r) -> None:
        c, r = np.asarray(c, float), np.asarray(r, float)
        self.draw(mask, c - r, c + r, lambda x, y, z: ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2
                  + ((z - c[2]) / r[2]) ** 2 <= 1.0)

    def capsules(self, mask: np.ndarray, points, radii) -> None:
        """Tapered capsules along a polyline (radius per point)."""
        points = np.asarray(points, float)
        radii = np.broadcast_to(np.asarray(radii, float), (len(points),))
        for a, b, ra, rb in zip(points[:-1], points[1:], radii[:-1], radii[1:]):
            pad = max(ra, rb)
            ab = b - a
            ab2 = max(float(ab @ ab), 1e-9)

            def inside(x, y, z, a=a, ab=ab, ab2=ab2, ra=ra, rb=rb):
                t = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / ab2, 0.0, 1.0)
                d2 = (x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (z - a[2] - t * ab[2]) ** 2
                return d2 <= (ra + t * (rb - ra)) ** 2

            self.draw(mask, np.minimum(a, b) - pad, np.maximum(a, b) + pad, inside)

    def empty(self) -> np.ndarray:
        return np.zeros(self.shape, bool)


@dataclass
class Arch:
    """The mandibular arch: ``x = w sin t``, ``y = chin_y + depth (1 - cos t)`` for ``t`` in [-pi/2, pi/2]."""

    chin_y: float
    depth: float
    width: float

    def point(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, float)
        return np.stack([self.width * np.sin(t), self.chin_y + self.depth * (1 - np.cos(t))], -1)


@dataclass
class AnalyticAnatomy:
    """Organ masks plus the few landmarks the CT synthesis needs beyond them (dental arch, occlusal plane)."""

    organs: dict[str, np.ndarray]
    arch: Arch
    mandible_top_z: float  # top of the lower alveolar ridge (the lower teeth stand on it)
    hyoid: np.ndarray  # polyline (N, 3) of the hyoid bone


def analytic_organs(canvas: Canvas, rng: np.random.Generator) -> AnalyticAnatomy:
    """Draw every organ on ``canvas`` with a per-seed global scale and small per-organ jitter."""
    s = rng.uniform(0.94, 1.06)  # head size

    def j(c, amount: float = 1.5) -> np.ndarray:
        return np.asarray(c, float) * s + rng.normal(0.0, amount, 3)

    def r(radii, amount: float = 0.06) -> np.ndarray:
        return np.asarray(radii, float) * s * rng.uniform(1 - amount, 1 + amount)

    m: dict[str, np.ndarray] = {}
    new = canvas.empty
    # Brain: cerebrum, cerebellum, temporal lobes.
    brain = new()
    canvas.ellipsoid(brain, j((0, 4, 44)), r((68, 86, 60), 0.03))
    # Skull base: the frontal lobes rest on the orbital roofs, the sella sits between the temporal lobes.
    floor = new()
    canvas.draw(floor, (-80, -120, -60), (80, -34 * s, 40 * s), lambda x, y, z: np.ones(np.broadcast_shapes(
        x.shape, y.shape, z.shape), bool))
    canvas.draw(floor, (-22 * s, -120, -60), (22 * s, -8 * s, 16 * s), lambda x, y, z: np.ones(np.broadcast_shapes(
        x.shape, y.shape, z.shape), bool))
    brain &= ~floor
    canvas.ellipsoid(brain, j((0, 38, -8)), r((52, 32, 24)))
    for side in (1, -1):
        canvas.ellipsoid(brain, j((side * 42, -20, 14)), r((22, 26, 18)))
    m["Brain"] = brain
    # Brainstem continues into the cord; the canal follows the same path, wider.
    stem = new()
    canvas.capsules(stem, [j((0, -6, 28), 0.5), j((0, -4, 5), 0.5), j((0, 3, -28), 0.5)], r((12, 13, 8.5)))
    m["Brainstem"] = stem
    path = np.array([(0, 3, -30), (0, 5, -40), (0, 10, -70), (0, 14, -110), (0, 18, -150), (0, 22, -190),
                     (0, 27, -240)], float) * [1, 1, s]
    path[:, :2] += rng.normal(0, 1.0, (len(path), 2))
    cord, canal = new(), new()
    canvas.capsules(cord, path, r([6.0, 5.8, 5.4, 5.2, 5.0, 5.0, 5.0]))
    canvas.capsules(canal, path, r([12.5, 11.0, 9.5, 9.2, 9.0, 9.0, 9.0]))
    m["Spinal cord"], m["Spinal canal"] = cord, canal
    chiasm_c = j((0, -30, 21), 1.0)
    chiasm = new()
    canvas.ellipsoid(chiasm, chiasm_c, r((8, 4.5, 2.5)))
    m["Optic chiasm"] = chiasm
    for side, tag in ((1, "L"), (-1, "R")):  # LPS +x is the patient's left
        eye_c = j((side * 31.6, -76, 29), 1.0)
        eye_r = 12.5 * s * rng.uniform(0.96, 1.04)
        eye, lens, nerve = new(), new(), new()
        canvas.ellipsoid(eye, eye_c, (eye_r, eye_r, eye_r * 0.97))
        canvas.ellipsoid(lens, eye_c + (0, -eye_r + 4.0, 0), r((4.5, 1.9, 4.5), 0.04))
        back = eye_c + np.array([-side * 2.5, eye_r - 0.5, -1.0])
        canvas.capsules(nerve, [back, j((side * 21, -50, 24.5), 0.8), chiasm_c + (side * 6, -2, 0)], 2.4 * s)
        nerve &= ~eye
        m[f"Eye {tag}"], m[f"Lens {tag}"], m[f"Optic nerve {tag}"] = eye, lens, nerve
        lac = new()
        canvas.ellipsoid(lac, eye_c + np.array([side * 13.5, 5.0, 7.0]) * s, r((3.5, 6.5, 5.0), 0.1))
        m[f"Lacrimal {tag}"] = lac & ~eye
        coch = new()
        canvas.ellipsoid(coch, j((side * 32.6, -10, -4.4), 0.8), r((2.3, 2.1, 2.7), 0.05))
        m[f"Cochlea {tag}"] = coch
        par = new()
        canvas.ellipsoid(par, j((side * 57, -22, -37)), r((12.5, 19, 26), 0.12))
        canvas.ellipsoid(par, j((side * 44, -27, -32)), r((7, 10, 14), 0.1))
        m[f"Parotid {tag}"] = par
        sub = new()
        canvas.ellipsoid(sub, j((side * 33, -47, -79)), r((9.5, 12, 15), 0.1))
        m[f"Submandibular {tag}"] = sub
    arch = Arch(chin_y=-112 * s + rng.normal(0, 2), depth=70 * s, width=47 * s * rng.uniform(0.97, 1.03))
    mandible, top_z = _mandible(canvas, arch, s, rng)
    around = near(mandible, canvas.spacing, 1.5) | mandible
    for tag in ("L", "R"):
        m[f"Parotid {tag}"] &= ~around
        m[f"Submandibular {tag}"] &= ~around
    m["Mandible"] = mandible
    hyoid_t = np.linspace(-1.2, 1.2, 9)
    hyoid_xy = Arch(arch.chin_y + 55 * s, 22 * s, 19 * s).point(hyoid_t)
    hyoid = np.column_stack([hyoid_xy, np.full(len(hyoid_t), -100 * s)])
    return AnalyticAnatomy(m, arch, top_z, hyoid)


def _mandible(canvas: Canvas, arch: Arch, s: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Body swept along the arch (elliptic cross-section), rami as plates of parallel capsules, condyles."""
    from scipy.spatial import cKDTree

    t = np.linspace(-np.pi / 2, np.pi / 2, 241)
    curve = arch.point(t)
    tree = cKDTree(curve)
    bottom = -96 * s + rng.normal(0, 1.5)
    height_chin, height_angle = 30 * s, 22 * s
    mask = canvas.empty()

    def body(x, y, z):
        xb, yb = np.broadcast_arrays(x[0], y[0])
        d, idx = tree.query(np.column_stack([xb.ravel(), yb.ravel()]))
        d = d.reshape(xb.shape)[None]
        frac = np.abs(t[idx]).reshape(xb.shape)[None] / (np.pi / 2)
        half_h = 0.5 * (height_chin + (height_angle - height_chin) * frac)
        zc = bottom + 10 * s * frac + half_h
        half_w = 5.5 * s + 1.5 * s * (1 - frac)
        return (d / half_w) ** 2 + ((z - zc) / half_h) ** 2 <= 1.0

    lo = np.array([-arch.width - 10, arch.chin_y - 10, bottom - 2])
    hi = np.array([arch.width + 10, arch.chin_y + arch.depth + 10, bottom + height_chin + 14 * s])
    canvas.draw(mask, lo, hi, body)
    for side in (1, -1):
        angle = np.array([side * arch.width, arch.chin_y + arch.depth - 2, bottom + 12 * s])
        condyle = np.array([side * (arch.width + 3 * s), -20 * s, -10 * s])
        coronoid_lo = angle + np.array([0, -16 * s, 8 * s])
        coronoid_hi = np.array([side * (arch.width + 1), -42 * s, -22 * s])
        for f in np.linspace(0, 1, 6):
            canvas.capsules(mask, [angle + f * (coronoid_lo - angle), condyle + f * (coronoid_hi - condyle)],
                            3.4 * s)
        canvas.ellipsoid(mask, condyle + (0, 0, 1.5), np.array([10, 5.5, 5.5]) * s)
    return mask, bottom + height_chin



# --- anatomy around the organs ---------------------------------------------------------------------------------------
# Tissue classes of everything that is not an organ at risk; headneck.py gives each a CT number.
OUTSIDE, FAT, MUSCLE, SKIN, CSF, CORTICAL, MARROW, DENSE_BONE, TOOTH, AIR, DISC, THIN_BONE, TONGUE, GREY = range(14)

# Bone structure ids (a CTV may grow into a bone only when the tumour invades that bone).
SKULL, MANDIBLE_BONE, HYOID, MAXILLA, TEMPORAL, VERTEBRA0 = 1, 2, 3, 4, 5, 10


@dataclass
class Scene:
    """Everything the CT synthesis needs: organ masks, tissue classes around them, bone ids, the body."""

    organs: dict[str, np.ndarray]
    tissue: np.ndarray  # uint8 class per voxel (organ voxels keep the class under them, usually MUSCLE)
    bone_id: np.ndarray  # int16, 0 = no bone
    body: np.ndarray  # bool


def _centroid(mask: np.ndarray, canvas: Canvas) -> np.ndarray | None:
    idx = np.argwhere(mask)
    if len(idx) == 0:
        return None
    return canvas.origin + canvas.spacing * idx.mean(0)[::-1]


def _bbox(mask: np.ndarray) -> tuple[slice, ...] | None:
    found = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(len(f) == 0 for f in found):
        return None
    return tuple(slice(f[0], f[-1] + 1) for f in found)


def _padded_bbox(mask: np.ndarray, spacing, mm: float) -> tuple[slice, ...] | None:
    """The mask's bounding box grown by ``mm`` (plus one voxel) on every side, clipped to the array."""
    box = _bbox(mask)
    if box is None:
        return None
    pad = np.ceil(mm / np.asarray(spacing, float)[::-1]).astype(int) + 1
    return tuple(slice(max(b.start - p, 0), min(b.stop + p, n)) for b, p, n in zip(box, pad, mask.shape))


def near(mask: np.ndarray, spacing, mm: float, inside: bool = False) -> np.ndarray:
    """Voxels within ``mm`` of ``mask`` (outside it; ``inside=True``: within ``mm`` of its surface, inside it).

    Computed on the mask's bounding box padded by ``mm`` (anisotropic spacing in ``i, j, k`` order).
    """
    import edt

    out = np.zeros(mask.shape, bool)
    box = _padded_bbox(mask, spacing, mm)
    if box is None:
        return out
    sp = np.asarray(spacing, float)[::-1]
    sub = mask[box]
    if inside:
        out[box] = sub & (edt.edt(sub, anisotropy=tuple(sp), black_border=True) <= mm)
    else:
        out[box] = ~sub & (edt.edt(~sub, anisotropy=tuple(sp), black_border=False) <= mm)
    return out


def outside_distance(mask: np.ndarray, spacing, mm: float) -> np.ndarray:
    """Distance (mm, float32) of each voxel to ``mask``: 0 inside, ``inf`` farther than the padded box."""
    import edt

    out = np.full(mask.shape, np.inf, np.float32)
    box = _padded_bbox(mask, spacing, mm)
    if box is None:
        return out
    sp = np.asarray(spacing, float)[::-1]
    out[box] = edt.edt(~mask[box], anisotropy=tuple(sp), black_border=False)
    return out


def smooth_noise(shape: tuple[int, int, int], spacing, scale_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance noise with feature size ``scale_mm``, made on a coarse grid and interpolated."""
    from scipy.ndimage import gaussian_filter

    step = np.maximum(np.asarray(spacing, float)[::-1], scale_mm / 2.0)
    factor = step / np.asarray(spacing, float)[::-1]
    coarse_shape = tuple(int(np.ceil(n / f)) + 2 for n, f in zip(shape, factor))
    out = gaussian_filter(rng.standard_normal(coarse_shape).astype(np.float32), 1.0)
    out /= out.std() + 1e-6
    for axis, (n, f) in enumerate(zip(shape, factor)):  # separable linear interpolation, one axis at a time
        pos = np.arange(n, dtype=np.float32) / np.float32(f)
        i0 = np.floor(pos).astype(int)
        w = (pos - i0).reshape([-1 if a == axis else 1 for a in range(3)])
        out = np.take(out, i0, axis=axis) * (1 - w) + np.take(out, i0 + 1, axis=axis) * w
    return np.ascontiguousarray(out, dtype=np.float32)


def _hull_fill(anchor: np.ndarray) -> np.ndarray:
    """Per axial slice, the convex hull of the anchor voxels (the outline of a head or neck is near convex)."""
    from PIL import Image, ImageDraw
    from scipy.spatial import ConvexHull, QhullError

    out = anchor.copy()
    for k in np.flatnonzero(anchor.any(axis=(1, 2))):
        jj, ii = np.nonzero(anchor[k])
        pts = np.column_stack([ii, jj]).astype(float)
        try:
            hull = ConvexHull(pts)
        except (QhullError, ValueError):
            continue
        img = Image.new("1", (anchor.shape[2], anchor.shape[1]), 0)
        ImageDraw.Draw(img).polygon([tuple(p) for p in pts[hull.vertices]], fill=1, outline=1)
        out[k] |= np.asarray(img, dtype=bool)
    return out


class _Landmarks:
    """Positions derived from whichever organs are present (mirroring a missing side when possible)."""

    def __init__(self, organs: dict[str, np.ndarray], canvas: Canvas) -> None:
        self.c: dict[str, np.ndarray] = {}
        for name, mask in organs.items():
            p = _centroid(mask, canvas)
            if p is not None:
                self.c[name] = p
        for base in ("Eye", "Cochlea", "Parotid", "Submandibular", "Optic nerve", "Lacrimal"):
            left, right = self.c.get(f"{base} L"), self.c.get(f"{base} R")
            if left is None and right is not None:
                self.c[f"{base} L"] = right * (-1, 1, 1)
            if right is None and left is not None:
                self.c[f"{base} R"] = left * (-1, 1, 1)

    def get(self, name: str) -> np.ndarray | None:
        return self.c.get(name)


def build_scene(organs: dict[str, np.ndarray], canvas: Canvas, rng: np.random.Generator,
                analytic: AnalyticAnatomy | None = None) -> Scene:
    """Place body outline, skull, vertebrae, airway, sinuses, fat and muscle consistently around the organs.

    Organ voxels are never overwritten (their CT number comes from the organ table), so a real organ mask
    stays exactly what it was; in the analytic mode the brain is first carved where the petrous bones go.
    """
    sp = canvas.spacing
    shape = canvas.shape
    any_organ = np.zeros(shape, bool)
    for mask in organs.values():
        any_organ |= mask
    tissue = np.full(shape, MUSCLE, np.uint8)
    bone_id = np.zeros(shape, np.int16)
    lm = _Landmarks(organs, canvas)
    free = ~any_organ

    def paint(mask: np.ndarray, cls: int, bone: int = 0, over_bone: bool = True, box=None) -> None:
        box = box or (slice(None),) * 3
        m = mask & free[box]
        if not over_bone:
            m &= bone_id[box] == 0
        tissue[box][m] = cls
        bone_id[box][m] = bone

    neuro = organs.get("Brain", np.zeros(shape, bool)) | organs.get("Brainstem", np.zeros(shape, bool))
    canal = organs.get("Spinal canal")
    if canal is None or not canal.any():
        cord = organs.get("Spinal cord")
        canal = near(cord, sp, 3.5) | cord if cord is not None else np.zeros(shape, bool)
    stem_bottom = _z_range(organs.get("Brainstem"), canvas)
    fm_z = stem_bottom[0] if stem_bottom else None  # foramen magnum, roughly

    # Body outline: per-slice convex hull of organs grown by the tissue that covers them.
    neuro_d = outside_distance(neuro, sp, 15.0)
    anchor = neuro_d <= 15.0
    for name, grow in (("Eye", 4.0), ("Parotid", 7.0), ("Submandibular", 9.0), ("Lacrimal", 4.0)):
        for tag in ("L", "R"):
            if f"{name} {tag}" in organs:
                anchor |= near(organs[f"{name} {tag}"], sp, grow)
    if "Mandible" in organs:
        anchor |= near(organs["Mandible"], sp, 9.0)
    for tag in ("L", "R"):
        if f"Lung {tag}" in organs:
            anchor |= near(organs[f"Lung {tag}"], sp, 18.0)
    neck = _canal_rows(canal, canvas)
    for k, (cx, cy, _rx, _ry) in neck.items():
        z = canvas.origin[2] + sp[2] * k
        if fm_z is not None and z > fm_z:
            continue
        found = canvas.box((cx - 56, cy - 90, z), (cx + 56, cy + 40, z))
        if found is not None:
            sl, (x, y, _) = found
            anchor[sl] |= ((x - cx) / 54) ** 2 + ((y - cy + 26) / 60) ** 2 <= 1.0
    eye_l, eye_r = lm.get("Eye L"), lm.get("Eye R")
    jaw = _jaw(organs.get("Mandible"), canvas, analytic)
    if eye_l is not None and eye_r is not None:  # the nose and the maxilla
        mid = (eye_l + eye_r) / 2
        half = abs(eye_l[0] - eye_r[0]) / 2
        canvas.capsules(anchor, [mid + (0, -14, -8), mid + (0, -30, -40)], [6.0, 10.0])
        palate = jaw.top_z + 13 if jaw is not None else mid[2] - 72
        canvas.ellipsoid(anchor, (mid[0], mid[1] + 4, palate + 20), (half + 20, 26, 28))
    body = _hull_fill(anchor | any_organ)
    depth = _depth(body, sp)

    # Soft tissue: muscle with fat planes; subcutaneous fat; skin.
    fat_field = smooth_noise(shape, sp, 9.0, rng)
    fat_depth = 3.0 + 3.0 * (1 + smooth_noise(shape, sp, 25.0, rng))
    paint(body & (fat_field > 0.9), FAT)
    paint(body & (depth > 1.6) & (depth <= fat_depth), FAT)
    paint(body & (depth <= 1.6), SKIN)
    tissue[~body] = OUTSIDE

    # Intracranial CSF and the skull (two cortical tables, diploe between).
    if neuro.any():
        csf = (neuro_d > 0) & (neuro_d <= 2.5)
        skull = (neuro_d > 2.5) & (neuro_d <= 9.5)
        if canal.any():
            hole = near(canal, sp, 3.0) | canal
            if fm_z is not None:
                hole &= _below(shape, canvas, fm_z + 8)
            skull &= ~hole
            csf &= ~hole
        skull &= body
        table = skull & ((neuro_d <= 4.3) | (neuro_d > 7.7))
        paint(csf & body, CSF)
        paint(skull, MARROW, SKULL)
        paint(table, CORTICAL, SKULL)
        if "Brain" in organs:
            _ventricles(organs["Brain"], canvas, tissue, lm)

    # Orbits: a fat cone behind each eye, bony walls, four recti.
    for tag, side in (("L", 1), ("R", -1)):
        eye = lm.get(f"Eye {tag}")
        if eye is None:
            continue
        apex = _nerve_apex(organs.get(f"Optic nerve {tag}"), canvas, eye, side)
        cone = canvas.empty()
        canvas.capsules(cone, [eye, apex], [16.0, 3.0])
        wall = near(cone, sp, 2.2) & _posterior_of(shape, canvas, eye[1] - 6)
        paint(cone, FAT)
        paint(wall & ~cone, THIN_BONE, SKULL)
        for off in ((0, 0, 9.5), (0, 0, -9.5), (9.5 * side, 0, 0), (-9.5 * side, 0, 0)):
            rect = canvas.empty()
            canvas.capsules(rect, [eye + off + (0, 3, 0), apex + np.asarray(off) * 0.2], [2.4, 1.5])
            paint(rect & cone, MUSCLE)

    # Petrous temporal bones around the cochleae, mastoid air cells, external ear canals.
    mastoid_field = smooth_noise(shape, sp, 3.0, rng)
    for tag, side in (("L", 1), ("R", -1)):
        coch = lm.get(f"Cochlea {tag}")
        if coch is None:
            continue
        petrous, mastoid, ear = canvas.empty(), canvas.empty(), canvas.empty()
        canvas.capsules(petrous, [coch + (side * 18, 12, -6), coch, coch + (-side * 17, -13, 2)], [8.0, 7.5, 5.0])
        canvas.ellipsoid(mastoid, coch + (side * 21, 15, -14), (10, 11, 13))
        canvas.capsules(ear, [coch + (side * 11, 0, 0), coch + (side * 45, 1, -1)], 3.6)
        if analytic is not None and "Brain" in organs:
            organs["Brain"] &= ~(petrous | near(petrous, sp, 2.0) | mastoid)
            free |= petrous | mastoid
        paint(mastoid & body, CORTICAL, TEMPORAL)
        paint(mastoid & body & (mastoid_field > 0.2), AIR)
        paint(petrous & body, DENSE_BONE, TEMPORAL)
        paint(ear & body, AIR)

    # Cervical vertebrae around the canal below the foramen magnum.
    if fm_z is not None:
        _vertebrae(neck, canvas, fm_z, paint)

    # Airway, nasal cavity, sinuses (relative to the vertebrae, eyes and mandible), with thin bony walls.
    air = canvas.empty()
    if jaw is not None and fm_z is not None:
        _airway(neck, canvas, fm_z, jaw, air, paint)
    if eye_l is not None and eye_r is not None:
        _sinuses(canvas, eye_l, eye_r, lm.get("Optic chiasm"), jaw, air, paint, rng)
    paint(near(air, sp, 1.6) & body & (bone_id == 0) & (tissue != AIR), THIN_BONE, MAXILLA, over_bone=False)

    # Mandible marrow/cortex are the organ's own texture (headneck.py); teeth, palate and hyoid are not organs.
    if jaw is not None:
        _mouth(canvas, jaw, analytic, paint)
    for tag, side in (("L", 1), ("R", -1)):
        coch = lm.get(f"Cochlea {tag}")
        if coch is None or fm_z is None:
            continue
        scm = canvas.empty()
        z_low = canvas.origin[2]
        canvas.capsules(scm, [coch + (side * 22, 20, -25), (side * 24, coch[1] - 30, z_low + 10)], [8.0, 7.0])
        paint(near(scm, sp, 1.5) & body & (bone_id == 0) & (tissue != AIR), FAT, over_bone=False)
        paint(scm & body & (bone_id == 0) & (tissue != AIR), MUSCLE, over_bone=False)
    _gland_fat_planes(organs, canvas, body, tissue, paint, rng.spawn(1)[0])
    tissue[~body] = OUTSIDE
    bone_id[~body] = 0
    return Scene(organs, tissue, bone_id, body)


def _gland_fat_planes(organs: dict[str, np.ndarray], canvas: Canvas, body: np.ndarray, tissue: np.ndarray,
                      paint, rng: np.random.Generator) -> None:
    """Fat of the submandibular space around most of each submandibular gland.

    On CT the gland (near muscle density) is told from its neighbours by the fat around it; where it lies on the
    mylohyoid or the mandible there is none, hence a plane 1-2.5 mm thick over about three quarters of it.
    """
    for tag in ("L", "R"):
        gland = organs.get(f"Submandibular {tag}")
        if gland is None or not gland.any():
            continue
        width = rng.uniform(1.0, 2.5)
        box = _padded_bbox(gland, canvas.spacing, width)
        shell = near(gland[box], canvas.spacing, width)
        patchy = smooth_noise(shell.shape, canvas.spacing, 12.0, rng) > -0.7
        soft = (tissue[box] != AIR) & body[box]
        paint(shell & patchy & soft, FAT, over_bone=False, box=box)


def _z_range(mask: np.ndarray | None, canvas: Canvas) -> tuple[float, float] | None:
    if mask is None:
        return None
    ks = np.flatnonzero(mask.any(axis=(1, 2)))
    if len(ks) == 0:
        return None
    return canvas.origin[2] + canvas.spacing[2] * ks[0], canvas.origin[2] + canvas.spacing[2] * ks[-1]


def _below(shape, canvas: Canvas, z: float) -> np.ndarray:
    zs = canvas.origin[2] + canvas.spacing[2] * np.arange(shape[0])
    return np.broadcast_to((zs <= z)[:, None, None], shape)


def _posterior_of(shape, canvas: Canvas, y: float) -> np.ndarray:
    ys = canvas.origin[1] + canvas.spacing[1] * np.arange(shape[1])
    return np.broadcast_to((ys >= y)[None, :, None], shape)


def _depth(body: np.ndarray, spacing) -> np.ndarray:
    import edt

    return edt.edt(body, anisotropy=tuple(np.asarray(spacing, float)[::-1]), black_border=True).astype(np.float32)


def _canal_rows(canal: np.ndarray, canvas: Canvas) -> dict[int, tuple[float, float, float, float]]:
    """Per axial slice with canal: centre x, y and half-widths (mm)."""
    out = {}
    for k in np.flatnonzero(canal.any(axis=(1, 2))):
        jj, ii = np.nonzero(canal[k])
        x = canvas.origin[0] + canvas.spacing[0] * ii
        y = canvas.origin[1] + canvas.spacing[1] * jj
        out[int(k)] = (float(x.mean()), float(y.mean()), float(max(np.ptp(x) / 2, 5.0)),
                       float(max(np.ptp(y) / 2, 5.0)))
    return out


def _nerve_apex(nerve: np.ndarray | None, canvas: Canvas, eye: np.ndarray, side: int) -> np.ndarray:
    """The orbital apex: the optic nerve's most posterior point (or a typical offset from the eye)."""
    if nerve is not None and nerve.any():
        idx = np.argwhere(nerve)
        far = idx[idx[:, 1] >= np.percentile(idx[:, 1], 90)].mean(0)
        p = canvas.origin + canvas.spacing * far[::-1]
        return eye + 0.8 * (p - eye)
    return eye + np.array([-side * 10.0, 30.0, -3.0])


def _ventricles(brain: np.ndarray, canvas: Canvas, tissue: np.ndarray, lm: _Landmarks) -> None:
    c = lm.get("Brain")
    if c is None:
        return
    v = canvas.empty()
    for side in (1, -1):
        canvas.capsules(v, [c + (side * 6, -22, 14), c + (side * 9, 0, 18), c + (side * 12, 22, 8)], [3.0, 4.5, 3.5])
    canvas.ellipsoid(v, c + (0, -2, 2), (1.5, 9, 5))
    tissue[v & brain] = CSF


def _vertebrae(rows: dict, canvas: Canvas, fm_z: float, paint) -> None:
    """Body, disc, ring, spinous and transverse processes per slice, one bone id per level (pitch 19 mm)."""
    sp = canvas.spacing
    for k, (cx, cy, rx, ry) in rows.items():
        z = canvas.origin[2] + sp[2] * k
        if z > fm_z - 4:
            continue
        depth = fm_z - 4 - z
        level, pos = int(depth // 19.0), (depth % 19.0) / 19.0
        found = canvas.box((cx - 45, cy - ry - 35, z), (cx + 45, cy + ry + 50, z))
        if found is None:
            continue
        sl, (x, y, _) = found
        bid = VERTEBRA0 + level
        grow = 1.0 + 0.04 * min(level, 6)
        by = cy - ry - 2.0 - 9.5 * grow
        body = ((x - cx) / (13 * grow)) ** 2 + ((y - by) / (9.5 * grow)) ** 2 <= 1.0
        core = ((x - cx) / (13 * grow - 1.6)) ** 2 + ((y - by) / (9.5 * grow - 1.6)) ** 2 <= 1.0
        ring_d = np.sqrt(((x - cx) / (rx + 4.5)) ** 2 + ((y - cy) / (ry + 4.5)) ** 2)
        canal_d = np.sqrt(((x - cx) / (rx + 0.5)) ** 2 + ((y - cy) / (ry + 0.5)) ** 2)
        ring = (ring_d <= 1.0) & (canal_d > 1.0)
        spine = (np.abs(x - cx) <= 3.5) & (y > cy + ry) & (y < cy + ry + 24 + 3 * min(level, 5))
        lateral = np.abs(x - cx) - 20 * grow
        trans = (lateral / 7.0) ** 2 + ((y - by - 3) / 4.5) ** 2 <= 1.0
        trans &= (lateral + 1.5) ** 2 + (y - by - 3) ** 2 > 2.5**2  # foramen of the vertebral artery
        sl = (slice(k, k + 1), sl[1], sl[2])
        if level == 0:  # atlas: no body, a ring with lateral masses; the dens of C2 inside its front
            dens = ((x - cx) ** 2 + (y - (cy - ry - 7)) ** 2) <= 5.5**2
            anterior = (np.abs(x - cx) <= 9) & (np.abs(y - (cy - ry - 14)) <= 3)
            paint(ring | trans | anterior | dens, CORTICAL, bid, box=sl)
            continue
        if pos > 0.78:  # intervertebral disc
            paint(body, DISC, 0, box=sl)
            continue
        mid = 0.15 < pos < 0.65
        paint((body | ring | spine | trans) if mid else body, CORTICAL, bid, box=sl)
        paint(core, MARROW, bid, box=sl)


@dataclass
class _Jaw:
    arch: Arch
    top_z: float
    bottom_z: float


def _jaw(mandible: np.ndarray | None, canvas: Canvas, analytic: AnalyticAnatomy | None) -> _Jaw | None:
    """The dental arch: exact in the analytic mode, fitted to the mandible's extent otherwise."""
    if mandible is None or not mandible.any():
        return None
    zr = _z_range(mandible, canvas)
    if analytic is not None:
        return _Jaw(analytic.arch, analytic.mandible_top_z, zr[0])
    idx = np.argwhere(mandible)
    lo = canvas.origin + canvas.spacing * idx.min(0)[::-1]
    hi = canvas.origin + canvas.spacing * idx.max(0)[::-1]
    width = (hi[0] - lo[0]) / 2 - 8
    arch = Arch(chin_y=lo[1] + 4, depth=0.75 * (hi[1] - lo[1]), width=width)
    return _Jaw(arch, zr[0] + 0.37 * (zr[1] - zr[0]), zr[0])


def _airway(rows: dict, canvas: Canvas, fm_z: float, jaw: _Jaw, air: np.ndarray, paint) -> None:
    """Naso-, oro-, hypopharynx then larynx and trachea, anterior to the vertebral bodies."""
    palate = jaw.top_z + 13
    for k, (cx, cy, _rx, ry) in rows.items():
        z = canvas.origin[2] + canvas.spacing[2] * k
        if z > palate + 22 or z > fm_z - 8:
            continue
        front = cy - ry - 2.0 - 19.0  # anterior surface of the vertebral body
        if z > jaw.bottom_z + 4:
            t = np.clip((z - jaw.bottom_z) / max(palate + 22 - jaw.bottom_z, 1), 0, 1)
            ax, ay, cyy = 10 + 5 * t, 5.5 + 1.5 * t, front - 5 - (5.5 + 1.5 * t)
        elif z > jaw.bottom_z - 35:
            ax, ay, cyy = 8.0, 7.0, front - 14 - 7
        else:
            ax, ay, cyy = 8.5, 7.5, front - 24
        found = canvas.box((cx - ax - 1, cyy - ay - 1, z), (cx + ax + 1, cyy + ay + 1, z))
        if found is None:
            continue
        sl, (x, y, _) = found
        sl = (slice(k, k + 1), sl[1], sl[2])
        m = ((x - cx) / ax) ** 2 + ((y - cyy) / ay) ** 2 <= 1.0
        air[sl] |= m
        paint(m, AIR, box=sl)


def _sinuses(canvas: Canvas, eye_l, eye_r, chiasm, jaw: _Jaw | None, air: np.ndarray, paint,
             rng: np.random.Generator) -> None:
    mid = (eye_l + eye_r) / 2
    half = abs(eye_l[0] - eye_r[0]) / 2
    palate = jaw.top_z + 13 if jaw is not None else mid[2] - 72
    m = canvas.empty()
    for side in (1, -1):  # maxillary sinuses under the orbits
        canvas.ellipsoid(m, (mid[0] + side * half * 0.9, mid[1] + 6, palate + 24), (11.5, 15, 15))
    sph = chiasm if chiasm is not None else mid + (0, 46, -8)
    canvas.ellipsoid(m, sph + (0, -3, -17), (10, 10, 8))  # sphenoid
    canvas.ellipsoid(m, mid + (0, -11, 25), (12, 5, 8))  # frontal
    # Nasal cavity: two passages either side of the septum, from the nostrils to the choanae.
    for side in (1, -1):
        for level, width in ((4, 4.0), (10, 3.2), (16, 3.6), (22, 2.8), (28, 3.0), (34, 2.5)):
            front = mid + (side * 5.8, -14 + 0.1 * level, 0)
            back = mid + (side * 5.8, 40 - 0.6 * level, 0)
            front[2] = back[2] = palate + level
            canvas.capsules(m, [front, back], width)
    # Ethmoid cells between the orbits: air with bony septa.
    eth = canvas.empty()
    canvas.ellipsoid(eth, mid + (0, 8, -2), (max(half - 16.5, 4.0), 17, 11))
    field = smooth_noise(canvas.shape, canvas.spacing, 4.0, rng)
    cells = eth & (field > -0.3)
    paint(eth, THIN_BONE, MAXILLA)
    air |= m | cells
    paint(m | cells, AIR)


def _mouth(canvas: Canvas, jaw: _Jaw, analytic: AnalyticAnatomy | None, paint) -> None:
    """Tongue, hard palate, teeth (analytic mode: on the exact arch) and the hyoid."""
    arch = jaw.arch
    tongue = canvas.empty()
    canvas.ellipsoid(tongue, (0, arch.chin_y + 0.62 * arch.depth, jaw.top_z - 4), (0.5 * arch.width, 0.5 * arch.depth,
                                                                                       16))
    paint(tongue, TONGUE, over_bone=False)
    palate = canvas.empty()
    t = np.linspace(-1.2, 1.2, 13)
    inner = Arch(arch.chin_y + 10, arch.depth * 0.9, arch.width * 0.7).point(t)
    canvas.capsules(palate, np.column_stack([inner * (0.55, 1), np.full(len(t), jaw.top_z + 13)]), 3.0)
    canvas.capsules(palate, np.column_stack([inner * (1.0, 1), np.full(len(t), jaw.top_z + 13)]), 3.0)
    paint(palate, CORTICAL, MAXILLA)
    if analytic is None:
        return
    teeth_t = np.linspace(-1.3, 1.3, 14)
    pts = arch.point(teeth_t)
    upper_ridge = canvas.empty()
    canvas.capsules(upper_ridge, np.column_stack([pts, np.full(len(pts), jaw.top_z + 23)]), 5.0)
    paint(upper_ridge, MARROW, MAXILLA)
    for p in pts:
        tooth = canvas.empty()
        canvas.capsules(tooth, [(p[0], p[1], jaw.top_z - 3), (p[0], p[1], jaw.top_z + 8)], 3.0)
        canvas.capsules(tooth, [(p[0], p[1], jaw.top_z + 10), (p[0], p[1], jaw.top_z + 20)], 3.0)
        paint(tooth, TOOTH, MAXILLA)
    hyoid = canvas.empty()
    canvas.capsules(hyoid, analytic.hyoid, 2.6)
    paint(hyoid, CORTICAL, HYOID)
