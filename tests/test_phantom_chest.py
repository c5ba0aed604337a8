"""Chest phantom: determinism, tree model, exact labels, HU of tissues, geometry conventions."""

from __future__ import annotations

import cc3d
import numpy as np
import pytest

from clinseg.errors import InputError
from clinseg.phantoms import LOBAR_NAMES, generate_chest, generate_chest_from_airway
from clinseg.phantoms.airway_tree import FLOW_EXPONENT
from clinseg.phantoms.nodules import make_nodule
from clinseg.phantoms.raster import Grid
from clinseg.volume import Volume

TINY = {"preset": "small", "spacing": (2.8, 2.8, 2.8), "shape": (80, 80, 64)}


@pytest.fixture(scope="module")
def small():
    return generate_chest(3, preset="small", n_nodules=4)


def _rotation(ax: float, az: float) -> np.ndarray:
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ rx


def _centreline_hits(ph) -> tuple[int, int]:
    vol = ph.airway
    shape = np.array(vol.size_ijk)
    hits = total = 0
    for b in ph.branches:
        ijk = np.rint(vol.physical_to_index(b.points_lps)).astype(int)
        ok = np.all((ijk >= 0) & (ijk < shape), axis=1)
        total += int(ok.sum())
        hits += int(vol.array[ijk[ok, 2], ijk[ok, 1], ijk[ok, 0]].astype(bool).sum())
    return hits, total


def test_same_seed_same_bytes_other_seed_differs():
    a, b, c = (generate_chest(s, **TINY) for s in (11, 11, 12))
    assert a.ct.array.tobytes() == b.ct.array.tobytes()
    assert a.airway.array.tobytes() == b.airway.array.tobytes()
    assert a.vessels.array.tobytes() == b.vessels.array.tobytes()
    assert a.ct.array.dtype == np.int16 and a.airway.array.dtype == np.uint8
    assert a.ct.array.tobytes() != c.ct.array.tobytes()
    assert a.airway.array.tobytes() != c.airway.array.tobytes()


def test_airway_is_one_26_connected_tree_holding_every_centreline(small):
    labels = cc3d.connected_components(small.airway.array, connectivity=26)
    assert labels.max() == 1
    hits, total = _centreline_hits(small)
    assert total > 300 and hits == total
    assert np.all(small.lumen.array <= small.airway.array)  # lumen is inside lumen + wall


def test_tree_follows_the_branching_model(small):
    br = small.branches
    assert max(b.generation for b in br) >= 6
    assert 60 <= len(br) <= 2000
    assert {b.name for b in br} >= {"Trachea", "RightMainBronchus", "LeftMainBronchus", "BronchusIntermedius",
                                    *LOBAR_NAMES}
    n = FLOW_EXPONENT
    ratios = []
    for b in br:
        for c in b.children:
            assert br[c].diameter_mm < b.diameter_mm
            assert br[c].parent == b.id and br[c].generation == b.generation + 1
            assert np.allclose(br[c].points_lps[0], b.points_lps[-1])  # children start where the parent ends
        if len(b.children) == 2:
            ratios.append(sum(br[c].diameter_mm ** n for c in b.children) / b.diameter_mm**n)
    # Flow division d0^n = d1^n + d2^n holds up to the +-3 % diameter jitter.
    assert len(ratios) > 20 and np.all(np.abs(np.array(ratios) - 1) < 0.12)
    grown = [b for b in br if b.generation >= 4]
    ld = np.median([b.length_mm / b.diameter_mm for b in grown])
    assert 1.2 <= ld <= 3.5
    rmb = next(b for b in br if b.name == "RightMainBronchus")
    lmb = next(b for b in br if b.name == "LeftMainBronchus")
    down = np.array([0, 0, -1.0])
    angle = lambda b: np.degrees(np.arccos(b.direction @ down))  # noqa: E731
    assert angle(rmb) < angle(lmb) and rmb.length_mm < lmb.length_mm
    assert rmb.points_lps[-1][0] < lmb.points_lps[-1][0]  # right is -x in LPS
    assert all(b.wall_mm > 0.1 * b.diameter_mm for b in br)


def test_left_lung_is_at_plus_x(small):
    lungs = small.lungs
    for label, sign in ((1, 1), (2, -1)):
        kji = np.argwhere(lungs.array == label)
        x = lungs.index_to_physical(kji[::50, ::-1].astype(float))[:, 0]
        assert sign * np.median(x - small.patient.med_x) > 20


