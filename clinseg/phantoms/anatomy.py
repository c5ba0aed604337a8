"""The synthetic patient: body, chest wall, bones, mediastinum, lungs and upper abdomen as analytic fields.

Patient frame (LPS mm): ``x`` towards the patient's left, ``y`` posterior,
``z`` superior; ``x = 0`` is the midline, ``y = 0`` the body centre and
``z = 0`` the level of the lowest lung recess. Every length is multiplied by
the patient scale ``s`` (small presets use a scaled-down, child-sized chest).

Fields are signed distances in mm (negative inside, approximate away from the
surface) evaluated on float32 coordinate arrays, so the same code renders a
slab of the grid and tests points while placing the airway tree or nodules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .raster import Grid, blend, part, ramp

# Attenuation of each tissue (HU, non-contrast CT).
HU = {
    "air": -1000.0, "skin": 20.0, "fat": -100.0, "muscle": 45.0, "cortical": 850.0, "cancellous": 230.0,
    "cartilage": 110.0, "disc": 85.0, "csf": 15.0, "heart": 40.0, "blood": 42.0, "liver": 58.0,
    "spleen": 48.0, "stomach": 25.0, "mediastinum_fat": -85.0, "parenchyma": -855.0, "esophagus": 38.0,
}


@dataclass
class Tube:
    """A mediastinal tube (aorta, vena cava, pulmonary trunk...): polyline in the patient frame."""

    name: str
    points: np.ndarray
    radius: float
    hu: float


@dataclass
class Patient:
    """Shape parameters of one synthetic patient (all in mm, already scaled)."""

    s: float
    body_a: float
    body_b: float
    body_cy: float
    fat: float
    cav_a: float
    cav_b: float
    cav_cy: float
    apex_z: float
    dome_r: float
    dome_l: float
    heart_c: np.ndarray
    heart_r: np.ndarray
    spine_y: float
    v_pitch: float
    v_phase: float
    rib_pitch: float
    rib_drop: float
    rib_phase: float
    med_x: float
    trachea_top: np.ndarray
    carina: np.ndarray
    tubes: list[Tube] = field(default_factory=list)

    @property
    def height(self) -> float:
        return self.apex_z

    def lps_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Box holding the lungs (patient frame)."""
        lo = np.array([-self.cav_a, self.cav_cy - self.cav_b, -0.1 * self.apex_z])
        hi = np.array([self.cav_a, self.cav_cy + self.cav_b, self.apex_z + 2.0])
        return lo, hi


def sample_patient(rng: np.random.Generator, scale: float) -> Patient:
    """Draw one patient: sizes vary by about +-8 %, fat, dome heights and heart position by more."""
    s = scale * rng.uniform(0.93, 1.07)
    u = rng.uniform
    tubes_raw = [
        ("aorta_ascending", [(-2, -22, 105), (-14, -24, 150), (-14, -18, 190)], 15, 42),
        ("aorta_arch", [(-14, -18, 190), (-4, -14, 206), (22, 0, 210), (30, 26, 202), (25, 44, 186)], 13, 42),
        ("aorta_descending", [(25, 44, 186), (23, 45, 100), (15, 43, 0), (7, 41, -90)], 12, 42),
        ("superior_vena_cava", [(-34, -12, 245), (-31, -14, 175), (-28, -10, 118)], 10, 40),
        ("brachiocephalic_trunk", [(-8, -12, 206), (-18, -5, 260), (-24, 0, 320)], 7, 42),
        ("left_carotid", [(6, -4, 210), (12, 0, 320)], 5, 42),
        ("left_subclavian", [(18, 6, 210), (30, 8, 262), (52, 10, 300)], 6, 42),
        ("left_brachiocephalic_vein", [(46, -26, 248), (0, -32, 240), (-32, -14, 236)], 6, 40),
        ("pulmonary_trunk", [(14, -46, 110), (10, -30, 148), (6, -12, 160)], 14, 40),
        ("right_pulmonary_artery", [(6, -12, 160), (-20, -6, 161), (-46, 0, 158)], 10, 40),
        ("left_pulmonary_artery", [(6, -12, 160), (28, -4, 170), (44, 8, 168)], 10, 40),
        ("left_atrium", [(-10, 12, 112), (24, 14, 114)], 16, 40),
        ("esophagus", [(4, 35, 330), (6, 37, 170), (12, 31, 60), (32, 10, -10)], 7, 38),
    ]
    jitter = lambda: rng.normal(0, 2.0, 3)  # noqa: E731 - small per-patient displacement of each tube
    tubes = [Tube(n, (np.array(p, float) + jitter()) * s, r * s * u(0.9, 1.1), h) for n, p, r, h in tubes_raw]
    apex = 255.0 * s * u(0.95, 1.05)
    carina = np.array([u(-3, 3), 18.0 + u(-3, 3), apex - u(78, 92) * s])
    return Patient(
        s=s, body_a=165 * s * u(0.94, 1.08), body_b=120 * s * u(0.94, 1.06), body_cy=5 * s,
        fat=u(5, 16) * s, cav_a=135 * s, cav_b=92 * s, cav_cy=5 * s, apex_z=apex,
        dome_r=u(46, 58) * s, dome_l=u(36, 48) * s, heart_c=np.array([u(14, 24), u(-32, -24), u(82, 92)]) * s,
        heart_r=np.array([u(56, 64), u(46, 54), u(44, 50)]) * s, spine_y=60 * s, v_pitch=u(24, 28) * s,
        v_phase=u(0, 1), rib_pitch=u(22, 26) * s, rib_drop=u(45, 60) * s, rib_phase=u(0, 1), med_x=u(-2, 2) * s,
        trachea_top=np.array([carina[0] + u(-4, 4) * s, 8.0 * s, apex + 60 * s]), carina=carina, tubes=tubes,
    )


