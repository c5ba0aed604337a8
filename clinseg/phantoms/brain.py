"""Multi-contrast brain MRI phantoms with vascular-territory stroke lesions (for StrokeSeg).

The head is built from analytic signed distances in LPS millimetres (negative
inside), so any voxel size gives the same anatomy:

* scalp (skin, fat), skull (inner/outer tables of cortical bone around fatty
  diploe), extra-axial CSF, a cerebrum with a folded cortical ribbon (sulci are
  the thin zero sets of a band-limited random field, cut to a depth), an
  interhemispheric and two Sylvian fissures, a foliated cerebellum, brainstem,
  lateral / third / fourth ventricles and the deep grey nuclei;
* each tissue has a signal per sequence (T1, T2, FLAIR, b=0, ADC); tissues are
  composited with partial-volume fractions, DWI mixes ``S0 exp(-b ADC)`` per
  tissue (the physical mixture) and ADC is computed back from the noisy DWI and
  b=0 images as a scanner does;
* thick slices are simulated by building sub-slices and averaging them (slice
  partial volume), then a smooth receive bias field and Rician noise are added.

ADC is given in units of 1e-3 mm^2/s (tissue ~0.8, CSF ~3.0), as ISLES 2022 stores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..volume import Volume

CONTRASTS = ("T1", "T2", "FLAIR", "DWI", "ADC")
B_VALUE = 1000.0  # s/mm^2
ADC_UNIT_MM2_S = 1e-3

# Tissue labels of BrainPhantom.labels.
LABELS = {
    "background": 0,
    "csf": 1,
    "ventricles": 2,
    "cortical_gm": 3,
    "wm": 4,
    "caudate": 5,
    "putamen": 6,
    "pallidum": 7,
    "thalamus": 8,
    "cerebellum_gm": 9,
    "cerebellum_wm": 10,
    "brainstem": 11,
    "skull": 12,
    "marrow": 13,
    "scalp": 14,
    "fat": 15,
}
PARENCHYMA = ("cortical_gm", "wm", "caudate", "putamen", "pallidum", "thalamus",
              "cerebellum_gm", "cerebellum_wm", "brainstem")

# Relative signals (T1 MPRAGE-like, T2 TSE, FLAIR, b=0 EPI) and ADC (1e-3 mm^2/s) per tissue.
#            T1    T2    FLAIR  S0    ADC
SIGNAL = {
    "background": (0.0, 0.0, 0.0, 0.0, 0.0),
    "csf": (0.12, 1.00, 0.05, 1.00, 3.0),
    "ventricles": (0.10, 1.00, 0.04, 1.00, 3.0),
    "cortical_gm": (0.62, 0.58, 0.68, 0.62, 0.85),
    "wm": (0.95, 0.40, 0.50, 0.45, 0.72),
    "caudate": (0.68, 0.55, 0.64, 0.58, 0.78),
    "putamen": (0.70, 0.48, 0.60, 0.52, 0.76),
    "pallidum": (0.80, 0.36, 0.52, 0.42, 0.75),
    "thalamus": (0.76, 0.48, 0.58, 0.52, 0.78),
    "cerebellum_gm": (0.60, 0.56, 0.64, 0.60, 0.80),
    "cerebellum_wm": (0.90, 0.40, 0.50, 0.45, 0.70),
    "brainstem": (0.85, 0.46, 0.56, 0.50, 0.75),
    "skull": (0.04, 0.04, 0.03, 0.02, 0.0),
    "marrow": (0.80, 0.55, 0.45, 0.05, 0.0),
    "scalp": (0.45, 0.35, 0.40, 0.20, 0.0),
    "fat": (1.05, 0.75, 0.72, 0.05, 0.0),
}
# Acute infarct (cytotoxic oedema) and chronic infarct (cavity core, gliotic rim), same columns.
ACUTE = (0.85, 1.30, 1.22, 1.35, 0.45)  # factors on the underlying tissue, except ADC: absolute
CHRONIC_CORE = (0.16, 0.95, 0.12, 0.95, 2.6)  # absolute values (CSF-like cavity)
CHRONIC_RIM = (0.50, 0.80, 0.95, 0.75, 1.35)  # absolute values (gliosis)
SNR = {"T1": 40.0, "T2": 35.0, "FLAIR": 30.0, "DWI": 16.0}  # white-matter signal / noise sigma

PRESETS = {
    # field of view in LPS mm: (x_lo, x_hi), (y_lo, y_hi), (z_lo, z_hi); brain centre at the origin
    "full": ((-88.0, 88.0), (-112.0, 104.0), (-64.0, 92.0)),
    "small": ((-80.0, 80.0), (-104.0, 96.0), (-16.0, 48.0)),
}
LESIONS = ("mca", "lacunar", "emboli")
STAGES = ("acute", "chronic")


@dataclass
class BrainPhantom:
    """Images on one grid, tissue labels, lesion mask and the phantom's ground-truth facts."""

    images: dict[str, Volume]
    labels: Volume
    lesion: Volume
    lesion_volume_ml: float
    lesion_kind: str | None = None
    stage: str = "acute"
    side: str = ""  # "left" / "right" for unilateral lesions, "" otherwise
    info: dict = field(default_factory=dict)


