"""Synthetic chest CT with exact ground truth: ``generate_chest(seed, ...) -> ChestPhantom``.

Ground-truth definitions (all on the CT's own grid, voxel centres):

* ``airway`` (uint8 0/1): voxels whose centre lies inside the lumen surface
  of any branch, plus the voxels that contain a branch centreline (so that
  branches thinner than a voxel stay 26-connected). This is the ATM'22
  definition: the real ATM'22 label masks in the shared data have a tracheal
  cross-section of 16-18 mm equivalent diameter, the adult lumen (lumen + wall
  would be 3-5 mm wider), and the ATM'22 baseline trained on them traces the
  lumen edge of the phantoms. ``lumen`` is the same mask (kept for callers);
  ``airway_outer`` counts the wall too (the outer wall surface).
* ``lungs`` (uint8): 1 left lung (patient's left, +x in LPS), 2 right lung;
  intrapulmonary airways, vessels and nodules are inside the lungs; the
  trachea, main bronchi and mediastinal tissue are not.
* ``vessels`` (uint8): 1 pulmonary artery, 2 pulmonary vein (also vessel-crossing
  distractors); never overlaps ``airway`` (a gap of ``vessel_gap_mm`` is kept).
* ``nodule_labels`` (uint8): nodule ``n`` of ``nodules`` has label ``n``.

The CT is rendered with partial volume (a one-voxel ramp across every
surface), then blurred by the reconstruction kernel, given streaks, optional
motion and correlated noise, and stored as int16 HU.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..volume import Volume
from .airway_tree import Branch, GrowthRules, build_airway_tree
from .anatomy import HU, Patient, lung_sd, render_anatomy, sample_patient
from .nodules import Distractor, NoduleSpec, place_distractors, place_nodules
from .raster import Grid, SdfCanvas, blend, mark_polylines, ramp
from .realism import LowFrequencyField, Scanner, apply_scanner
from .vessels import ARTERY, VEIN, VesselSegment, build_vessels

# name: (spacing i,j,k mm, size i,j,k, default smallest airway lumen mm)
PRESETS: dict[str, tuple[tuple[float, float, float], tuple[int, int, int], float]] = {
    "small": ((1.4, 1.4, 1.4), (160, 160, 128), 2.0),
    "demo": ((1.0, 1.0, 1.0), (256, 256, 224), 2.0),
    "full": ((0.7, 0.7, 1.0), (512, 512, 300), 2.0),
}
FULL_FOV_MM = (358.4, 358.4, 300.0)
WALL_HU = 10.0
VESSEL_HU = HU["blood"]


@dataclass
class ChestPhantom:
    """A synthetic chest CT and its exact labels on the same grid (see the module docstring)."""

    ct: Volume
    airway: Volume
    lumen: Volume
    lungs: Volume
    vessels: Volume
    nodule_labels: Volume
    nodules: list[NoduleSpec]
    branches: list[Branch]
    distractors: list[Distractor] = field(default_factory=list)
    patient: Patient | None = None
    info: dict = field(default_factory=dict)
    airway_outer: Volume | None = None  # lumen + wall (None when the source gives no wall surface)

    def branches_json(self) -> list[dict]:
        return [b.to_json() for b in self.branches]

    def nodules_json(self) -> dict:
        return {"nodules": [n.to_json() for n in self.nodules],
                "distractors": [d.to_json() for d in self.distractors], "info": self.info}


class _Stages:
    """Wall time and peak resident memory after each stage (for the benchmark)."""

    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.rows: list[dict] = []

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        self.rows.append({"stage": name, "seconds": round(now - self.t, 3), "peak_rss_mb": round(peak_mb, 1)})
        self.t = now


def _grid(spacing, size, direction, center_lps) -> Grid:
    d = np.eye(3) if direction is None else np.asarray(direction, float).reshape(3, 3)
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
        raise InputError("direction", "must be an orthonormal 3x3 matrix (columns = i, j, k axes in LPS)")
    half = np.asarray(spacing) * (np.asarray(size) - 1) / 2
    origin = np.asarray(center_lps, float) - d @ half
    return Grid((int(size[2]), int(size[1]), int(size[0])), tuple(float(s) for s in spacing),
                tuple(float(o) for o in origin), tuple(map(tuple, d)))


def _resolve_geometry(preset, spacing, shape, fov_mm):
    if preset is not None and preset not in PRESETS:
        raise InputError("preset", f"unknown preset '{preset}' (choose from {', '.join(PRESETS)})")
    p_spacing, p_size, min_lumen = PRESETS[preset or "full"]
    spacing = tuple(float(s) for s in (spacing if spacing is not None else p_spacing))
    if len(spacing) != 3 or not all(0.2 <= s <= 5.0 for s in spacing):
        raise InputError("spacing", f"expected three spacings between 0.2 and 5 mm, got {spacing}")
    if shape is not None:
        size = tuple(int(n) for n in shape)
    else:
        fov = fov_mm if fov_mm is not None else (
            np.asarray(p_spacing) * np.asarray(p_size) if preset is not None else FULL_FOV_MM)
        size = tuple(max(8, int(round(f / s))) for f, s in zip(fov, spacing))
    if len(size) != 3 or min(size) < 8:
        raise InputError("shape", f"expected three sizes (i, j, k) of at least 8 voxels, got {size}")
    return spacing, size, min_lumen


def generate_chest(seed: int, spacing: tuple[float, float, float] | None = None,
                   shape: tuple[int, int, int] | None = None, fov_mm: tuple[float, float, float] | None = None,
                   direction: np.ndarray | None = None, preset: str | None = None, noise_hu: float | None = None,
                   kernel: str | None = None, with_vessels: bool = True, n_nodules: int | None = None,
                   n_distractors: int | None = None, motion: bool = False, fov_cut: bool = True,
                   streaks: bool = True, scale: float | None = None, min_lumen_mm: float | None = None,
                   vessel_gap_mm: float = 1.0) -> ChestPhantom:
    """A chest CT phantom, deterministic for ``seed`` (same arguments, same bytes).

    ``spacing`` (i, j, k mm) and ``shape`` (i, j, k voxels) or ``fov_mm`` set
    the grid (default: the ``preset``'s, else 512x512x300 at 0.7x0.7x1 mm);
    ``direction`` is any orthonormal matrix. The patient is scaled down when
    the field of view is smaller than an adult chest (``scale`` overrides).
    ``noise_hu`` (default 15-45 by seed) is the noise sigma in soft tissue;
    ``kernel`` is soft | standard | sharp | lung. ``fov_cut`` positions the
    scan like a clinical one (top near the lung apex, random table offset);
    otherwise the grid is centred on the lungs.
    """
    stage = _Stages()
    spacing, size, preset_lumen = _resolve_geometry(preset, spacing, shape, fov_mm)
    fov = np.asarray(spacing) * np.asarray(size)
    ss = np.random.SeedSequence(int(seed))
    r_anat, r_tree, r_vess, r_nod, r_tex, r_scan = (np.random.default_rng(c) for c in ss.spawn(6))
    if scale is None:
        # The lungs (270 mm wide at scale 1) must fit; the body's flanks may be cut by the field of view, as in
        # targeted reconstructions. A child-sized chest (scale ~0.7) has a 13 mm trachea that the ATM'22
        # baseline (trained on adult CT) misses: DSC 0.39 -> 0.52, raw 0.66 -> 0.76 on seeds 1000-1001.
        scale = float(min(1.0, min(fov[0], fov[1]) / 300.0, fov[2] / 260.0))
    p = sample_patient(r_anat, scale)
    if fov_cut:
        top = p.apex_z + r_anat.uniform(-4, 12) * p.s
        center = np.array([r_anat.uniform(-8, 8) * p.s, p.body_cy + r_anat.uniform(0, 12) * p.s, top - fov[2] / 2])
    else:
        center = np.array([0.0, p.body_cy, 0.47 * p.apex_z])
    grid = _grid(spacing, size, direction, center)

    rules = GrowthRules(min_lumen_mm=min_lumen_mm or max(preset_lumen * min(1.0, scale / 0.62), 1.2),
                        wall_ratio=r_tree.uniform(0.15, 0.2))
    model = build_airway_tree(p, r_tree, rules)
    branches = model.branches
    _clip_root_to_grid(branches[0], grid)
    stage("airway tree")
    vsegs: list[VesselSegment] = []
    if with_vessels:
        vsegs = build_vessels(p, branches, model.regions, model.builder, r_vess, model.lung_points, vessel_gap_mm,
                              min_vessel_mm=max(0.7, 0.9 * scale, 0.6 * min(spacing)))

    stage("vessel trees")
    def lung_points_sd(q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, np.float32)
        left, right = lung_sd(p, q[:, 0], q[:, 1], q[:, 2])
        return np.minimum(left, right).astype(float)

    a_caps = _airway_caps(branches)
    v_caps = (np.array([v.p0 for v in vsegs]).reshape(-1, 3), np.array([v.p1 for v in vsegs]).reshape(-1, 3),
              np.array([max(v.r0, v.r1) for v in vsegs]))
    if n_nodules is None:
        n_nodules = int(r_nod.integers(1, 5))
    nodules = place_nodules(r_nod, n_nodules, model.lung_points, lung_points_sd, a_caps, v_caps,
                            max_mm=min(30.0, 30.0 * scale / 0.7))
    distractors = place_distractors(r_nod, int(r_nod.integers(2, 6)) if n_distractors is None else n_distractors,
                                    model.lung_points, lung_points_sd, a_caps)

    stage("nodules placed")
    # --- rendering -------------------------------------------------------------------------------------------------
    ct = np.empty(grid.shape, np.float32)
    lungs = np.empty(grid.shape, np.uint8)
    render_anatomy(p, grid, LowFrequencyField(grid, r_tex), ct, lungs)
    stage("anatomy")
    _render_tubes(p, grid, ct, lungs)
    stage("mediastinal tubes")
    airway_outer, lumen, outer = _airway_labels(grid, branches)
    stage("airway labels")
    vessels = np.zeros(grid.shape, np.uint8)
    _render_vessels(grid, ct, vessels, vsegs, distractors, outer, vessel_gap_mm)
    stage("vessels")
    nodule_labels = np.zeros(grid.shape, np.uint8)
    _render_nodules(grid, ct, nodule_labels, vessels, nodules, r_nod)
    _render_scars(grid, ct, distractors)
    stage("nodules + scars")
    _render_airway(grid, ct, lungs, branches, outer, p)
    del outer
    stage("airway render")
    body = _body_mask(ct)
    if noise_hu is None:
        noise_hu = float(r_scan.uniform(15, 45))
    scanner = Scanner(noise_hu=float(noise_hu), kernel=kernel or "standard", streaks=streaks, motion=motion)
    apply_scanner(ct, grid, scanner, r_scan, body_fraction=body,
                  bone_center_lps=np.array([p.med_x, p.spine_y, float(center[2])]))
    stage("scanner")
    del body
    np.clip(ct, -1024, 3071, out=ct)
    ct_i16 = np.rint(ct).astype(np.int16)
    del ct
    stage("int16")
    info = {"seed": int(seed), "preset": preset, "noise_hu": round(float(noise_hu), 2), "kernel": scanner.kernel,
            "motion": motion, "scale": round(p.s, 4), "n_branches": len(branches),
            "max_generation": max(b.generation for b in branches), "min_lumen_mm": rules.min_lumen_mm,
            "stages": stage.rows}
    return ChestPhantom(
        ct=grid.volume(ct_i16, "ct"), airway=grid.volume(lumen, "airway"), lumen=grid.volume(lumen.copy(), "lumen"),
        lungs=grid.volume(lungs, "lungs"), vessels=grid.volume(vessels, "vessels"),
        nodule_labels=grid.volume(nodule_labels, "nodules"), nodules=nodules, branches=branches,
        distractors=distractors, patient=p, info=info, airway_outer=grid.volume(airway_outer, "airway_outer"))


def _clip_root_to_grid(trachea: Branch, grid: Grid) -> None:
    """Start the trachea where it enters the field of view (it runs on into the neck)."""
    pts = trachea.points_lps
    dense = np.concatenate([a + (b - a) * np.linspace(0, 1, 40, endpoint=False)[:, None]
                            for a, b in zip(pts[:-1], pts[1:])] + [pts[-1:]])
    ijk = grid.to_index(dense)
    inside = np.all((ijk >= 0) & (ijk <= np.array(grid.shape[::-1]) - 1), axis=1)
    if not inside.any() or inside[0]:
        return
    first = int(np.argmax(inside))
    keep = [dense[first]] + [q for q in pts if np.all(grid.to_index(q[None])[0] >= 0)
                             and np.linalg.norm(q - pts[0]) > np.linalg.norm(dense[first] - pts[0])]
    trachea.points_lps = np.array(keep)


def _airway_caps(branches: list[Branch]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p0, p1, r = [], [], []
    for b in branches:
        for a, c in zip(b.points_lps[:-1], b.points_lps[1:]):
            p0.append(a)
            p1.append(c)
            r.append(b.radius_mm + b.wall_mm)
    return np.array(p0).reshape(-1, 3), np.array(p1).reshape(-1, 3), np.array(r)


def _bounds(points: np.ndarray, pad: float) -> tuple[np.ndarray, np.ndarray]:
    return points.min(0) - pad, points.max(0) + pad


def _canvas_of_branches(grid: Grid, branches: list[Branch], extra: float, pad: float = 4.0) -> SdfCanvas:
    """Union of a tree's tubes with radius ``lumen + extra(branch)``; ``extra`` in units of wall thickness."""
    allpts = np.concatenate([b.points_lps for b in branches])
    rmax = max(b.radius_mm + b.wall_mm for b in branches)
    canvas = SdfCanvas(grid, *_bounds(allpts, rmax + pad))
    for b in branches:
        r = b.radius_mm + extra * b.wall_mm
        canvas.add_capsules(b.points_lps[:-1], b.points_lps[1:], r, r, margin=pad)
    return canvas


def _airway_labels(grid: Grid, branches: list[Branch]):
    outer = _canvas_of_branches(grid, branches, 1.0)
    inner = _canvas_of_branches(grid, branches, 0.0)
    airway = np.zeros(grid.shape, np.uint8)
    lumen = np.zeros(grid.shape, np.uint8)
    outer.global_view(airway)[...] = outer.sd <= 0
    inner.global_view(lumen)[...] = inner.sd <= 0
    lines = [b.points_lps for b in branches]
    mark_polylines(airway, grid, lines)
    mark_polylines(lumen, grid, lines)
    return airway, lumen, outer


def _render_tubes(p: Patient, grid: Grid, ct: np.ndarray, lungs: np.ndarray) -> None:
    """Great vessels and oesophagus with a fat sheath; the lungs give way to both."""
    edge = grid.edge_mm
    sheath = 3.0 * p.s
    for tube in p.tubes:
        canvas = SdfCanvas(grid, *_bounds(tube.points, tube.radius + sheath + 2 * edge))
        if canvas.empty:
            continue
        canvas.add_capsules(tube.points[:-1], tube.points[1:], tube.radius, tube.radius, margin=sheath + 2 * edge)
        view = canvas.global_view(ct)
        blend(view, HU["mediastinum_fat"], ramp(canvas.sd - sheath, edge) * (view > -600))
        frac = ramp(canvas.sd, edge)
        blend(view, tube.hu, frac)
        lab = canvas.global_view(lungs)
        lab[canvas.sd <= sheath] = 0


def _render_vessels(grid: Grid, ct, vessels, vsegs, distractors, outer: SdfCanvas, gap: float) -> None:
    crossings = [d for d in distractors if d.kind == "vessel-crossing"]
    if not vsegs and not crossings:
        return
    edge = grid.edge_mm
    for kind in (ARTERY, VEIN):
        segs = [v for v in vsegs if v.kind == kind]
        if kind == ARTERY:
            segs += [VesselSegment(d.p0, d.p1, d.radius_mm, d.radius_mm, ARTERY) for d in crossings]
        if not segs:
            continue
        pts = np.array([q for v in segs for q in (v.p0, v.p1)])
        canvas = SdfCanvas(grid, *_bounds(pts, 12.0))
        if canvas.empty:
            continue
        for v in segs:
            canvas.add_capsules(v.p0, v.p1, v.r0, v.r1, margin=1.5 * edge)
        _subtract_airway(canvas, outer, gap)
        view = canvas.global_view(ct)
        blend(view, VESSEL_HU, ramp(canvas.sd, edge))
        lab = canvas.global_view(vessels)
        lab[(canvas.sd <= 0) & (lab == 0)] = kind


def _subtract_airway(canvas: SdfCanvas, outer: SdfCanvas, gap: float) -> None:
    """``sd = max(sd, gap - airway_sd)`` where the two canvases overlap: vessels keep clear of the airway."""
    sl_c, sl_o = [], []
    for a, b in zip(canvas.box, outer.box):
        lo, hi = max(a.start, b.start), min(a.stop, b.stop)
        if hi <= lo:
            return
        sl_c.append(slice(lo - a.start, hi - a.start))
        sl_o.append(slice(lo - b.start, hi - b.start))
    part = canvas.sd[tuple(sl_c)]
    np.maximum(part, np.float32(gap) - outer.sd[tuple(sl_o)], out=part)


def _render_nodules(grid: Grid, ct, labels, vessels, nodules: list[NoduleSpec], rng) -> None:
    edge = grid.edge_mm
    for n in nodules:
        ext = n.extent_mm + edge
        box = grid.box(n.center_lps - ext, n.center_lps + ext)
        if box is None:
            continue
        sd = n.sd(*grid.coords(box))
        view = ct[box]
        if n.kind == "solid":
            blend(view, n.hu, ramp(sd, edge))
        else:
            blend(view, n.hu, ramp(sd, edge))
            if n.kind == "part-solid":
                core = sd + np.float32(n.radius_mm * rng.uniform(0.4, 0.6))
                blend(view, 20.0, ramp(core, edge))
        inside = sd <= 0
        labels[box][inside] = n.label
        vessels[box][inside] = 0


def _render_scars(grid: Grid, ct, distractors: list[Distractor]) -> None:
    edge = grid.edge_mm
    for d in distractors:
        if d.kind != "scar":
            continue
        canvas = SdfCanvas(grid, *_bounds(np.stack([d.p0, d.p1]), d.radius_mm + 2 * edge))
        if canvas.empty:
            continue
        canvas.add_capsules(d.p0, d.p1, d.radius_mm, d.radius_mm * 0.5, margin=2 * edge)
        blend(canvas.global_view(ct), d.hu, ramp(canvas.sd, edge))


def _render_airway(grid: Grid, ct, lungs, branches: list[Branch], outer: SdfCanvas, p: Patient) -> None:
    """Mediastinal sheath around the trachea and main bronchi, then wall and lumen of every branch."""
    edge = grid.edge_mm
    central = [b for b in branches if b.generation <= 1]
    sheath = _canvas_of_branches(grid, central, 1.0, pad=6.0 * p.s)
    if not sheath.empty:
        view = sheath.global_view(ct)
        blend(view, 25.0, ramp(sheath.sd - 3.0 * p.s, edge))
        sheath.global_view(lungs)[sheath.sd <= 3.0 * p.s] = 0
    del sheath
    if outer.empty:
        return
    view = outer.global_view(ct)
    blend(view, WALL_HU, ramp(outer.sd, edge))
    inner = _canvas_of_branches(grid, branches, 0.0)
    blend(inner.global_view(ct), HU["air"], ramp(inner.sd, edge))


def _body_mask(ct: np.ndarray) -> np.ndarray:
    """Where the (still noiseless) image is denser than air, as float32 0/1 for noise shaping."""
    return (ct > -500).astype(np.float32)