# --- analytic fields (arrays in, arrays out) ------------------------------------------------------------------------

def _ellipse_sd(dx, dy, a, b):
    """Approximate signed distance to an ellipse boundary (exact on the axes)."""
    rho = np.sqrt((dx / a) ** 2 + (dy / b) ** 2)
    return (rho - 1.0) * np.minimum(a, b)


def cavity_sd(p: Patient, x, y, z):
    """Inner surface of the rib cage; tapers to the lung apex (a dome) above."""
    zn = np.clip((p.apex_z - z) / (0.32 * p.apex_z), 1e-3, 1.0)
    taper = np.sqrt(zn).astype(np.float32)
    widen = np.float32(1.0) + np.float32(0.06) * np.clip(1.0 - z / p.apex_z, 0.0, 1.0).astype(np.float32)
    a = np.float32(p.cav_a) * taper * widen
    b = np.float32(p.cav_b) * taper
    sd = _ellipse_sd(x, y - np.float32(p.cav_cy), np.maximum(a, 1.0), np.maximum(b, 1.0))
    return np.where(z > p.apex_z, np.maximum(sd, z - np.float32(p.apex_z)), sd)


def dome_z(p: Patient, x, y):
    """Height of the diaphragm under each lung (right dome higher); deep posterior recesses."""
    right = x < p.med_x
    top = np.where(right, np.float32(p.dome_r), np.float32(p.dome_l))
    xp = np.where(right, np.float32(-0.4 * p.cav_a), np.float32(0.4 * p.cav_a))
    q = ((x - xp) / np.float32(0.7 * p.cav_a)) ** 2 + ((y - np.float32(p.cav_cy - 0.15 * p.cav_b)) / p.cav_b) ** 2
    return top - np.float32(72 * p.s) * q