# --- signed distances ---------------------------------------------------------------------------------------
def _ellipsoid(x, y, z, centre, radii) -> np.ndarray:
    """Approximate signed distance (mm, negative inside) to an axis-aligned ellipsoid."""
    px, py, pz = (x - centre[0]) / radii[0], (y - centre[1]) / radii[1], (z - centre[2]) / radii[2]
    k0 = np.sqrt(px * px + py * py + pz * pz)
    k1 = np.sqrt((px / radii[0]) ** 2 + (py / radii[1]) ** 2 + (pz / radii[2]) ** 2)
    outside = k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)
    # That estimate collapses to 0 at the centre; inside, scale by the smallest radius instead (exact for spheres).
    return np.where(k0 >= 1.0, outside, (k0 - 1.0) * min(radii)).astype(np.float32)


def _capsule(x, y, z, a, b, ra, rb, squash=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Signed distance to a tapered capsule ``a -> b`` in a space scaled by ``squash`` (flattened tubes)."""
    sx, sy, sz = squash
    a, b = np.asarray(a, float) / squash, np.asarray(b, float) / squash
    px, py, pz = x / sx - a[0], y / sy - a[1], z / sz - a[2]
    ab = b - a
    t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / float(ab @ ab), 0.0, 1.0)
    dx, dy, dz = px - t * ab[0], py - t * ab[1], pz - t * ab[2]
    return (np.sqrt(dx * dx + dy * dy + dz * dz) - (ra + t * (rb - ra))).astype(np.float32)


def _boxed(fn, x, y, z, lo, hi, far: float = 64.0):
    """Evaluate ``fn(x, y, z)`` only inside the LPS box ``[lo, hi]`` of the grid axes; ``far`` elsewhere.

    ``x, y, z`` are the broadcastable 1-D axes ``(1, 1, ni)``, ``(1, nj, 1)``, ``(nk, 1, 1)``; small
    structures cost only their box. ``fn`` may return one array or a dict of arrays.
    """
    cuts = []
    for axis, a, b in zip((x.ravel(), y.ravel(), z.ravel()), lo, hi):
        i0, i1 = np.searchsorted(axis, a), np.searchsorted(axis, b)
        cuts.append(slice(int(i0), int(max(i1, i0))))
    shape = (z.size, y.size, x.size)
    sub = fn(x[..., cuts[0]], y[:, cuts[1], :], z[cuts[2]])
    region = (cuts[2], cuts[1], cuts[0])

    def paste(a):
        out = np.full(shape, far, np.float32)
        out[region] = a
        return out

    return {k: paste(v) for k, v in sub.items()} if isinstance(sub, dict) else paste(sub)


def _max(*arrays) -> np.ndarray:
    """Intersection of signed distances (broadcasting their shapes)."""
    out = arrays[0]
    for a in arrays[1:]:
        out = np.maximum(out, a)
    return out


def _min(*arrays) -> np.ndarray:
    """Union of signed distances (broadcasting their shapes)."""
    out = arrays[0]
    for a in arrays[1:]:
        out = np.minimum(out, a)
    return out


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth union of two distances (blends over ``k`` mm), so joins have no creases."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _ramp(sd: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume fraction inside a surface at signed distance ``sd`` (linear over one voxel)."""
    return np.clip(0.5 - sd / width, 0.0, 1.0).astype(np.float32)


# --- random fields -----------------------------------------------------------------------------------------
class _SphereField:
    """Band-limited noise on a sphere, looked up by direction: its zero sets are radial sheets (sulci)."""

    def __init__(self, rng: np.random.Generator, radius: float, sigma_mm: float, n_lat: int = 160) -> None:
        field3d = _Field(rng, (-radius,) * 3, (radius,) * 3, 2.0, sigma_mm)
        self.lat = np.linspace(0, np.pi, n_lat)
        self.lon = np.linspace(-np.pi, np.pi, 2 * n_lat)
        la, lo = np.meshgrid(self.lat, self.lon, indexing="ij")
        pts = radius * np.stack([np.sin(la) * np.cos(lo), np.cos(la), np.sin(la) * np.sin(lo)])  # poles on y
        idx = [(p - o) / field3d.step for p, o in zip(pts[::-1], field3d.lo[::-1])]
        n = ndimage.map_coordinates(field3d.values, idx, order=1, mode="nearest")
        g_lat, g_lon = np.gradient(n, self.lat, self.lon)
        g = np.sqrt(g_lat**2 + (g_lon / np.maximum(np.sin(la), 0.05)) ** 2)  # per radian on the unit sphere
        self.ratio = (np.abs(n) / np.maximum(g, 1e-3)).astype(np.float32)

    def zero_distance(self, x, y, z, centre) -> np.ndarray:
        """Distance (mm) of each point to the nearest sulcal sheet, measured at the point's own radius."""
        px, py, pz = x - centre[0], y - centre[1], z - centre[2]
        r = np.sqrt(px * px + py * py + pz * pz) + 1e-3
        lat = np.arccos(np.clip(py / r, -1, 1)) * ((len(self.lat) - 1) / np.pi)
        lon = (np.arctan2(pz, px) + np.pi) * ((len(self.lon) - 1) / (2 * np.pi))
        return (r * ndimage.map_coordinates(self.ratio, [lat, lon], order=1, mode="nearest")).astype(np.float32)


class _Field:
    """Band-limited Gaussian noise on a coarse grid, sampled trilinearly at LPS points."""

    def __init__(self, rng: np.random.Generator, lo, hi, step: float, sigma_mm: float) -> None:
        self.lo = np.asarray(lo, float) - 3 * step
        self.step = step
        shape = tuple(int(np.ceil((h - lo_) / step)) + 7 for lo_, h in zip(lo, hi))
        n = ndimage.gaussian_filter(rng.standard_normal(shape[::-1]).astype(np.float32), sigma_mm / step,
                                    mode="wrap")
        self.values = n / (n.std() + 1e-12)
        grad = np.gradient(self.values, step)
        self.grad = np.sqrt(sum(g * g for g in grad))

    def _weights(self, axis_lo: float, n_coarse: int, positions: np.ndarray) -> np.ndarray:
        """Linear-interpolation matrix (len(positions) x n_coarse) along one axis."""
        t = np.clip((np.ravel(positions) - axis_lo) / self.step, 0, n_coarse - 1.001)
        i0 = np.floor(t).astype(int)
        w = np.zeros((len(t), n_coarse), np.float32)
        rows = np.arange(len(t))
        w[rows, i0] = 1.0 - (t - i0)
        w[rows, i0 + 1] = t - i0
        return w

    def sample(self, array: np.ndarray, xs, ys, zs) -> np.ndarray:
        """Values on the regular grid ``xs x ys x zs`` (1-D LPS axes), as a ``[k, j, i]`` array.

        Separable interpolation (three matrix products) is far faster than per-point sampling.
        """
        nz, ny, nx = array.shape
        wz = self._weights(self.lo[2], nz, zs)
        wy = self._weights(self.lo[1], ny, ys)
        wx = self._weights(self.lo[0], nx, xs)
        out = np.einsum("kc,cba->kba", wz, array, optimize=True)
        out = np.einsum("jb,kba->kja", wy, out, optimize=True)
        return np.einsum("ia,kja->kji", wx, out, optimize=True).astype(np.float32)

    def __call__(self, xs, ys, zs) -> np.ndarray:
        return self.sample(self.values, xs, ys, zs)

    def zero_distance(self, xs, ys, zs) -> np.ndarray:
        """Approximate distance (mm) to the field's zero set: |n| / |grad n|."""
        return self.sample(np.abs(self.values) / np.maximum(self.grad, 1e-3), xs, ys, zs)


# --- anatomy --------------------------------------------------------------------------------------------------
@dataclass
class _Anatomy:
    """Per-subject anatomical parameters drawn from the seed."""

    scale: np.ndarray  # brain size factors (x, y, z)
    sas_mm: float  # extra-axial CSF thickness
    ventricle_scale: float
    cortex_mm: float
    sulcus_depth_mm: float


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    return _Anatomy(
        scale=rng.uniform(0.94, 1.05, 3) * np.array([1.0, 1.0, 1.0]),
        sas_mm=float(rng.uniform(1.5, 3.0)),
        ventricle_scale=float(rng.uniform(0.85, 1.25)),
        cortex_mm=float(rng.uniform(2.4, 3.0)),
        sulcus_depth_mm=float(rng.uniform(11.0, 16.0)),
    )


def _cerebrum(x, y, z, s) -> np.ndarray:
    """Cerebrum: a flattened egg, wider posteriorly, with a frontal-temporal notch below."""
    main = _ellipsoid(x, y, z, (0, 4 * s[1], 12 * s[2]), (66 * s[0], 84 * s[1], 58 * s[2]))
    temporal = _ellipsoid(np.abs(x), y, z, (42 * s[0], -6 * s[1], -14 * s[2]), (24 * s[0], 44 * s[1], 24 * s[2]))
    body = _smin(main, temporal, 8.0)
    floor = -36.0 * s[2] - z  # the middle cranial fossa floor
    return np.maximum(body, floor).astype(np.float32)


def _brainstem(x, y, z, s) -> np.ndarray:
    pons = _ellipsoid(x, y, z, (0, 18 * s[1], -30 * s[2]), (15 * s[0], 13 * s[1], 14 * s[2]))
    stem = _capsule(x, y, z, (0, 12 * s[1], -6 * s[2]), (0, 26 * s[1], -80 * s[2]), 10.0, 8.0)
    return _smin(pons, stem, 5.0)


def _ventricles(x, y, z, s, v: float) -> np.ndarray:
    """Lateral ventricles (frontal horn, body, atrium, occipital and temporal horns), third and fourth."""
    ax = np.abs(x)
    sq = (0.9, 1.0, 1.4)  # bodies are slit-like: taller than wide
    parts = [
        _capsule(ax, y, z, (9 * s[0], -30 * s[1], 12 * s[2]), (9 * s[0], -6 * s[1], 20 * s[2]), 5.5 * v, 5.0 * v,
                 (1.0, 1.0, 1.4)),
        _capsule(ax, y, z, (9 * s[0], -6 * s[1], 20 * s[2]), (15 * s[0], 24 * s[1], 18 * s[2]), 5.0 * v, 6.0 * v, sq),
        _capsule(ax, y, z, (15 * s[0], 24 * s[1], 18 * s[2]), (16 * s[0], 46 * s[1], 8 * s[2]), 6.0 * v, 2.2 * v),
        _capsule(ax, y, z, (14 * s[0], 24 * s[1], 18 * s[2]), (27 * s[0], 16 * s[1], -4 * s[2]), 4.0 * v, 2.5 * v),
        _capsule(ax, y, z, (27 * s[0], 16 * s[1], -4 * s[2]), (30 * s[0], -8 * s[1], -16 * s[2]), 2.5 * v, 1.6 * v),
    ]
    third = _capsule(x, y, z, (0, -6 * s[1], 0), (0, 10 * s[1], 2 * s[2]), 5.0 * v, 5.0 * v, (0.3, 1.0, 1.0))
    fourth = _ellipsoid(x, y, z, (0, 34 * s[1], -30 * s[2]), (6 * v, 3.5 * v, 6 * v))
    d = parts[0]
    for p in parts[1:]:
        d = _smin(d, p, 3.0)
    return np.minimum(np.minimum(d, third), fourth)


def _nuclei(x, y, z, s) -> dict[str, np.ndarray]:
    ax = np.abs(x)
    return {
        "caudate": _smin(
            _ellipsoid(ax, y, z, (14 * s[0], -20 * s[1], 12 * s[2]), (6, 10, 9)),
            _capsule(ax, y, z, (14 * s[0], -14 * s[1], 16 * s[2]), (16 * s[0], 14 * s[1], 22 * s[2]), 3.5, 1.8),
            3.0,
        ),
        "putamen": _ellipsoid(ax, y, z, (25 * s[0], -4 * s[1], 3 * s[2]), (5.5, 15, 10)),
        "pallidum": _ellipsoid(ax, y, z, (18.5 * s[0], -1 * s[1], 0.0), (3.5, 8, 6)),
        "thalamus": _ellipsoid(ax, y, z, (10 * s[0], 13 * s[1], 6 * s[2]), (8, 14, 9)),
    }


def _posterior_fossa(x, y, z, s) -> np.ndarray:
    return _ellipsoid(x, y, z, (0, 48 * s[1], -33 * s[2]), (54 * s[0], 38 * s[1], 25 * s[2]))


def _intracranial(x, y, z, s) -> np.ndarray:
    """The inner surface of the skull: around cerebrum, cerebellum and brainstem."""
    upper = _ellipsoid(x, y, z, (0, 4 * s[1], 10 * s[2]), (70 * s[0], 89 * s[1], 64 * s[2]))
    fossa = _boxed(lambda a, b, c: _posterior_fossa(a, b, c, s), x, y, z, (-80, -10, -80), (80, 110, 16)) - 2.0
    middle = _ellipsoid(np.abs(x), y, z, (42 * s[0], -6 * s[1], -16 * s[2]), (28 * s[0], 48 * s[1], 28 * s[2]))
    stem = _boxed(lambda a, b, c: _capsule(a, b, c, (0, 18 * s[1], -30 * s[2]), (0, 26 * s[1], -90 * s[2]), 15.0,
                                           12.0), x, y, z, (-40, -10, -120), (40, 60, 0))
    return _smin(_smin(_smin(upper, fossa, 10.0), middle, 8.0), stem, 6.0)


# --- lesions --------------------------------------------------------------------------------------------------
def _lesion_sd(kind: str, rng: np.random.Generator, s, x, y, z, shape, deep_sd, wobble) -> tuple:
    """Signed distance of the infarct (before clipping to parenchyma), its side and a description."""
    side = 1.0 if rng.random() < 0.5 else -1.0  # +1: patient's left (LPS +x)
    if kind == "mca":
        # Wedge: a cone from the M1/Sylvian origin opening towards the lateral convexity.
        apex = np.array([side * 22 * s[0], -4 * s[1], 2 * s[2]])
        az = np.radians(rng.uniform(-35, 35))  # anterior (-) to posterior (+) division
        el = np.radians(rng.uniform(-10, 35))
        axis = np.array([side * np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        half = np.radians(rng.uniform(22, 38))
        def wedge(a, b, c):
            px, py, pz = a - apex[0], b - apex[1], c - apex[2]
            along = px * axis[0] + py * axis[1] + pz * axis[2]
            across = np.sqrt(np.maximum(px * px + py * py + pz * pz - along * along, 0.0))
            cone = across * np.cos(half) - along * np.sin(half)  # distance to the cone's side
            return np.maximum(np.maximum(cone, 6.0 - along), 6.0 - side * a)  # never crosses the midline

        lo, hi = ((0, -120, -90), (100, 120, 110)) if side > 0 else ((-100, -120, -90), (0, 120, 110))
        sd = _boxed(wedge, x, y, z, lo, hi) + 3.0 * wobble
        if rng.random() < 0.5:  # proximal M1 occlusion: lenticulostriate (deep) territory too
            sd = np.minimum(sd, np.maximum(deep_sd, -side * x).astype(np.float32))
        where = {"apex_lps": apex.tolist(), "axis": axis.tolist(), "half_angle_deg": float(np.degrees(half))}
        return sd, ("left" if side > 0 else "right"), where
    if kind == "lacunar":
        n = int(rng.integers(1, 3))
        sd = np.full(shape, 64.0, np.float32)
        sites = [(22, -4, 3), (18, 0, 1), (10, 13, 6), (14, -18, 12), (22, 6, 8), (20, -6, 22), (24, 10, 26)]
        centres = []
        for m in range(n):
            cx, cy, cz = sites[int(rng.integers(len(sites)))]
            c = np.array([side * cx * s[0], cy * s[1], cz * s[2]]) + rng.normal(0, 1.5, 3)
            d = rng.uniform(4.0, 13.0)  # diameter (mm) in plane; perforators run upwards: taller
            radii = (d / 2, d / 2 * rng.uniform(0.9, 1.3), d / 2 * rng.uniform(1.1, 1.6))
            blob = _boxed(lambda a, b, e, c=c, radii=radii: _ellipsoid(a, b, e, c, radii), x, y, z, c - 12, c + 12)
            sd = np.minimum(sd, blob + 0.6 * wobble)
            centres.append(c.tolist())
            if m == 0 and rng.random() < 0.5:
                side = -side  # a second lacune may be contralateral
        sides = {np.sign(c[0]) for c in centres}
        return sd, ("left" if sides == {1.0} else "right" if sides == {-1.0} else ""), {"centres_lps": centres}
    # Emboli: scattered small cortical-subcortical infarcts, often in several territories.
    n = int(rng.integers(3, 9))
    sd = np.full(shape, 64.0, np.float32)
    centres = []
    bilateral = rng.random() < 0.5
    for _ in range(n):
        sgn = side if not bilateral else (1.0 if rng.random() < 0.5 else -1.0)
        theta, phi = rng.uniform(-0.9, 0.9), rng.uniform(-0.3, 0.9)
        direction = np.array([sgn * np.cos(phi) * np.cos(theta), np.cos(phi) * np.sin(theta), np.sin(phi)])
        c = direction * np.array([52, 68, 44]) * s + np.array([0, 4, 12]) * s  # ~12 mm below the surface
        r = rng.uniform(2.0, 6.0)
        radii = (r, r * rng.uniform(0.8, 1.3), r)
        blob = _boxed(lambda a, b, e, c=c, radii=radii: _ellipsoid(a, b, e, c, radii), x, y, z, c - 10, c + 10)
        sd = np.minimum(sd, blob + 0.8 * wobble)
        centres.append(c.tolist())
    sides = {np.sign(c[0]) for c in centres}
    return sd, ("left" if sides == {1.0} else "right" if sides == {-1.0} else ""), {"centres_lps": centres}


# --- generator --------------------------------------------------------------------------------------------
def _check_args(spacing, preset, contrasts, lesion, stage) -> tuple[float, float, float]:
    if preset not in PRESETS:
        raise InputError("preset", f"unknown preset '{preset}' (use {', '.join(PRESETS)})")
    unknown = [c for c in contrasts if c not in CONTRASTS]
    if unknown or not contrasts:
        raise InputError("contrasts", f"unknown contrast(s) {unknown or contrasts} (use {', '.join(CONTRASTS)})")
    if lesion is not None and lesion not in LESIONS:
        raise InputError("lesion", f"unknown lesion '{lesion}' (use {', '.join(LESIONS)} or None)")
    if stage not in STAGES:
        raise InputError("stage", f"unknown stage '{stage}' (use acute or chronic)")
    sp = tuple(float(v) for v in spacing)
    if len(sp) != 3 or min(sp) < 0.5 or max(sp) > 8.0:
        raise InputError("spacing", f"spacing must be 3 values of 0.5 to 8 mm, got {spacing}")
    return sp


def generate_brain(
    seed: int,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    preset: str = "full",
    contrasts: tuple[str, ...] = CONTRASTS,
    lesion: str | None = "mca",
    stage: str = "acute",
    noise: bool = True,
) -> BrainPhantom:
    """Generate one head: images per contrast, tissue labels and the infarct mask, all on one axial LPS grid.

    ``spacing`` is ``(si, sj, sk)`` in mm (thick slices along k get slice partial volume);
    ``preset`` "full" covers the whole head, "small" an axial slab through the ventricles and basal ganglia.
    Deterministic for a given ``seed`` and arguments.
    """
    sp = _check_args(spacing, preset, contrasts, lesion, stage)
    rng = np.random.default_rng(seed)
    anatomy = _draw_anatomy(rng)
    (x_lo, x_hi), (y_lo, y_hi), (z_lo, z_hi) = PRESETS[preset]
    shape_ijk = [max(2, int(round((hi - lo) / d))) for (lo, hi), d in zip(PRESETS[preset], sp)]
    origin = np.array([x_lo, y_lo, z_lo]) + 0.5 * np.array(sp)
    # Sub-slices for slice partial volume: build at (about) the in-plane resolution, then average.
    sub = max(1, int(round(sp[2] / min(sp[0], sp[1]))))
    fine_dz = sp[2] / sub
    nk_fine = shape_ijk[2] * sub
    xs = (origin[0] + sp[0] * np.arange(shape_ijk[0], dtype=np.float32))[None, None, :]
    ys = (origin[1] + sp[1] * np.arange(shape_ijk[1], dtype=np.float32))[None, :, None]
    zs = (z_lo + fine_dz * (np.arange(nk_fine, dtype=np.float32) + 0.5))[:, None, None]
    shape = (nk_fine, shape_ijk[1], shape_ijk[0])
    x, y, z = xs.astype(np.float32), ys.astype(np.float32), zs.astype(np.float32)  # broadcastable axes
    width = float(np.cbrt(sp[0] * sp[1] * fine_dz))
    lo, hi = (x_lo, y_lo, z_lo), (x_hi, y_hi, z_hi)
    s = anatomy.scale

    axes = (xs.ravel(), ys.ravel(), zs.ravel())
    folds = _SphereField(rng, 60.0, 3.0)
    wobble = _Field(rng, lo, hi, 4.0, 6.0)(*axes)
    bumps = _Field(rng, lo, hi, 6.0, 14.0)(*axes)

    # Outer layers, offsets of the intracranial surface.
    ic = _intracranial(x, y, z, s) + 1.5 * bumps
    neck = _capsule(x, y, z, (0, 20, -40), (0, 30, -140), 55.0, 55.0, (1.0, 1.25, 1.0))
    face = _ellipsoid(x, y, z, (0, -35, -45), (55, 60, 40))
    head = _smin(_smin(ic - 13.0, neck, 20.0), face, 20.0)
    skull_out = ic - 7.5

    # Brain parenchyma and the cortical-CSF distance phi (positive inside tissue).
    # The cerebrum fills the cranium above the tentorium (over the posterior fossa) and around the brainstem.
    fossa = _boxed(lambda a, b, c: _posterior_fossa(a, b, c, s), x, y, z, (-80, -10, -80), (80, 110, 16))
    stem = _boxed(lambda a, b, c: _brainstem(a, b, c, s), x, y, z, (-30, -8, -110), (30, 45, 12))
    cerebrum = _max(ic + anatomy.sas_mm + 0.8 * bumps, 1.5 - fossa, 2.5 - stem, -40.0 * s[2] - z)
    cerebellum = _max(fossa + anatomy.sas_mm, ic + anatomy.sas_mm, 1.5 - stem)
    brain = np.minimum(np.minimum(cerebrum, cerebellum), stem)
    d_in = -cerebrum
    d_convexity = -(ic + anatomy.sas_mm + 0.8 * bumps)  # sulci hang from the convexity, not from the tentorium
    # Sulci: thin zero sets of the folding field down to a depth; the medial fissure above the callosum.
    depth = anatomy.sulcus_depth_mm + 3.0 * wobble
    shell = (d_convexity < depth.max() + 1.0) & (d_in > -2.0)  # only near the cortex is folding needed
    sulcal = np.full(shape, 64.0, np.float32)
    centre = np.array([0.0, 6.0, 8.0]) * s
    # A smooth warp bends the radial sheets into wavy, branching sulci.
    warp = [wobble] + [_Field(rng, lo, hi, 4.0, 7.0)(*axes) for _ in range(2)]
    fx, fy, fz = (np.broadcast_to(c, shape)[shell] + 7.0 * w[shell] for c, w in zip((x, y, z), warp))
    sulcal[shell] = np.maximum(folds.zero_distance(fx, fy, fz, centre) - 0.6,
                               (d_convexity - depth)[shell])
    cc_top = 24.0 * s[2] - 0.004 * (y - 4) ** 2
    fissure_floor = np.where((y > -36 * s[1]) & (y < 40 * s[1]), cc_top - z, -z - 30.0)
    fissure = np.maximum(np.abs(x + 0.6 * wobble) - 1.0, fissure_floor)
    # Sylvian fissure: an oblique lateral cleft down to the insula, and the parasagittal insular cistern.
    ax = np.abs(x)
    box = _max(-(y + 24 * s[1]), y - 22 * s[1], -(z + 14 * s[2]), z - 16 * s[2])
    cleft = np.abs(0.55 * (y - 0.4 * (ax - 35.0)) + 0.83 * z - 2.0) - 0.9 - 0.8 * wobble
    stem_cleft = _max(cleft, 35.0 * s[0] - ax, box)
    insula = np.maximum(np.abs(ax - 35.0 * s[0] - 0.8 * wobble) - 1.0, box + 4.0)
    phi = _min(d_in, sulcal, fissure, stem_cleft, insula)
    # Cerebellar folia: concentric lamellae around the fourth ventricle.
    rc = np.sqrt(x * x + (y - 30 * s[1]) ** 2 + (z + 28 * s[2]) ** 2)
    folia_period = 5.5
    folia = np.abs(np.sin(np.pi * (rc + 3.0 * wobble + 2.0 * bumps) / folia_period)) * folia_period / np.pi
    phi_cb = np.minimum(-cerebellum, np.maximum(folia - 0.5, -cerebellum - 8.0))
    ventricles = _boxed(lambda a, b, c: _ventricles(a, b, c, s, anatomy.ventricle_scale), x, y, z,
                        (-50, -50, -45), (50, 65, 40))
    nuclei = _boxed(lambda a, b, c: _nuclei(a, b, c, s), x, y, z, (-45, -45, -20), (45, 40, 40))
    deep_region = _min(*nuclei.values()) - 4.0  # lenticulostriate territory (incl. capsule)

    # Lesion (signed distance, clipped to parenchyma later).
    lesion_sd = None
    side, where = "", {}
    if lesion is not None:
        lesion_rng = np.random.default_rng([seed, 7])
        lesion_sd, side, where = _lesion_sd(lesion, lesion_rng, s, x, y, z, shape, deep_region, wobble)
        if stage == "chronic" and side:
            # Ex-vacuo: the ipsilateral lateral ventricle widens toward the tissue loss.
            sign = 1.0 if side == "left" else -1.0
            grow = 1.6 if lesion == "mca" else 0.8
            ventricles = np.where(sign * x > 0, ventricles - grow, ventricles)

    # Composite tissues in order (later ones cover earlier ones), with partial-volume fractions.
    names = ("T1", "T2", "FLAIR", "S0", "ADC")
    chan = {n: np.zeros(shape, np.float32) for n in names}
    dwi = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.uint8)
    cover = {}

    def put(tissue: str, frac: np.ndarray) -> None:
        sig = SIGNAL[tissue]
        for n, v in zip(names, sig):
            chan[n] += frac * (np.float32(v) - chan[n])
        dwi_v = np.float32(sig[3] * np.exp(-B_VALUE * sig[4] * ADC_UNIT_MM2_S))
        dwi[...] += frac * (dwi_v - dwi)
        labels[frac >= 0.5] = LABELS[tissue]
        cover[tissue] = frac

    fat_layer = np.abs(head + 3.5) - 2.5  # subcutaneous fat between skin and galea
    put("scalp", _ramp(head, width))
    put("fat", _ramp(fat_layer, width) * _ramp(head, width))
    put("skull", _ramp(np.maximum(skull_out, -ic), width))
    put("marrow", _ramp(np.maximum(skull_out + 2.0, 2.0 - ic), width))
    put("csf", _ramp(ic, width))
    in_brain = _ramp(brain, width)
    put("wm", _ramp(cerebrum, width))
    put("cortical_gm", _ramp(cerebrum, width) * _ramp(phi - anatomy.cortex_mm, width))
    csf_in = _ramp(cerebrum, width) * _ramp(phi, width)
    put("csf", np.maximum(csf_in, 0.0))  # sulci and fissures inside the cerebral outline
    put("cerebellum_wm", _ramp(cerebellum, width))
    put("cerebellum_gm", _ramp(cerebellum, width) * _ramp(phi_cb - 1.6, width))
    put("csf", _ramp(cerebellum, width) * _ramp(phi_cb, width))
    put("brainstem", _ramp(stem, width))
    for name, sd in nuclei.items():
        put(name, _ramp(sd, width))
    put("ventricles", _ramp(ventricles, width))

    # Infarct: only where there was parenchyma.
    allowed = [t for t in PARENCHYMA if lesion != "mca" or t not in ("cerebellum_gm", "cerebellum_wm", "brainstem")]
    parenchyma = np.isin(labels, [LABELS[t] for t in allowed]).astype(np.float32)
    lesion_frac = np.zeros(shape, np.float32)
    if lesion_sd is not None:
        lesion_frac = _ramp(lesion_sd, width) * parenchyma
        _apply_lesion(chan, dwi, lesion_frac, stage, sp[0:2] + (fine_dz,))
    del x, y, z

    # Slice partial volume: average the sub-slices of each thick slice.
    def thick(a: np.ndarray) -> np.ndarray:
        return a if sub == 1 else a.reshape(shape_ijk[2], sub, *a.shape[1:]).mean(axis=1, dtype=np.float32)

    lesion_thick = thick(lesion_frac)
    labels_thick = labels[sub // 2 :: sub] if sub > 1 else labels
    grid = Volume(np.zeros(1), sp, tuple(origin), np.eye(3))
    mk = lambda a, n: Volume(a, grid.spacing, grid.origin, np.eye(3), n)  # noqa: E731

    brain_mask = thick(in_brain) > 0.5
    images = _acquire(rng, {n: thick(chan[n]) for n in names}, thick(dwi), contrasts, sp, lo, hi, brain_mask, noise)
    lesion_mask = (lesion_thick >= 0.5).astype(np.uint8)
    volume_ml = float(lesion_mask.sum() * np.prod(sp) / 1000.0)
    info = {"anatomy": anatomy.__dict__, "lesion_where": where, "lesion_fraction_ml": float(
        lesion_thick.sum() * np.prod(sp) / 1000.0), "preset": preset, "seed": seed}
    return BrainPhantom(
        images={n: mk(a, n) for n, a in images.items()},
        labels=mk(labels_thick, "labels"),
        lesion=mk(lesion_mask, "lesion"),
        lesion_volume_ml=volume_ml,
        lesion_kind=lesion,
        stage=stage,
        side=side,
        info=info,
    )


def _apply_lesion(chan: dict, dwi: np.ndarray, frac: np.ndarray, stage: str, spacing) -> None:
    """Change the signals inside the infarct: acute cytotoxic oedema, or a chronic cavity with a gliotic rim."""
    if not frac.any():
        return
    names = ("T1", "T2", "FLAIR", "S0", "ADC")
    if stage == "acute":
        target = {n: chan[n] * np.float32(f) for n, f in zip(names[:4], ACUTE[:4])}
        target["ADC"] = np.full_like(frac, ACUTE[4])
    else:
        # Depth inside the lesion decides core (cavity) versus rim (gliosis).
        box = ndimage.find_objects((frac > 0).astype(np.int8))[0]
        pad = tuple(slice(max(b.start - 2, 0), b.stop + 2) for b in box)
        inside = ndimage.distance_transform_edt(frac[pad] >= 0.5, sampling=spacing[::-1])
        depth = np.zeros_like(frac)
        depth[pad] = inside
        core = np.clip((depth - 1.5) / 1.5, 0.0, 1.0).astype(np.float32)
        target = {n: np.float32(r) + core * np.float32(c - r) for n, r, c in zip(names, CHRONIC_RIM, CHRONIC_CORE)}
    for n in names:
        chan[n] += frac * (target[n] - chan[n])
    dwi_t = target["S0"] * np.exp(-B_VALUE * ADC_UNIT_MM2_S * target["ADC"]).astype(np.float32)
    dwi += frac * (dwi_t - dwi)


def _bias(rng: np.random.Generator, shape, strength: float) -> np.ndarray:
    """Smooth multiplicative receive field, about +-``strength``: exp of a random quadratic.

    Built as a product of 1-D and 2-D factors (exp of a sum), so it costs two full-size multiplications.
    """
    nk, nj, ni = shape
    u, v, w = (np.linspace(-1, 1, n, dtype=np.float32) for n in (ni, nj, nk))
    c = rng.normal(0, 1, 8) * np.float32(strength / 3.0)
    fx = np.exp(c[0] * u + c[3] * u * u)[None, None, :]
    fz = np.exp(c[2] * w + c[5] * w * w)[:, None, None]
    fxy = np.exp(c[1] * v[:, None] + c[4] * v[:, None] ** 2 + c[6] * u[None, :] * v[:, None])[None]
    fyz = np.exp(c[7] * v[None, :] * w[:, None])[:, :, None]
    return ((fxy * fx) * (fz * fyz)).astype(np.float32)


def _rician(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    re = signal + rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(sigma)
    im = rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(sigma)
    return np.sqrt(re * re + im * im)


def _acquire(rng, chan, dwi, contrasts, spacing, lo, hi, brain_mask, noise: bool) -> dict[str, np.ndarray]:
    """Bias field, mild blur (scanner PSF) and Rician noise; ADC from the noisy b=0 and b=1000 images."""
    noise_rng = np.random.default_rng(rng.integers(1 << 62))
    out = {}
    wm = {"T1": SIGNAL["wm"][0], "T2": SIGNAL["wm"][1], "FLAIR": SIGNAL["wm"][2],
          "DWI": SIGNAL["wm"][3] * np.exp(-B_VALUE * ADC_UNIT_MM2_S * SIGNAL["wm"][4])}
    psf = tuple(0.35 / np.array(spacing[::-1]) * min(spacing))
    shape = dwi.shape
    scale = 1000.0
    for n in ("T1", "T2", "FLAIR"):
        if n not in contrasts:
            continue
        img = ndimage.gaussian_filter(chan[n], psf) * _bias(noise_rng, shape, 0.18)
        if noise:
            img = _rician(noise_rng, img, wm[n] / SNR[n])
        out[n] = (img * scale).astype(np.float32)
    if "DWI" in contrasts or "ADC" in contrasts:
        bias = _bias(noise_rng, shape, 0.25)
        s0 = ndimage.gaussian_filter(chan["S0"], psf) * bias
        sb = ndimage.gaussian_filter(dwi, psf) * bias
        if noise:
            sigma = wm["DWI"] / SNR["DWI"]
            # The b=0 image is an average of fewer, stronger signals: keep its noise relative to b=1000.
            s0 = _rician(noise_rng, s0, sigma)
            sb = _rician(noise_rng, sb, sigma)
        if "DWI" in contrasts:
            out["DWI"] = (sb * scale).astype(np.float32)
        if "ADC" in contrasts:
            valid = s0 > 0.12  # scanners blank the ADC outside the head (too little b=0 signal)
            ratio = np.clip(sb / np.maximum(s0, 1e-6), 1e-4, 1.0)
            adc = -np.log(ratio) / (B_VALUE * ADC_UNIT_MM2_S)
            out["ADC"] = np.where(valid, np.minimum(adc, 4.0), 0.0).astype(np.float32)
    return out