def test_tissue_hu(small):
    ct, p = small.ct, small.patient
    arr = ct.array.astype(float)
    trachea = small.branches[0]
    mid = trachea.points_lps[len(trachea.points_lps) // 2]
    ijk = ct.physical_to_index(mid[None])[0]
    i, j, k = np.rint(ijk).astype(int)
    r = max(1, int(0.5 * trachea.radius_mm / ct.spacing[0]))
    assert np.median(arr[k - 1:k + 2, j - r:j + r + 1, i - r:i + r + 1]) < -900
    paren = (small.lungs.array > 0) & (small.airway.array == 0) & (small.vessels.array == 0) \
        & (small.nodule_labels.array == 0)
    assert -900 <= np.median(arr[paren]) <= -800
    # Paraspinal muscle at the carina level, and the heart (myocardium and blood, non-contrast).
    z = trachea.points_lps[-1][2]
    for point in ([p.med_x + 20 * p.s, p.spine_y + 30 * p.s, z], p.heart_c):
        i, j, k = np.rint(ct.physical_to_index(np.array([point]))[0]).astype(int)
        assert abs(np.median(arr[k - 2:k + 3, j - 2:j + 3, i - 2:i + 3]) - 40) < 20
    v = ct.physical_to_index(np.array([[p.med_x, p.spine_y, z]]))[0]
    i, j, k = np.rint(v).astype(int)
    spine = arr[k - 6:k + 7, j - 8:j + 9, i - 8:i + 9]
    assert np.percentile(spine, 90) > 300 and spine.max() > 500


def test_vessels_never_touch_the_airway(small):
    assert small.vessels.array.any()
    assert not np.any((small.vessels.array > 0) & (small.airway.array > 0))
    assert set(np.unique(small.vessels.array)) <= {0, 1, 2}


def test_nodule_masks_match_their_specs(small):
    assert small.nodules
    vox = float(np.prod(small.ct.spacing))
    labels = small.nodule_labels.array
    for n in small.nodules:
        count = int((labels == n.label).sum())
        assert count > 0
        if n.diameter_mm >= 6 * max(small.ct.spacing):
            d_mask = (6 * count * vox / np.pi) ** (1 / 3)
            assert abs(d_mask - n.diameter_mm) / n.diameter_mm < 0.10
        assert n.kind in ("solid", "part-solid", "ground-glass")
        assert n.location in ("isolated", "juxta-vascular", "juxta-pleural")
        assert not np.any((labels == n.label) & (small.airway.array > 0))


@pytest.mark.parametrize("shape", ["round", "lobulated", "spiculated"])
def test_nodule_shapes_volume_on_a_fine_grid(shape):
    rng = np.random.default_rng(5)
    spec = make_nodule(rng, 1, np.zeros(3), 12.0, "solid", shape, "isolated")
    if shape == "round":
        assert spec.diameter_mm == pytest.approx(12.0)
    grid = Grid((96, 96, 96), (0.4, 0.4, 0.4), (-19.0, -19.0, -19.0), tuple(map(tuple, np.eye(3))))
    sd = spec.sd(*grid.coords((slice(0, 96),) * 3))
    d_mask = (6 * (sd <= 0).sum() * 0.4**3 / np.pi) ** (1 / 3)
    assert abs(d_mask - spec.diameter_mm) / spec.diameter_mm < 0.03


def test_anisotropic_spacing_and_rotated_direction():
    direction = _rotation(0.35, 0.5)
    ph = generate_chest(7, spacing=(1.6, 2.0, 2.6), shape=(150, 120, 75), direction=direction, preset="small",
                        n_nodules=1)
    assert np.allclose(ph.ct.direction, direction) and ph.ct.spacing == (1.6, 2.0, 2.6)
    assert all(v.same_grid(ph.ct) for v in (ph.airway, ph.lungs, ph.vessels, ph.nodule_labels))
    assert cc3d.connected_components(ph.airway.array, connectivity=26).max() == 1
    hits, total = _centreline_hits(ph)
    assert total > 50 and hits == total
    kji = np.argwhere(ph.lungs.array == 1)
    x_left = np.median(ph.lungs.index_to_physical(kji[::20, ::-1].astype(float))[:, 0])
    kji = np.argwhere(ph.lungs.array == 2)
    x_right = np.median(ph.lungs.index_to_physical(kji[::20, ::-1].astype(float))[:, 0])
    assert x_left > x_right + 40
    # Same patient, axis-aligned grid: the physical airway volume agrees.
    ref = generate_chest(7, spacing=(1.6, 2.0, 2.6), shape=(150, 120, 75), preset="small", n_nodules=1)
    v_rot = ph.airway.array.sum() * np.prod(ph.ct.spacing)
    v_ref = ref.airway.array.sum() * np.prod(ref.ct.spacing)
    assert abs(v_rot - v_ref) / v_ref < 0.15


def test_bad_arguments_raise_input_error():
    with pytest.raises(InputError, match="preset"):
        generate_chest(1, preset="huge")
    with pytest.raises(InputError, match="direction"):
        generate_chest(1, direction=np.ones((3, 3)), **TINY)


def test_chest_around_a_real_airway_mask(shared):
    from clinseg.io import read_volume

    path = shared / "data" / "atm22_airways" / "timi" / "ATM_224.nii.gz"
    if not path.exists():
        pytest.skip("ATM_224 airway mask absent from the shared data")
    real = read_volume(path)
    st = 4
    mask = Volume((real.array[::st, ::st, ::st] > 0).astype(np.uint8), tuple(s * st for s in real.spacing),
                  real.origin, real.direction, "ATM_224")
    ph = generate_chest_from_airway(mask, 2, n_nodules=2)
    assert np.array_equal(ph.airway.array, mask.array) and ph.ct.same_grid(mask)
    assert not np.any((ph.vessels.array > 0) & (ph.airway.array > 0))
    assert ph.vessels.array.any() and ph.lungs.array.any()
    ct = ph.ct.array.astype(float)
    assert np.median(ct[ph.lumen.array > 0]) < -600  # air inside the real tree
    assert np.median(ct[(ph.lungs.array > 0) & (ph.airway.array == 0) & (ph.vessels.array == 0)]) < -750
