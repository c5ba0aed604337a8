"""Head & neck CT phantoms with exact organ labels, a primary tumour (GTV) and a clinically built CTV.

Two modes share one CT synthesis (``hn_anatomy.build_scene`` then CT numbers here):

* ``generate_headneck(seed, ...)``: analytic organs (sizes and positions from real H&N contours);
* ``generate_headneck_from_masks(masks, seed)``: CT synthesised around real organ masks, which become the
  labels unchanged (skull around the brain, vertebrae around the canal, airway in front of them...).

The CT is painted per tissue (HU), blurred by a scanner point-spread function (partial volume at every
edge) and given correlated noise; output is int16 HU in LPS. The CTV is the GTV grown by a margin along
paths that stay in tissue: never through air, never into bone unless the tumour invades that bone, never
outside the body (geodesic distance on the anisotropic grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..post.margin import ctv_allowed_region, expand_ctv  # the CTV margin lives below the phantoms (one version)
from ..terminology import Segment
from ..volume import Volume
from . import hn_anatomy as hn

PRESETS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    # LPS box (mm) around the brainstem centroid: "small" spans orbits to hyoid, "full" vertex to C7.
    "small": ((-95.0, -130.0, -110.0), (95.0, 110.0, 60.0)),
    "full": ((-100.0, -135.0, -200.0), (100.0, 115.0, 135.0)),
}
TISSUE_HU: dict[int, float] = {
    hn.OUTSIDE: -1000, hn.FAT: -95, hn.MUSCLE: 50, hn.SKIN: 30, hn.CSF: 8, hn.CORTICAL: 1450, hn.MARROW: 380,
    hn.DENSE_BONE: 1750, hn.TOOTH: 2600, hn.AIR: -995, hn.DISC: 85, hn.THIN_BONE: 650, hn.TONGUE: 70, hn.GREY: 38,
}
NOISE_HU = 12.0  # standard deviation of the quantum noise in water
PSF_MM = 0.7  # in-plane scanner blur (sigma); along z: 0.4 x slice spacing
TUMOUR_HU, RIM_HU, NECROSIS_HU = 45.0, 95.0, 15.0  # enhancing rim: +50 HU over the tumour body
BONE_HU = 200.0  # above this a voxel of the noise-free map counts as bone


@dataclass
class HeadNeckPhantom:
    """A phantom CT with its ground truth: organ label map, GTV, CTV and the tissue maps they were built on."""

    ct: Volume  # int16 HU
    labels: Volume  # uint8, label values of ``organs``
    organs: list[Segment]
    gtv: Volume | None  # uint8 mask
    ctv: Volume | None  # uint8 mask
    body: Volume  # uint8 mask
    bone: Volume  # int16 bone-structure id (0: none; hn_anatomy.SKULL, MANDIBLE_BONE, VERTEBRA0 + level...)
    air: Volume  # uint8 mask of air inside the body (airway, sinuses, ear canals, mastoid cells)
    hu_targets: dict[str, float]

    def mask(self, name: str) -> np.ndarray:
        """Full mask of one organ, including organs drawn inside it (the lens in the eye, the cord in the canal)."""
        labels = {s.name: s.label for s in self.organs}
        if name not in labels:
            raise InputError(name, f"no such organ in this phantom (have {', '.join(labels)})")
        values = [labels[name]] + [labels[c] for c in hn.CHILDREN.get(name, ()) if c in labels]
        return np.isin(self.labels.array, values)


def _check_spacing(spacing) -> tuple[float, float, float]:
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise InputError("spacing", f"expected three numbers (i, j, k mm), got {spacing!r}") from None
    if len(sp) != 3 or not all(0.5 <= s <= 3.0 for s in sp):
        raise InputError("spacing", f"each value must be within 0.5-3 mm, got {spacing!r}")
    return sp  # type: ignore[return-value]


def generate_headneck(seed: int, spacing=(1.0, 1.0, 2.5), preset: str = "small", with_tumour: bool = True,
                      margin_mm: float = 8.0, tumour_site: str = "oropharynx") -> HeadNeckPhantom:
    """An analytic head & neck CT, deterministic per ``seed``; ``spacing`` in ``i, j, k`` order (0.5-3 mm).

    ``tumour_site``: ``"oropharynx"`` (lateral pharyngeal wall, may fill part of the airway) or
    ``"mandible"`` (floor of mouth, invading the mandible: the CTV may then enter that bone).
    """
    if preset not in PRESETS:
        raise InputError("preset", f"unknown preset {preset!r} (use {', '.join(PRESETS)})")
    sp = _check_spacing(spacing)
    lo, hi = (np.asarray(b) for b in PRESETS[preset])
    size = np.ceil((hi - lo) / sp).astype(int)
    shape = (int(size[2]), int(size[1]), int(size[0]))
    canvas = hn.Canvas(shape, sp, tuple(lo + np.asarray(sp) / 2))
    rng = np.random.default_rng(seed)
    anatomy = hn.analytic_organs(canvas, rng)
    scene = hn.build_scene(anatomy.organs, canvas, rng, anatomy)
    return _finish(scene, canvas, rng, with_tumour, margin_mm, tumour_site)


def generate_headneck_from_masks(organ_masks: dict[str, Volume], seed: int, with_tumour: bool = False,
                                 margin_mm: float = 8.0, tumour_site: str = "oropharynx") -> HeadNeckPhantom:
    """A CT synthesised around real organ masks (names as in hn_oar/PDDCA or ours); labels equal the masks.

    The masks must share one axis-aligned grid (identity direction); resample beforehand otherwise.
    """
    if not organ_masks:
        raise InputError("organ_masks", "no organ masks given")
    organs: dict[str, np.ndarray] = {}
    ref: Volume | None = None
    for name, vol in organ_masks.items():
        canon = hn.canonical_organ_name(name)
        if canon is None:
            raise InputError(name, "unknown organ name (see clinseg.phantoms.hn_anatomy.ORGANS)")
        if ref is None:
            ref = vol
        elif not vol.same_grid(ref):
            raise InputError(name, "mask is not on the same grid as the other organ masks")
        organs[canon] = organs.get(canon, np.zeros(vol.shape, bool)) | (np.asarray(vol.array) != 0)
    assert ref is not None
    if not np.allclose(ref.direction, np.eye(3), atol=1e-3):
        raise InputError("organ_masks", "needs an axis-aligned LPS grid (identity direction); resample first")
    canvas = hn.Canvas(ref.shape, ref.spacing, ref.origin)
    rng = np.random.default_rng(seed)
    scene = hn.build_scene(organs, canvas, rng, None)
    return _finish(scene, canvas, rng, with_tumour, margin_mm, tumour_site)


# --- CT numbers -----------------------------------------------------------------------------------------------------


def _finish(scene: hn.Scene, canvas: hn.Canvas, rng: np.random.Generator, with_tumour: bool, margin_mm: float,
            site: str) -> HeadNeckPhantom:
    from scipy.ndimage import gaussian_filter

    sp = canvas.spacing
    lut = np.full(256, -1000.0, np.float32)
    for cls, value in TISSUE_HU.items():
        lut[cls] = value
    hu = lut[scene.tissue]
    hu += np.where(scene.body & (hu > -200) & (hu < 200), 4.0 * hn.smooth_noise(hu.shape, sp, 10.0, rng), 0.0)
    labels = np.zeros(canvas.shape, np.uint8)
    targets: dict[str, float] = {}
    for name in hn.PAINT_ORDER:
        mask = scene.organs.get(name)
        if mask is None or not mask.any():
            continue
        spec = hn.BY_NAME[name]
        labels[mask] = spec.segment.label
        targets[name] = spec.hu
        _paint_organ(hu, name, mask, spec.hu, scene, canvas, rng)
    bone_id = scene.bone_id.copy()
    if "Mandible" in scene.organs:
        bone_id[scene.organs["Mandible"]] = hn.MANDIBLE_BONE
    air = (scene.tissue == hn.AIR) & scene.body
    gtv = ctv = None
    if with_tumour:
        gtv = place_gtv(scene, canvas, rng, site)
        allowed = ctv_allowed_region(scene.body, air, bone_id, gtv)
        _paint_tumour(hu, gtv, sp)
        air &= ~gtv
        ctv = expand_ctv(gtv, margin_mm, allowed, tuple(sp))
    sigma = (0.4, PSF_MM / sp[1], PSF_MM / sp[0])
    ct = gaussian_filter(hu, sigma, mode="nearest")
    noise = gaussian_filter(rng.standard_normal(hu.shape, dtype=np.float32), (0.0, 0.6, 0.6))
    ct += noise * np.float32(NOISE_HU / max(float(noise.std()), 1e-6))
    np.clip(ct, -1024, 3071, out=ct)

    def vol(array: np.ndarray, name: str) -> Volume:
        return Volume(array, tuple(sp), tuple(canvas.origin), np.eye(3), name)

    present = [n for n in hn.PAINT_ORDER if n in targets]
    return HeadNeckPhantom(
        ct=vol(np.rint(ct).astype(np.int16), "ct"),
        labels=vol(labels, "organs"),
        organs=hn.organ_segments(present),
        gtv=None if gtv is None else vol(gtv.astype(np.uint8), "GTV"),
        ctv=None if ctv is None else vol(ctv.astype(np.uint8), "CTV"),
        body=vol(scene.body.astype(np.uint8), "body"),
        bone=vol(bone_id, "bone"),
        air=vol(air.astype(np.uint8), "air"),
        hu_targets=targets,
    )


def _paint_organ(hu: np.ndarray, name: str, mask: np.ndarray, target: float, scene: hn.Scene, canvas: hn.Canvas,
                 rng: np.random.Generator) -> None:
    """Organ CT number with the texture its tissue has (grey/white matter, cortex/marrow, lung vessels)."""
    sp = canvas.spacing
    if name == "Brain":
        cortex = hn.near(mask, sp, 3.5, inside=True)
        hu[mask] = target - 2.5
        hu[cortex] = target + 4.0
        hu[mask & (scene.tissue == hn.CSF)] = TISSUE_HU[hn.CSF]
    elif name == "Mandible":
        shell = hn.near(mask, sp, 2.0, inside=True)
        hu[mask] = TISSUE_HU[hn.MARROW] + 70
        hu[shell] = TISSUE_HU[hn.CORTICAL] + 100
    elif name.startswith("Lung"):
        box = hn._bbox(mask)
        field = hn.smooth_noise(tuple(b.stop - b.start for b in box), sp, 3.0, rng)
        sub = hu[box]
        vessels = np.where(field > 1.6, 850.0, 0.0).astype(np.float32)
        sub[mask[box]] = (target + 15.0 * field + vessels)[mask[box]]
    else:
        hu[mask] = target


# --- tumour and CTV -------------------------------------------------------------------------------------------------


def place_gtv(scene: hn.Scene, canvas: hn.Canvas, rng: np.random.Generator, site: str = "oropharynx") -> np.ndarray:
    """A lobulated primary tumour: in the lateral oropharyngeal wall, or on the mandible (invading it)."""
    sp = canvas.spacing
    air = (scene.tissue == hn.AIR) & scene.body
    mandible = scene.organs.get("Mandible")
    radius = rng.uniform(11.0, 15.0)
    side = rng.choice([1, -1])
    if site == "oropharynx":
        centre = _oropharynx(air, scene, canvas)
        if centre is None:
            raise InputError("tumour_site", "no oropharyngeal airway in this field of view")
        centre = centre[0] + np.array([side * (centre[1] + 0.35 * radius), -2.0, 0.0])
    elif site == "mandible":
        if mandible is None or not mandible.any():
            raise InputError("tumour_site", "'mandible' needs a mandible mask")
        idx = np.argwhere(mandible)
        lateral = idx[(canvas.origin[0] + sp[0] * idx[:, 2]) * side > 15]
        pick = lateral[np.argmin(lateral[:, 0])] if len(lateral) else idx[np.argmin(idx[:, 0])]
        p = canvas.origin + sp * pick[::-1]
        centre = p + np.array([-side * 9.0, 0.0, 12.0])
    else:
        raise InputError("tumour_site", f"unknown site {site!r} (use 'oropharynx' or 'mandible')")
    freq = rng.normal(0.0, 2.2, (4, 3))
    phase = rng.uniform(0, 2 * np.pi, 4)
    sats = [centre + 0.75 * radius * u / np.linalg.norm(u) for u in rng.normal(size=(2, 3))]
    gtv = canvas.empty()

    def inside(x, y, z):
        dx, dy, dz = x - centre[0], y - centre[1], (z - centre[2]) / 1.25
        rho = np.sqrt(dx * dx + dy * dy + dz * dz) + 1e-6
        bump = sum(0.12 * np.cos((f[0] * dx + f[1] * dy + f[2] * dz) / rho + ph) for f, ph in zip(freq, phase))
        out = rho <= radius * (1.0 + bump)
        for s in sats:
            out |= (x - s[0]) ** 2 + (y - s[1]) ** 2 + ((z - s[2]) / 1.25) ** 2 <= (0.5 * radius) ** 2
        return out

    reach = 2.0 * radius
    canvas.draw(gtv, centre - reach, centre + reach, inside)
    soft_organs = np.zeros_like(gtv)
    for name, mask in scene.organs.items():
        if name != "Mandible":
            soft_organs |= mask
    gtv &= scene.body & ~soft_organs
    bone = scene.bone_id > 0
    if site != "mandible":
        gtv &= ~bone
        if mandible is not None:
            gtv &= ~mandible
    else:  # only the mandible is invaded, not its neighbours (teeth, hyoid)
        gtv &= ~bone
    return _largest_component(gtv)


def _oropharynx(air: np.ndarray, scene: hn.Scene, canvas: hn.Canvas) -> tuple[np.ndarray, float] | None:
    """Centre and half-width of the pharyngeal airway at the level of the mandibular angles."""
    mandible = scene.organs.get("Mandible")
    if mandible is None or not mandible.any():
        return None
    ks = np.flatnonzero(mandible.any(axis=(1, 2)))
    k = int(ks[0] + 0.3 * (ks[-1] - ks[0]))
    canal = scene.organs.get("Spinal canal")
    for dk in (0, 1, -1, 2, -2, 3, -3):
        kk = k + dk
        if not 0 <= kk < air.shape[0]:
            continue
        jj, ii = np.nonzero(air[kk])
        if len(jj) == 0:
            continue
        x = canvas.origin[0] + canvas.spacing[0] * ii
        y = canvas.origin[1] + canvas.spacing[1] * jj
        keep = np.abs(x - np.median(x)) < 25
        if canal is not None and canal[kk].any():
            cy = canvas.origin[1] + canvas.spacing[1] * np.nonzero(canal[kk])[0].mean()
            keep &= (y < cy) & (y > cy - 60)
        if keep.sum() < 4:
            continue
        x, y = x[keep], y[keep]
        z = canvas.origin[2] + canvas.spacing[2] * kk
        return np.array([x.mean(), y.mean(), z]), float(np.ptp(x) / 2)
    return None


def _largest_component(mask: np.ndarray) -> np.ndarray:
    import cc3d

    if not mask.any():
        return mask
    lab = cc3d.connected_components(mask.astype(np.uint8), connectivity=26)
    counts = np.bincount(lab.ravel())
    counts[0] = 0
    return lab == int(np.argmax(counts))


def _paint_tumour(hu: np.ndarray, gtv: np.ndarray, spacing) -> None:
    """Tumour body, an enhancing rim (+50 HU) 2.5 mm deep, a necrotic core when large."""
    depth = np.zeros(gtv.shape, np.float32)
    box = hn._bbox(gtv)
    if box is None:
        return
    import edt

    depth[box] = edt.edt(gtv[box], anisotropy=tuple(np.asarray(spacing, float)[::-1]), black_border=True)
    hu[gtv] = TUMOUR_HU
    hu[gtv & (depth <= 2.5)] = RIM_HU
    hu[gtv & (depth > 8.0)] = NECROSIS_HU