def heart_sd(p: Patient, x, y, z):
    c, r = [float(v) for v in p.heart_c], [float(v) for v in p.heart_r]
    rho = np.sqrt(((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2)
    return (rho - 1.0) * np.float32(min(r))


def mediastinum_halfwidth(p: Patient, y, z):
    """Half-width of the tissue between the lungs: great vessels in front, wider still above the arch."""
    upper = 1.0 / (1.0 + np.exp(-(z - (float(p.carina[2]) + 20 * p.s)) / (8 * p.s)))
    anterior = 1.0 / (1.0 + np.exp((y - 12 * p.s) / (8 * p.s)))
    band = 1.0 / (1.0 + np.exp(-(z - (float(p.heart_c[2]) + 20 * p.s)) / (10 * p.s)))
    return np.float32(6 * p.s) + np.float32(20 * p.s) * anterior * band + np.float32(18 * p.s) * upper


def lung_sd(p: Patient, x, y, z):
    """Signed distance (mm) to the left and right lungs: ``(sd_left, sd_right)``."""
    s = np.float32(p.s)
    inner = cavity_sd(p, x, y, z) + 2.0 * s  # parietal pleura and fat
    w = mediastinum_halfwidth(p, y, z)
    wedge = np.maximum(np.abs(x - p.med_x) - 26 * s, (p.spine_y - 22 * s) - y)  # vertebra + paravertebral tissue
    common = np.maximum(inner, 3.0 * s - wedge)
    common = np.maximum(common, 4.0 * s - heart_sd(p, x, y, z))
    common = np.maximum(common, dome_z(p, x, y) + 4.0 * s - z)
    left = np.maximum(common, (p.med_x + w) - x)
    right = np.maximum(common, x - (p.med_x - w))
    return left, right


# --- rendering of a slab -------------------------------------------------------------------------------------------

def _body_sd(p: Patient, x, y):
    """Body outline: an ellipse with a flatter back (the patient lies on the table)."""
    dy = y - np.float32(p.body_cy)
    dy = np.where(dy > 0, dy * np.float32(1.06), dy)
    return _ellipse_sd(x, dy, p.body_a, p.body_b)


class _Slab:
    """Coordinates of ``k0:k1`` and the local slices of LPS boxes within it (organs are drawn in their box)."""

    def __init__(self, grid: Grid, k0: int, k1: int) -> None:
        self.grid, self.k0, self.k1 = grid, k0, k1
        box = (slice(k0, k1), slice(0, grid.shape[1]), slice(0, grid.shape[2]))
        self.shape = (k1 - k0, grid.shape[1], grid.shape[2])
        self.x, self.y, self.z = grid.coords(box, full=False)

    def box(self, lo, hi):
        b = self.grid.box(np.asarray(lo, float), np.asarray(hi, float))
        if b is None:
            return None
        k0, k1 = max(b[0].start, self.k0), min(b[0].stop, self.k1)
        if k1 <= k0:
            return None
        return slice(k0 - self.k0, k1 - self.k0), b[1], b[2]


def render_slab(p: Patient, sl: _Slab, tex, edge: float):
    """HU (float32) and lung labels (uint8: 1 left, 2 right) of one slab."""
    s = float(p.s)
    x, y, z = sl.x, sl.y, sl.z
    big = 1e5
    hu = np.full(sl.shape, HU["air"], np.float32)
    body = _body_sd(p, x, y)
    blend(hu, HU["skin"], ramp(body, edge))
    blend(hu, HU["fat"] + 12 * tex, ramp(body + 2.0 * s, edge))
    cav = cavity_sd(p, x, y, z)
    # Chest-wall muscle: thick posteriorly (erector spinae) and anteriorly in the upper chest (pectorals).
    r_c = np.sqrt(x * x + (y - p.cav_cy) ** 2) + 1e-3
    yn = (y - p.cav_cy) / r_c  # +1 posterior, -1 anterior
    pect = np.clip(-yn, 0, 1) * np.clip((z - float(p.carina[2]) + 60 * s) / (80 * s), 0, 1)
    muscle_t = (14 + 10 * np.clip(yn, 0, 1) ** 3 + 14 * pect) * s
    fat = p.fat * (1.0 - 0.5 * np.clip(yn, 0, 1))  # thinner subcutaneous fat over the back
    muscle_sd = np.maximum(cav - muscle_t, -body - fat)
    blend(hu, HU["muscle"] + 6 * tex, ramp(muscle_sd, edge))
    del muscle_sd, muscle_t, pect
    b = sl.box((p.med_x - 75 * s, p.spine_y, -big), (p.med_x + 75 * s, p.spine_y + 80 * s, big))
    if b is not None:
        para = _ellipse_sd(np.abs(part(x, b) - p.med_x) - 32 * s, part(y, b) - (p.spine_y + 38 * s), 26 * s, 26 * s)
        blend(hu[b], HU["muscle"] + 6 * part(tex, b), ramp(np.maximum(para, -part(body, b) - part(fat, b)), edge))
    _ribs(p, hu, x, y, z, cav, yn, edge)
    blend(hu, HU["mediastinum_fat"] + 10 * tex, ramp(cav, edge))
    _abdomen(p, sl, hu, cav, tex, edge)
    c, r = p.heart_c, p.heart_r
    b = sl.box(c - r - 2 * edge, c + r + 2 * edge)
    if b is not None:
        blend(hu[b], HU["heart"] + 4 * part(tex, b), ramp(heart_sd(p, part(x, b), part(y, b), part(z, b)), edge))
    b = sl.box((p.med_x - 45 * s, p.spine_y - 30 * s, -big), (p.med_x + 45 * s, p.spine_y + 75 * s, big))
    if b is not None:
        wedge = np.maximum(np.abs(part(x, b) - p.med_x) - 24 * s, (p.spine_y - 20 * s) - part(y, b))
        blend(hu[b], HU["muscle"], ramp(np.maximum(wedge, part(cav, b)), edge))
        _spine(p, hu[b], part(x, b), part(y, b), part(z, b), edge)
    _sternum_scapula(p, sl, hu, cav, r_c, yn, edge)
    # Lungs: parenchyma with low-frequency texture and a gravity-dependent (posterior) density gradient.
    labels = np.zeros(sl.shape, np.uint8)
    lo, hi = p.lps_bounds()
    b = sl.box(lo - 2 * edge, hi + 2 * edge)
    if b is not None:
        left, right = lung_sd(p, part(x, b), part(y, b), part(z, b))
        lung = np.minimum(left, right)
        yr = np.clip((part(y, b) - p.cav_cy) / p.cav_b, -1, 1)
        gravity = 45.0 * yr**3 + 20.0 * yr
        blend(hu[b], HU["parenchyma"] + 22 * part(tex, b) + gravity, ramp(lung, edge))
        lab = labels[b]
        lab[np.broadcast_to(left <= 0, lab.shape)] = 1
        lab[np.broadcast_to(right <= 0, lab.shape)] = 2
    return hu, labels


def _abdomen(p: Patient, sl: _Slab, hu, cav, tex, edge: float) -> None:
    """Liver under the right dome, stomach (with its gas bubble) and spleen under the left."""
    s = p.s
    top = max(p.dome_r, p.dome_l) + 4 * edge
    b = sl.box((-p.cav_a - 10, p.cav_cy - p.cav_b - 10, -1e5), (p.cav_a + 10, p.cav_cy + p.cav_b + 10, top))
    if b is None:
        return
    x, y, z, h, t = part(sl.x, b), part(sl.y, b), part(sl.z, b), hu[b], part(tex, b)
    dz = dome_z(p, x, y)
    below = np.maximum(part(cav, b), z - dz)
    blend(h, HU["liver"] + 5 * t, ramp(np.maximum(below, x - (p.med_x + 30 * s)), edge))
    left_abd = np.maximum(below, (p.med_x + 30 * s) - x)
    blend(h, HU["stomach"] + 8 * t, ramp(left_abd, edge))
    spleen = _ellipse_sd(x - 0.62 * p.cav_a, y - 0.55 * p.cav_b, 26 * s, 38 * s)
    blend(h, HU["spleen"], ramp(np.maximum(spleen, np.maximum(left_abd, z - dz + 25 * s)), edge))
    gas = np.maximum(_ellipse_sd(x - 0.42 * p.cav_a, y + 0.1 * p.cav_b, 30 * s, 28 * s), dz - 18 * s - z)
    blend(h, HU["air"], ramp(np.maximum(gas, np.maximum(left_abd, z - dz + 6 * s)), edge))


def _bone(hu, sd_outer, sd_inner, edge: float) -> None:
    blend(hu, HU["cortical"], ramp(sd_outer, edge))
    blend(hu, HU["cancellous"], ramp(sd_inner, edge))


def _ribs(p: Patient, hu, x, y, z, cav, yn, edge: float) -> None:
    """Ribs descend from back to front; each axial slice cuts them into short arcs. Drawn on the rib ring only."""
    s = p.s
    hw, hh = 4.5 * s, 4.2 * s
    ring = np.broadcast_to(np.abs(cav - 6 * s) < hw + edge, hu.shape)
    idx = np.nonzero(ring)
    if idx[0].size == 0:
        return
    x, y, z, yn, delta = (np.broadcast_to(a, hu.shape)[idx] for a in (x, y, z, yn, cav))
    u = (z + p.rib_drop * (1 - yn) / 2) / p.rib_pitch + p.rib_phase
    v = ((u + 0.5) % 1.0 - 0.5) * p.rib_pitch  # vertical distance to the nearest rib's centre line
    level = np.floor(u + 0.5)
    top_level = np.floor((p.apex_z + 5 * s) / p.rib_pitch + p.rib_phase + 0.5)
    exists = (level <= top_level) & (level >= top_level - 12)
    e = np.sqrt(((delta - 6 * s) / hw) ** 2 + (v / hh) ** 2)
    anterior_gap = (yn < -0.55) & (np.abs(x - p.med_x) < 0.45 * p.cav_a)
    spine_gap = (yn > 0.8) & (np.abs(x - p.med_x) < 28 * s)
    rib = exists & ~spine_gap
    h = hu[idx]
    sd_out = np.where(rib & ~anterior_gap, (e - 1.0) * hw, 99.0).astype(np.float32)
    _bone(h, sd_out, sd_out + 1.3 * s, edge)
    cart = np.where(rib & anterior_gap & (np.abs(x - p.med_x) > 14 * s), (e - 1.0) * hw, 99.0).astype(np.float32)
    blend(h, HU["cartilage"], ramp(cart, edge))
    hu[idx] = h


def _spine(p: Patient, hu, x, y, z, edge: float) -> None:
    s = p.s
    xm = x - np.float32(p.med_x)
    body = _ellipse_sd(xm, y - p.spine_y, 19 * s, 16 * s)
    w = (z / p.v_pitch + p.v_phase) % 1.0
    disc = np.abs(w - 0.5) * p.v_pitch < 2.5 * s
    mid = np.abs(w) * p.v_pitch < 8 * s
    canal_c = p.spine_y + 27 * s
    canal = np.sqrt(xm**2 + (y - canal_c) ** 2) - 8 * s
    arch = np.maximum(canal - 5.5 * s, canal_c - 4 * s - y)
    spinous = _ellipse_sd(xm, y - (canal_c + 20 * s), 4 * s, 14 * s)
    spinous = np.where(np.abs(w - 0.15) * p.v_pitch < 9 * s, spinous, 99.0)  # one process per vertebra
    transverse = np.where(mid, _ellipse_sd(np.abs(xm) - 24 * s, y - (p.spine_y + 20 * s), 13 * s, 5 * s), 99.0)
    bone = np.minimum(np.minimum(np.where(disc, 99.0, body), arch), np.minimum(spinous, transverse))
    bone = np.maximum(bone, -canal).astype(np.float32)
    _bone(hu, bone, bone + 1.8 * s, edge)
    blend(hu, HU["disc"], ramp(np.where(disc, body, 99.0).astype(np.float32), edge))
    blend(hu, HU["csf"], ramp(canal, edge))


def _sternum_scapula(p: Patient, sl: _Slab, hu, cav, r_c, yn, edge: float) -> None:
    s = p.s
    zc = float(p.carina[2]) - 10 * s
    yc = p.cav_cy - p.cav_b - 7 * s
    b = sl.box((p.med_x - 20 * s, yc - 10 * s, zc - 70 * s), (p.med_x + 20 * s, yc + 10 * s, zc + 70 * s))
    if b is not None:
        st = _ellipse_sd(part(sl.x, b) - np.float32(p.med_x), part(sl.y, b) - yc, 15 * s, 6 * s)
        _bone(hu[b], st, st + 1.5 * s, edge)
    # Scapulae: thin plates behind the posterolateral ribs in the upper chest.
    b = sl.box((-p.body_a, p.cav_cy, float(p.carina[2]) - 40 * s), (p.body_a, p.body_cy + p.body_b, 1e5))
    if b is not None:
        plate = np.maximum(np.abs(part(cav, b) - 20 * s) - 2.5 * s, np.abs(part(yn, b) - 0.6) * part(r_c, b) - 28 * s)
        plate = np.maximum(plate, _body_sd(p, part(sl.x, b), part(sl.y, b)) + 8 * s)  # under the back muscles
        _bone(hu[b], plate, plate + 1.2 * s, edge)


def render_anatomy(p: Patient, grid: Grid, texture, ct: np.ndarray, lungs: np.ndarray, slab: int = 8) -> None:
    """Fill ``ct`` (float32 HU) and ``lungs`` (uint8) slab by slab (bounded memory, any direction)."""
    nk = grid.shape[0]
    edge = grid.edge_mm
    for k0 in range(0, nk, slab):
        k1 = min(nk, k0 + slab)
        hu, lab = render_slab(p, _Slab(grid, k0, k1), texture(k0, k1), edge)
        ct[k0:k1] = hu
        lungs[k0:k1] = lab
