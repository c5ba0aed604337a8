"""Anatomy-driven phantom: the synthetic chest CT built around a real airway mask.

The mask (e.g. an ATM'22 label, i.e. the lumen) stays the exact ground truth on
its own grid. The synthetic patient is scaled so that its lungs hold the tree (and
stretched along z when the tree is long), and shifted so that its carina and
mediastinum sit on the mask's carina; the
mask is rendered as air and a thin shell just outside it as airway wall.
Vessels, nodules and the scanner model are those of :func:`generate_chest`.
``branches`` is empty (the mask has no model centrelines).
"""

from __future__ import annotations

import edt
import numpy as np

from ..errors import InputError
from ..volume import Volume
from .airway_tree import GrowthRules, build_airway_tree
from .anatomy import HU, lung_sd, render_anatomy, sample_patient
from .chest import (
    WALL_HU,
    ChestPhantom,
    _body_mask,
    _render_nodules,
    _render_scars,
    _render_tubes,
    _render_vessels,
    _Stages,
)
from .nodules import place_distractors, place_nodules
from .raster import Grid, SdfCanvas, blend, ramp
from .realism import LowFrequencyField, Scanner, apply_scanner
from .vessels import build_vessels


def _mask_points(grid: Grid, mask: np.ndarray, rng: np.random.Generator, n: int = 40000) -> np.ndarray:
    kji = np.argwhere(mask)
    if len(kji) > n:
        kji = kji[rng.choice(len(kji), n, replace=False)]
    return grid.to_lps(kji[:, ::-1].astype(float))


def _find_carina(pts: np.ndarray) -> tuple[np.ndarray, float]:
    """Carina: going down from the top, the first level where the tree is much wider than the trachea."""
    z_top = pts[:, 2].max()
    top = pts[pts[:, 2] > z_top - 10]
    width0 = max(np.ptp(top[:, 0]), 5.0)
    z = z_top - 10
    while z > pts[:, 2].min():
        band = pts[np.abs(pts[:, 2] - z) < 2.0]
        if len(band) and np.ptp(band[:, 0]) > 2.5 * width0:
            break
        z -= 2.0
    above = pts[(pts[:, 2] > z + 5) & (pts[:, 2] < z + 25)]
    xy = above[:, :2].mean(0) if len(above) else top[:, :2].mean(0)
    return np.array([xy[0], xy[1], z + 8.0]), width0


