"""One candidate's nodule mask: adaptive threshold, opening against attached vessels, a ball limit.

The mask stays inside the search region (each lung closed with a ball larger than any nodule: a
juxta-pleural nodule is a dent in the lung's air that the closing fills, the chest wall stays out).
The closing fills a broad-based dent only to a curved surface, so the tissue outside the region
within the mask's convex hull (slice by slice) is added: the nodule then reaches the wall's line.
The first threshold is half-way between the lung background and the nodule's density (a centre above
-350 HU counts as solid tissue of at least 0 HU, as blur lowers a small nodule's peak; a fainter one as
ground glass, at most -620 HU). Blur keeps a nodule's excess density (HU above the background times
volume): the solid sphere holding it, blurred as a scanner would (``blur.py``), tells a small solid
nodule, whose blurred core reads short of solid, from a fainter one, and gives the level at which a
blurred sphere of its size keeps its own volume (half the contrast for a large one, less for a small
one); the mask is moved to that level, no farther out than the sphere reaches. Tissue
attached to the nodule (vessels) is cut off by an opening whose ball scales with the nodule: a
vessel thinner than the ball vanishes, the fatter nodule survives; a small nodule is opened on a
finer copy of the crop (trilinear), its mask then read back at the original voxel centres. What the
opening cut off comes back where it ends within 0.7 radii of the rest (lobulations, a large
nodule's thin caps: without them LIDC-IDRI-0001's 30 mm nodule measured 23.8 mm), first after an
opening with half the ball (which cuts a lobe's thin link to a vessel), then as is; a vessel runs on
into the vascular tree and stays cut. A ball of 1.7 radii + 3 mm bounds what still leaks. A solid
core is segmented again at a ground-glass threshold; when that widens it by more than an edge's
blur would, the wider mask is the nodule (part-solid).
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import edt
import fill_voids
import numpy as np
from scipy import ndimage

from ...post.blur import CORE_PERCENTILE, scanner_sigma_mm, sphere_core, sphere_edge

BACKGROUND_BELOW_HU = -700.0  # lung parenchyma sampled for the background level
DEFAULT_BACKGROUND_HU = -850.0
SOLID_CORE_HU = -350.0  # a centre denser than this is solid tissue (blurred when small)
SOLID_LEVEL_HU = 0.0
GGO_LEVEL_HU = -620.0  # typical ground-glass density, for the halo threshold
HALO_VOXELS, HALO_SHARE = 1.0, 0.15  # a halo widens the radius by more than 1 voxel + 15 %
HALO_REACH, HALO_COMPACT = 1.3, 0.9  # ... and 90 % of it lies within 1.3 of its radius + 1 voxel
OPEN_FRACTION = 0.4  # opening ball radius / nodule radius (0.55 was worse on training seeds 11, 100)
MAX_OPEN_MM = 4.0
LIMIT_FACTOR, LIMIT_PAD_MM = 1.7, 3.0  # ball limit: 1.7 r + 3 mm
LOBE_DEPTH = 0.7  # a piece cut off by the opening that ends within this many radii of the rest is the nodule's
LOBE_OPEN = 0.5  # lobulations are looked for again after an opening with this share of the ball
MAX_UPSAMPLE = 2
SOLID_SHARE = 0.9  # a core short of solid reading this share of a blurred solid sphere's is solid
VOLUME_SLACK = 0.1  # log-volume error of the excess-density sphere (noise, background level)
MASS_PAD_SIGMAS = 2.0  # excess density summed within this many blur sigmas of the mask (the blurred tail)


@dataclass
class NoduleMask:
    """A candidate's mask ``mask`` inside ``box`` of the CT grid, with what the features need."""

    box: tuple[slice, slice, slice]
    mask: np.ndarray
    allowed: np.ndarray  # the closed lung in the box
    threshold_hu: float
    background_hu: float
    core_hu: float
    leak: float  # share of the opened component outside the ball limit (vessel trees: large)
    halo: bool  # segmented at the ground-glass threshold around a solid core

    @property
    def voxels(self) -> int:
        return int(np.count_nonzero(self.mask))