def generate_chest_from_airway(airway_mask: Volume, seed: int, noise_hu: float | None = None,
                               kernel: str | None = None, with_vessels: bool = True, n_nodules: int | None = None,
                               wall_mm: float = 0.7, vessel_gap_mm: float = 1.0,
                               streaks: bool = True) -> ChestPhantom:
    """A synthetic CT on the grid of ``airway_mask`` whose airway ground truth is that mask (0/1)."""
    stage = _Stages()
    mask = np.asarray(airway_mask.array) > 0
    if mask.ndim != 3 or mask.sum() < 100:
        raise InputError(airway_mask.name or "airway mask", "expected a 3-D mask with an airway tree (>= 100 voxels)")
    grid = Grid.of(airway_mask)
    ss = np.random.SeedSequence(int(seed))
    r_anat, r_tree, r_vess, r_nod, r_tex, r_scan = (np.random.default_rng(c) for c in ss.spawn(6))
    pts = _mask_points(grid, mask, r_anat)
    carina, _ = _find_carina(pts)
    ext = np.ptp(pts, axis=0)
    scale = max(ext[0] / (2 * 0.8 * 135), ext[1] / (2 * 0.85 * 92), 0.6)
    p = sample_patient(r_anat, scale / 0.93)
    # Real lungs vary more in height than in width: stretch the patient along z to hold the whole tree.
    stretch = float(np.clip((carina[2] - np.percentile(pts[:, 2], 1)) / (185.0 * p.s), 1.0, 1.6))
    a = np.diag([1.0, 1.0, 1.0 / stretch])  # LPS offsets -> patient-frame offsets

    def to_patient(q: np.ndarray) -> np.ndarray:
        return (np.asarray(q, float) - carina) @ a.T + np.asarray(p.carina)

    def to_lps(q: np.ndarray) -> np.ndarray:
        return (np.asarray(q, float) - np.asarray(p.carina)) @ np.linalg.inv(a).T + carina

    direction = a @ np.asarray(grid.direction)
    shifted = Grid(grid.shape, grid.spacing, tuple(to_patient(np.asarray(grid.origin)[None])[0]),
                   tuple(map(tuple, direction)))
    stage("placement")

    ct = np.empty(grid.shape, np.float32)
    lungs = np.empty(grid.shape, np.uint8)
    render_anatomy(p, shifted, LowFrequencyField(grid, r_tex), ct, lungs)
    _render_tubes(p, shifted, ct, lungs)
    stage("anatomy")

    sd = _mask_sdf(shifted, mask, to_patient(pts), pad=12.0)
    stage("airway distance")
    model = build_airway_tree(p, r_tree, GrowthRules(min_lumen_mm=2.0 * p.s))
    vessels = np.zeros(grid.shape, np.uint8)
    if with_vessels:
        vsegs = build_vessels(p, model.branches, model.regions, model.builder, r_vess, model.lung_points,
                              vessel_gap_mm, min_vessel_mm=max(0.7, 0.9 * p.s))
        _render_vessels(shifted, ct, vessels, vsegs, [], sd, vessel_gap_mm)
    stage("vessels")

    def lung_points_sd(q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, np.float32)
        left, right = lung_sd(p, q[:, 0], q[:, 1], q[:, 2])
        return np.minimum(left, right).astype(float)

    no_caps = (np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0))
    far = _far_from_airway(shifted, sd, model.lung_points, 8.0)
    candidates = model.lung_points[far]
    nodules = place_nodules(r_nod, int(r_nod.integers(1, 4)) if n_nodules is None else n_nodules, candidates,
                            lung_points_sd, no_caps, no_caps, max_mm=min(30.0, 30.0 * p.s / 0.7))
    nodules = [n for n in nodules if _far_from_airway(shifted, sd, n.center_lps[None], n.extent_mm + 2.0)[0]]
    for i, n in enumerate(nodules, 1):
        n.label = i
    distractors = place_distractors(r_nod, int(r_nod.integers(2, 5)), candidates, lung_points_sd, no_caps)
    distractors = [d for d in distractors if d.kind == "scar"]
    nodule_labels = np.zeros(grid.shape, np.uint8)
    _render_nodules(shifted, ct, nodule_labels, vessels, nodules, r_nod)
    _render_scars(shifted, ct, distractors)
    stage("nodules")

    _render_mask_airway(shifted, ct, lungs, sd, float(p.carina[2]), wall_mm, p.s)
    lumen = np.zeros(grid.shape, np.uint8)
    sd.global_view(lumen)[...] = sd.sd <= 0
    body = _body_mask(ct)
    if noise_hu is None:
        noise_hu = float(r_scan.uniform(15, 45))
    scanner = Scanner(noise_hu=float(noise_hu), kernel=kernel or "standard", streaks=streaks)
    apply_scanner(ct, grid, scanner, r_scan, body_fraction=body,
                  bone_center_lps=to_lps(np.array([[p.med_x, p.spine_y, float(p.carina[2])]]))[0])
    del body
    np.clip(ct, -1024, 3071, out=ct)
    ct_i16 = np.rint(ct).astype(np.int16)
    del ct
    stage("scanner")
    for n in nodules:
        n.center_lps = to_lps(n.center_lps[None])[0]
    for d in distractors:
        d.p0, d.p1 = to_lps(d.p0[None])[0], to_lps(d.p1[None])[0]
    info = {"seed": int(seed), "source": airway_mask.name, "noise_hu": round(float(noise_hu), 2),
            "kernel": scanner.kernel, "scale": round(p.s, 4), "z_stretch": round(stretch, 3),
            "carina_lps": np.round(carina, 2).tolist(),
            "wall_mm": wall_mm, "stages": stage.rows}
    airway = grid.volume(mask.astype(np.uint8), "airway")
    return ChestPhantom(
        ct=grid.volume(ct_i16, "ct"), airway=airway, lumen=grid.volume(lumen, "lumen"),
        lungs=grid.volume(lungs, "lungs"), vessels=grid.volume(vessels, "vessels"),
        nodule_labels=grid.volume(nodule_labels, "nodules"), nodules=nodules, branches=[],
        distractors=distractors, patient=p, info=info)


def _mask_sdf(grid: Grid, mask: np.ndarray, pts: np.ndarray, pad: float) -> SdfCanvas:
    """Signed distance (mm, negative inside) to the mask's boundary, over the mask's box plus ``pad``."""
    canvas = SdfCanvas(grid, pts.min(0) - pad, pts.max(0) + pad)
    sub = mask[canvas.box]
    anis = tuple(grid.spacing[::-1])
    half = 0.5 * min(grid.spacing)
    outside = edt.edt(~sub, anisotropy=anis, black_border=False).astype(np.float32)
    inside = edt.edt(sub, anisotropy=anis, black_border=False).astype(np.float32)
    canvas.sd = np.where(sub, half - inside, outside - half).astype(np.float32)
    return canvas


def _far_from_airway(grid: Grid, sd: SdfCanvas, points: np.ndarray, distance: float) -> np.ndarray:
    """For each point: no airway voxel within ``distance`` mm (looked up in the distance map)."""
    ijk = np.rint(grid.to_index(points)).astype(int)[:, ::-1] - sd.offset
    inside = np.all((ijk >= 0) & (ijk < np.array(sd.sd.shape)), axis=1)
    ok = np.ones(len(points), bool)
    idx = ijk[inside]
    ok[inside] = sd.sd[idx[:, 0], idx[:, 1], idx[:, 2]] > distance
    return ok


def _render_mask_airway(grid: Grid, ct, lungs, sd: SdfCanvas, carina_z: float, wall_mm: float, s: float) -> None:
    """Tissue sheath around the trachea and main bronchi, wall shell, air inside."""
    edge = grid.edge_mm
    view = sd.global_view(ct)
    _, _, z = grid.coords(sd.box, full=False)
    central = np.broadcast_to(z > carina_z - 20 * s, sd.sd.shape)
    # The mask is the lumen (ATM'22 labels are): the wall is drawn outside it, the sheath outside the wall.
    sheath = np.where(central, sd.sd - wall_mm - 3.0 * s, 99.0).astype(np.float32)
    blend(view, 25.0, ramp(sheath, edge))
    sd.global_view(lungs)[sheath <= 0] = 0
    blend(view, WALL_HU, ramp(sd.sd - wall_mm, edge))
    blend(view, HU["air"], ramp(sd.sd, edge))