def ball_distance(shape: tuple[int, ...], centre: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    axes = [(np.arange(n) - c) * s for n, c, s in zip(shape, centre, spacing)]
    return np.sqrt(axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2)


def _component_at(mask: np.ndarray, dist: np.ndarray, within_mm: float) -> np.ndarray:
    """The connected component of ``mask`` with a voxel nearest the centre, if one is within ``within_mm``."""
    near = mask & (dist <= within_mm)
    if not near.any():
        return np.zeros_like(mask)
    labels = cc3d.connected_components(mask.astype(np.uint8), connectivity=26)
    seed = np.unravel_index(int(np.argmin(np.where(near, dist, np.inf))), mask.shape)
    return labels == labels[seed]


def equivalent_radius(mask: np.ndarray, spacing: np.ndarray) -> float:
    return float((3 * np.count_nonzero(mask) * np.prod(spacing) / (4 * np.pi)) ** (1 / 3))


class _Crop:
    """The crop on a grid fine enough to open with ``open_mm`` (integer upsampling of the CT grid)."""

    def __init__(self, hu: np.ndarray, allowed: np.ndarray, centre: np.ndarray, spacing: np.ndarray,
                 open_mm: float) -> None:
        self.factor = np.clip(np.ceil(spacing / max(open_mm / 1.5, 1e-3)), 1, MAX_UPSAMPLE).astype(int)
        if np.any(self.factor > 1):
            shape = tuple((n - 1) * f + 1 for n, f in zip(hu.shape, self.factor))
            hu = ndimage.zoom(hu, np.asarray(shape) / hu.shape, output=np.float32, order=1, grid_mode=False)
            allowed = ndimage.zoom(allowed.astype(np.uint8), np.asarray(shape) / allowed.shape, order=0,
                                   grid_mode=False).astype(bool)
        self.hu, self.allowed = hu, allowed
        self.spacing = spacing / self.factor
        self.dist = ball_distance(hu.shape, centre * self.factor, self.spacing)

    def coarse(self, mask: np.ndarray) -> np.ndarray:
        """``mask`` read at the CT's voxel centres."""
        f = self.factor
        return mask[:: f[0], :: f[1], :: f[2]]


def _open_mm(radius_mm: float) -> float:
    return min(OPEN_FRACTION * radius_mm, MAX_OPEN_MM)


def _with_lobes(core: np.ndarray, tissue: np.ndarray, away: np.ndarray, depth_mm: float, touch_mm: float) -> np.ndarray:
    """``core`` with the pieces of ``tissue`` outside it that touch it (``away``: mm from ``core``) and end within
    ``depth_mm`` of it: lobulations and thin caps. A vessel's piece runs on into the vascular tree (to the
    crop's edge or far beyond ``depth_mm``) and stays out."""
    pieces, n = cc3d.connected_components((tissue & ~core).view(np.uint8), connectivity=26, return_N=True)
    if n == 0:
        return core
    keep = np.zeros(n + 1, bool)
    keep[np.unique(pieces[away <= touch_mm])] = True
    keep[np.unique(pieces[away > depth_mm])] = False
    for axis in range(3):  # a piece reaching the crop's edge goes on beyond it
        for end in (0, -1):
            keep[np.unique(np.take(pieces, end, axis=axis))] = False
    keep[0] = False
    return core | keep[pieces] if keep.any() else core


def _grow(crop: _Crop, threshold: float, radius_mm: float) -> tuple[np.ndarray, float, float]:
    """(mask on the crop's grid, leak, equivalent radius of the opened core without its lobes) at one
    threshold."""
    above = (crop.hu > threshold) & crop.allowed
    open_mm = _open_mm(radius_mm)
    seed_mm = max(radius_mm, 1.5 * float(crop.spacing.max()))
    anisotropy = tuple(crop.spacing)
    core = opened = above
    if open_mm > 0.5 * float(crop.spacing.min()):
        inscribed = edt.edt(above.view(np.uint8), anisotropy=anisotropy, black_border=True)
        eroded = _component_at(inscribed > open_mm, crop.dist, seed_mm)
        if eroded.any():
            from_eroded = edt.edt((~eroded).view(np.uint8), anisotropy=anisotropy, black_border=False)
            core = opened = _component_at((from_eroded <= open_mm) & above, crop.dist, seed_mm)
            if core.any():
                # What the opening cut off comes back where it is the nodule's own: lobulations still thick
                # after an opening with half the ball (their thin links to vessels cut), then the pieces that
                # touch nothing else. Distances from the core are read off the erosion's (one transform less).
                away, depth, touch = from_eroded - open_mm, LOBE_DEPTH * radius_mm, 1.8 * float(crop.spacing.max())
                half_mm = LOBE_OPEN * open_mm
                half = inscribed > half_mm
                half = (edt.edt((~half).view(np.uint8), anisotropy=anisotropy, black_border=False) <= half_mm) & above
                core = _with_lobes(_with_lobes(core, half, away, depth, touch), above, away, depth, touch)
    core = _component_at(core, crop.dist, seed_mm)
    if not core.any():
        return core, 0.0, 0.0
    inside = crop.dist <= LIMIT_FACTOR * radius_mm + LIMIT_PAD_MM
    leak = float(np.count_nonzero(core & ~inside)) / float(np.count_nonzero(core))
    mask = _component_at(fill_voids.fill(core & inside, in_place=False), crop.dist, seed_mm)
    return mask, leak, equivalent_radius(mask & opened, crop.spacing)


def _grow_refit(hu: np.ndarray, allowed: np.ndarray, centre: np.ndarray, spacing: np.ndarray, threshold: float,
                radius_mm: float) -> tuple[np.ndarray, float, float, _Crop, float]:
    """``_grow``, then once more with the mask's own radius when that is clearly larger (the Hessian's
    scale steps are coarse, and a larger ball opens off thicker vessels): (mask, leak, radius, crop,
    opened core's radius)."""
    crop = _Crop(hu, allowed, centre, spacing, _open_mm(radius_mm))
    mask, leak, r_core = _grow(crop, threshold, radius_mm)
    r_seg = equivalent_radius(mask, crop.spacing)
    if r_seg > 1.3 * radius_mm or (leak > 0.3 and r_seg > radius_mm):
        crop2 = _Crop(hu, allowed, centre, spacing, _open_mm(r_seg))
        mask2, leak2, r_core2 = _grow(crop2, threshold, r_seg)
        if mask2.any():
            return mask2, leak2, r_seg, crop2, r_core2
    return mask, leak, radius_mm, crop, r_core


def _recentre(above: np.ndarray, allowed: np.ndarray, dist: np.ndarray, centre: np.ndarray, spacing: np.ndarray,
              radius_mm: float) -> tuple[np.ndarray, float]:
    """(centre, radius): the thickest point of the thresholded tissue near the candidate and its
    inscribed radius when larger. A blob filter's peak on a juxta-vascular nodule drifts toward the
    vessel and under-reads the size; the nodule's medial maximum does not."""
    depth = edt.edt((above & allowed).view(np.uint8), anisotropy=tuple(spacing), black_border=True)
    near = np.where(dist <= max(radius_mm, 2 * float(spacing.max())), depth, 0)
    best = np.unravel_index(int(np.argmax(near)), near.shape)
    inscribed = float(near[best])
    if inscribed <= 0 or dist[best] > max(inscribed, 0.5 * radius_mm):
        return centre, radius_mm  # the thickest tissue is another structure, not this blob's middle
    return np.asarray(best, float), max(radius_mm, inscribed)


def _against_the_wall(mask: np.ndarray, tissue: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """``mask`` with the tissue outside ``allowed`` that lies within its convex hull, slice by slice. The search
    region's closing fills a juxta-pleural nodule's dent in the lung only to a curved surface that cuts a
    lens off the nodule (deeper the broader its base); the hull of what is left reaches back to where the
    nodule meets the chest wall, whose line is the wall's own."""
    outside = tissue & ~allowed
    if not np.any(ndimage.binary_dilation(mask) & outside):
        return mask
    from skimage.morphology import convex_hull_image

    out = mask.copy()
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        if np.count_nonzero(mask[k]) >= 3:
            out[k] |= convex_hull_image(mask[k]) & outside[k]
    return out


def _blur_band(mask: np.ndarray, allowed: np.ndarray, spacing: np.ndarray, smooth_vox: np.ndarray) -> np.ndarray:
    """``mask`` and what lies within MASS_PAD_SIGMAS blur sigmas of it (inside ``allowed``): where the scanner's
    blur and the smoothing spread its density."""
    pad = MASS_PAD_SIGMAS * float(np.sqrt(scanner_sigma_mm(spacing) ** 2 + (smooth_vox * spacing) ** 2).max())
    return (edt.edt((~mask).view(np.uint8), anisotropy=tuple(spacing), black_border=False) <= pad) & allowed


def _mass_radius(hu: np.ndarray, band: np.ndarray, background: float, contrast: float, spacing: np.ndarray) -> float:
    """Radius (mm) of the sphere of ``contrast`` over ``background`` that holds the HU above the background in
    ``band``: blur spreads a nodule's density but keeps its sum, however small the nodule is."""
    mass = float(np.sum(hu[band] - background)) * float(np.prod(spacing))
    return float((3 * max(mass, 0.0) / (4 * np.pi * contrast)) ** (1 / 3))


def _edge_mask(hu: np.ndarray, mask: np.ndarray, band: np.ndarray, threshold: float, edge_threshold: float,
               dist: np.ndarray, seed_mm: float) -> np.ndarray:
    """``mask`` (segmented at ``threshold``) moved to ``edge_threshold``: grown into ``band`` or trimmed, the part
    at the centre."""
    above = hu > edge_threshold
    moved = (mask | band) & above if edge_threshold < threshold else mask & above
    return _component_at(moved, dist, seed_mm)


def segment_candidate(ct: np.ndarray, region: np.ndarray, spacing_ijk: tuple[float, float, float],
                      centre_kji: np.ndarray, radius_mm: float) -> NoduleMask | None:
    """The nodule mask around ``centre_kji`` (float index) of estimated ``radius_mm``; None when nothing
    above the background is there."""
    spacing = np.asarray(spacing_ijk[::-1], float)
    half = np.ceil((LIMIT_FACTOR * 1.3 * radius_mm + LIMIT_PAD_MM + 2.0) / spacing).astype(int)
    c = np.rint(centre_kji).astype(int)
    lo = np.maximum(c - half, 0)
    hi = np.minimum(c + half + 1, ct.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    raw = ct[box].astype(np.float32)
    smooth_vox = np.minimum(0.6 / spacing, 0.7)
    hu = ndimage.gaussian_filter(raw, smooth_vox)  # tames noise, keeps the edge
    allowed = region[box]
    centre = np.asarray(centre_kji, float) - lo
    dist = ball_distance(hu.shape, centre, spacing)

    lung = allowed & (hu < BACKGROUND_BELOW_HU)
    background = float(np.median(hu[lung])) if np.count_nonzero(lung) > 20 else DEFAULT_BACKGROUND_HU
    read_mm = max(0.5 * radius_mm, float(spacing.max()))
    # The chest wall outside the search region is not the nodule: a juxta-pleural ground-glass nodule read with it
    # looks solid and is thresholded above its own density.
    read = (dist <= read_mm) & allowed
    core = float(np.percentile(hu[read if np.count_nonzero(read) >= 4 else dist <= read_mm], CORE_PERCENTILE))
    if core <= background + 60:
        return None

    level = max(core, SOLID_LEVEL_HU)
    # Short of solid: ground glass first (the threshold half-way to its level or the core, whichever is fainter).
    threshold = ((min(core, GGO_LEVEL_HU) if core <= SOLID_CORE_HU else level) + background) / 2
    centre, radius = _recentre(hu > threshold, allowed, dist, centre, spacing, radius_mm)
    mask, leak, radius, crop, r_hi = _grow_refit(hu, allowed, centre, spacing, threshold, radius)
    if not mask.any():
        return None
    out = crop.coarse(mask)
    edge, solid = (threshold, out), core > SOLID_CORE_HU
    if out.any():
        # A solid sphere holding the excess density (blur keeps its sum): its core read tells a small solid
        # nodule's blurred core from a fainter nodule's, its edge level where to threshold it to get its size back
        # (half the contrast is the edge of a large sphere only, a small one's blur takes more off its edge).
        band = _blur_band(out, allowed, spacing, smooth_vox)
        r_mass = _mass_radius(hu, band, background, level - background, spacing)
        solid = solid or (r_mass > 0 and core - background >= SOLID_SHARE * (level - background)
                          * sphere_core(r_mass, spacing, smooth_vox, read_mm))
        if solid and r_mass > 0:
            edge_threshold = background + (level - background) * sphere_edge(r_mass, spacing, smooth_vox)
            if core <= SOLID_CORE_HU:  # never above half-way to what a blurred core reads
                edge_threshold = min(edge_threshold, (core + background) / 2)
            # Grown no farther than the sphere reaches (plus half a voxel): not along a vessel it touches.
            to_centre = ball_distance(hu.shape, centre, spacing)
            moved = _edge_mask(hu, out, band & (to_centre <= r_mass + 0.5 * float(spacing.max())), threshold,
                               edge_threshold, to_centre, max(radius, 1.5 * float(spacing.max())))
            # Unless the first mask is clearly nearer the sphere's volume (log scale): the edge threshold can open
            # a juxta-vascular nodule's neck to its vessel.
            voxels = 4 / 3 * np.pi * r_mass**3 / float(np.prod(spacing))
            if moved.any() and abs(np.log(np.count_nonzero(moved) / voxels)) < abs(
                    np.log(np.count_nonzero(out) / voxels)) + VOLUME_SLACK:
                edge = (edge_threshold, moved)
            if core <= SOLID_CORE_HU:
                threshold, out = edge
    halo = False
    if core > SOLID_CORE_HU:
        # Compared with the opened core alone: lobes taken back at the solid threshold would hide a small
        # nodule's halo.
        low = (GGO_LEVEL_HU + background) / 2
        wide, wide_leak, _, wide_crop, _ = _grow_refit(hu, allowed, centre, spacing, low, max(radius, 2.0 * r_hi))
        # A solid edge's blur moves the lower threshold's boundary out by about a voxel; a ground-glass
        # halo (part-solid) by a share of the radius.
        r_lo = equivalent_radius(wide, wide_crop.spacing)
        # A halo surrounds its core: the wide mask lies about as close to the centre as a ball of its volume, where
        # one that followed a vessel reaches far beyond it.
        compact = np.count_nonzero(wide & (wide_crop.dist <= HALO_REACH * r_lo + float(spacing.max()))) / max(
            np.count_nonzero(wide), 1)
        if wide_leak < 0.3 and r_lo - r_hi > HALO_VOXELS * float(spacing.max()) + HALO_SHARE * r_hi \
                and compact >= HALO_COMPACT:
            out, leak, threshold, halo = wide_crop.coarse(wide), wide_leak, low, True
        else:
            threshold, out = edge
    if not out.any():
        return None
    out = _against_the_wall(out, hu > threshold, allowed)
    return NoduleMask(box, out, allowed, float(threshold), background, core, leak, halo)
