"""Nodule measurements: axial long/short axes of analytic ellipsoids, sphere volume, type, Lung-RADS, phantom specs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from clinseg.errors import InputError
from clinseg.phantoms import generate_chest
from clinseg.post.nodules import (
    LUNG_RADS_NOTE,
    TABLE_COLUMNS,
    classify_nodule,
    instances_from_mask,
    lung_rads_size_category,
    measure_nodules,
    nodule_table,
)
from clinseg.volume import Volume


def _grid(spacing, direction, center, half_mm) -> Volume:
    """An empty grid of ``spacing`` and ``direction`` whose middle voxel sits near LPS ``center``."""
    size = [int(2 * half_mm / s) + 5 for s in spacing]  # i, j, k
    volume = Volume(np.zeros(size[::-1], np.uint8), spacing, (0, 0, 0), direction)
    middle = volume.index_to_physical(np.array(size, float) / 2)
    volume.origin = tuple(np.asarray(center, float) - middle)
    return volume


def _lps(volume: Volume) -> np.ndarray:
    k, j, i = np.indices(volume.shape)
    return volume.index_to_physical(np.stack([i, j, k], -1).reshape(-1, 3).astype(float)).reshape(*volume.shape, 3)


def ellipsoid(spacing, semi, center=(1.3, -2.1, 0.7), direction=None, axes=None) -> Volume:
    """Label 1 at the voxel centres inside an ellipsoid with semi-axes ``semi`` along the columns of ``axes`` (LPS)."""
    volume = _grid(spacing, np.eye(3) if direction is None else direction, center, max(semi) * 1.3)
    local = (_lps(volume) - np.asarray(center)) @ (np.eye(3) if axes is None else np.asarray(axes))
    volume.array = (((local / np.asarray(semi)) ** 2).sum(-1) <= 1).astype(np.uint8)
    return volume


def _expected(semi, center, z_mm) -> tuple[float, float]:
    """Axial cross-section diameters of an LPS-aligned ellipsoid at height ``z_mm``."""
    f = np.sqrt(max(0.0, 1 - ((z_mm - center[2]) / semi[2]) ** 2))
    return 2 * semi[0] * f, 2 * semi[1] * f


@pytest.mark.parametrize("spacing, semi", [
    ((0.5, 0.5, 2.5), (9.0, 4.5, 6.0)),
    ((0.45, 0.6, 1.25), (6.5, 3.5, 5.0)),
    ((0.55, 0.4, 1.8), (11.0, 5.5, 4.0)),
])
def test_ellipsoid_axes_on_anisotropic_axial_grids(spacing, semi):
    center = (1.3, -2.1, 0.7)
    [m] = measure_nodules(ellipsoid(spacing, semi, center))
    long_mm, short_mm = _expected(semi, center, m.axes.z_mm)
    assert abs(m.axes.long_mm - long_mm) < 0.5 and abs(m.axes.short_mm - short_mm) < 0.5
    # The measured plane is an acquired slice and the nearest one to the centre (largest area).
    assert abs(m.axes.z_mm - center[2]) <= spacing[2] / 2 + 1e-6
    # The long axis runs along the ellipsoid's long (x) axis; its direction is the loosest figure (a Feret
    # diameter barely changes within a few degrees of the major axis, so pixel steps can tilt it).
    u = np.diff(m.axes.long_ends, axis=0)[0]
    assert abs(u[0]) / np.linalg.norm(u) > np.cos(np.radians(10))


def test_axes_on_oblique_grid_and_rotated_nodule():
    """A tilted, rotated grid (direction matrix) and an ellipsoid turned 35 degrees in the axial plane."""
    center, semi = (4.0, 1.0, -3.0), (8.0, 4.0, 5.0)
    direction = Rotation.from_euler("xyz", [18, -12, 25], degrees=True).as_matrix()
    axes = Rotation.from_euler("z", 35, degrees=True).as_matrix()
    [m] = measure_nodules(ellipsoid((0.5, 0.55, 1.2), semi, center, direction, axes))
    long_mm, short_mm = _expected(semi, center, m.axes.z_mm)
    assert abs(m.axes.long_mm - long_mm) < 0.5 and abs(m.axes.short_mm - short_mm) < 0.5
    u = np.diff(m.axes.long_ends, axis=0)[0][:2]
    angle = np.degrees(np.arctan2(u[1], u[0])) % 180
    assert abs(angle - 35) < 10
    assert np.allclose(m.axes.long_ends[:, 2], m.axes.z_mm)  # both ends on the axial plane


def test_permuted_and_flipped_axes_measure_the_same():
    """A coronal-style acquisition of the same voxels (axes permuted, one flipped) gives the same numbers."""
    a = ellipsoid((0.6, 0.7, 1.5), (7.0, 4.0, 5.0))
    # Array [k, j, i] -> [j, k, i] with j flipped: the new k axis is the old j axis reversed.
    perm = np.ascontiguousarray(a.array.transpose(1, 0, 2)[::-1])
    cols = a.direction
    direction = np.column_stack([cols[:, 0], cols[:, 2], -cols[:, 1]])
    origin = a.index_to_physical(np.array([0.0, a.shape[1] - 1, 0.0]))
    b = Volume(perm, (a.spacing[0], a.spacing[2], a.spacing[1]), tuple(origin), direction)
    assert np.allclose(b.index_to_physical(np.array([3.0, 5.0, 7.0])),
                       a.index_to_physical(np.array([3.0, a.shape[1] - 1 - 7.0, 5.0])))
    [ma], [mb] = measure_nodules(a), measure_nodules(b)
    assert mb.voxels == ma.voxels and np.allclose(mb.center_lps, ma.center_lps)
    assert abs(mb.axes.long_mm - ma.axes.long_mm) < 1e-6 and abs(mb.axes.short_mm - ma.axes.short_mm) < 1e-6


def test_axes_unbiased_on_coarse_pixels():
    """At 0.9 mm pixels single ellipses err by up to about a pixel, but the mean error stays small."""
    rng = np.random.default_rng(7)
    errors = []
    for _ in range(10):
        a = rng.uniform(5, 10)
        semi = (a, a / rng.uniform(1.6, 2.4), rng.uniform(4, 7))
        center = tuple(rng.uniform(-2, 2, 3))
        [m] = measure_nodules(ellipsoid((0.9, 0.85, 1.5), semi, center))
        expected = _expected(semi, center, m.axes.z_mm)
        errors.append((m.axes.long_mm - expected[0], m.axes.short_mm - expected[1]))
    errors = np.array(errors)
    assert np.abs(errors).max() < 0.9
    assert np.all(np.abs(errors.mean(axis=0)) < 0.2)


def test_sphere_volume_centre_and_equivalent_diameter():
    center, r = (10.2, -5.3, 22.1), 6.0
    volume = ellipsoid((0.7, 0.7, 1.25), (r, r, r), center)
    [m] = measure_nodules(volume, scores={1: 0.75})
    assert m.volume_ml == pytest.approx(4 / 3 * np.pi * r**3 / 1000, rel=0.02)
    assert m.equivalent_diameter_mm == pytest.approx(2 * r, abs=0.1)
    assert np.allclose(m.center_lps, center, atol=0.05)
    assert np.allclose(volume.index_to_physical(m.center_ijk), m.center_lps)
    assert m.score == 0.75 and m.kind == "" and m.mean_hu is None  # no CT: no HU, type or category


def _blob_ct(kind: str, rng: np.random.Generator) -> tuple[Volume, Volume]:
    """A 12 mm nodule in lung (-850 HU) with partial volume, blur and noise, and its label (a 7 mm solid core
    when part-solid)."""
    spacing, center = (0.7, 0.7, 1.0), (0.0, 0.0, 0.0)
    grid = _grid(spacing, np.eye(3), center, 12.0)
    r = np.linalg.norm(_lps(grid) - np.asarray(center), axis=-1)
    inside = np.clip(6.0 - r + 0.5, 0, 1)  # a one-mm partial-volume ramp
    core = np.clip(3.5 - r + 0.5, 0, 1)
    hu = {"solid": 30.0, "part-solid": -600.0, "ground-glass": -650.0}[kind]
    ct = -850 + (hu + 850) * inside
    if kind == "part-solid":
        ct = ct + (20.0 - hu) * core
    ct = ndimage.gaussian_filter(ct, 0.6) + rng.normal(0, 25, ct.shape)
    return grid.with_array(ct.astype(np.int16)), grid.with_array((r <= 6.0).astype(np.uint8))


@pytest.mark.parametrize("kind", ["solid", "part-solid", "ground-glass"])
def test_type_from_attenuation(kind):
    ct, labels = _blob_ct(kind, np.random.default_rng(3))
    [m] = measure_nodules(labels, ct)
    assert m.kind == kind
    if kind == "part-solid":
        assert m.solid_fraction == pytest.approx((3.5 / 6) ** 3, abs=0.04)  # the 7 mm core of a 12 mm nodule
        assert m.solid_axes.mean_mm == pytest.approx(7.0, abs=0.6)
        assert m.lung_rads == "4A"  # total >= 6 mm, solid component 6 to < 8 mm
    elif kind == "solid":
        assert m.solid_fraction > 0.9 and m.lung_rads == "4A" and m.mean_hu > -150
    else:
        assert m.solid_fraction < 0.01 and m.lung_rads == "2" and -700 < m.mean_hu < -600


def test_classify_thresholds():
    assert [classify_nodule(f) for f in (0.0, 0.049, 0.05, 0.499, 0.5, 1.0)] == [
        "ground-glass", "ground-glass", "part-solid", "part-solid", "solid", "solid"]


@pytest.mark.parametrize("kind, total, solid, category", [
    ("solid", 5.9, 0, "2"), ("solid", 5.96, 0, "3"), ("solid", 6.0, 0, "3"), ("solid", 7.94, 0, "3"),
    ("solid", 8.0, 0, "4A"), ("solid", 14.9, 0, "4A"), ("solid", 15.0, 0, "4B"),
    ("part-solid", 5.9, 5.9, "2"), ("part-solid", 6.0, 5.9, "3"), ("part-solid", 6.0, 6.0, "4A"),
    ("part-solid", 12.0, 7.9, "4A"), ("part-solid", 12.0, 8.0, "4B"),
    ("ground-glass", 29.9, 0, "2"), ("ground-glass", 30.0, 0, "3"), ("ground-glass", 29.95, 0, "3"),
])
def test_lung_rads_size_rules_at_boundaries(kind, total, solid, category):
    assert lung_rads_size_category(kind, total, solid) == category


def test_lung_rads_rejects_unknown_type():
    with pytest.raises(ValueError):
        lung_rads_size_category("calcified", 5.0)


def test_instances_from_mask_orders_by_size_and_drops_specks():
    mask = np.zeros((20, 30, 40), np.uint8)
    mask[2:6, 2:6, 2:6] = 1  # 64 voxels
    mask[10:18, 10:18, 10:18] = 1  # 512 voxels
    mask[15, 2, 30] = 1  # one voxel: 0.5^3 mm^3 below the floor
    volume = Volume(mask, (0.5, 0.5, 0.5), (3.0, 4.0, 5.0))
    labels = instances_from_mask(volume, min_volume_mm3=2.0)
    assert isinstance(labels, Volume) and labels.same_grid(volume)
    assert set(np.unique(labels.array)) == {0, 1, 2}
    assert np.count_nonzero(labels.array == 1) == 512 and np.count_nonzero(labels.array == 2) == 64
    assert labels.array[15, 2, 30] == 0
    raw = instances_from_mask(mask, min_volume_mm3=0)  # arrays stay arrays, 1 mm voxels
    assert isinstance(raw, np.ndarray) and raw.max() == 3


def test_table_columns_and_grid_check():
    volume = ellipsoid((0.7, 0.7, 1.25), (3.5, 3.5, 3.5))
    table = nodule_table(volume, volume.with_array(np.full(volume.shape, 40, np.int16)), {1: 0.5})
    assert table.name == "nodules" and list(table.columns) == TABLE_COLUMNS and table.n_rows == 1
    row = table.rows()[0]
    assert row["type"] == "solid" and row["lung_rads_size_category"] == "3" and row["lung_rads_note"] == LUNG_RADS_NOTE
    assert row["score"] == 0.5 and row["volume_ml"] == pytest.approx(4 / 3 * np.pi * 3.5**3 / 1000, rel=0.03)
    assert nodule_table(volume.with_array(np.zeros(volume.shape, np.uint8))).n_rows == 0
    with pytest.raises(InputError):
        measure_nodules(volume, Volume(np.zeros((3, 3, 3))))


def test_chest_phantom_nodules_match_their_specs():
    phantom = generate_chest(seed=2, preset="small", n_nodules=3)
    measured = {m.label: m for m in measure_nodules(phantom.nodule_labels, phantom.ct)}
    assert sorted(measured) == [n.label for n in phantom.nodules]
    for spec in phantom.nodules:
        m = measured[spec.label]
        assert abs(m.equivalent_diameter_mm - spec.diameter_mm) < 1.5
        assert m.volume_ml * 1000 == pytest.approx(spec.volume_mm3, rel=0.15)
        assert np.linalg.norm(m.center_lps - spec.center_lps) < 1.0
        if spec.shape == "round":
            assert abs(m.axes.long_mm - spec.diameter_mm) < 1.5 and abs(m.axes.short_mm - spec.diameter_mm) < 1.5
        if spec.diameter_mm >= 5:  # below ~3.5 voxels across, partial volume decides the type
            assert m.kind == spec.kind


def _lobulated_nodule(spacing_ijk=(0.7, 0.7, 2.5), radius=11.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(CT in HU, nodule truth, vessel) on a [k, j, i] grid: a solid sphere with two lobes in lung, a vessel
    through the whole crop touching it; blurred like a scanner's point spread."""
    spacing = np.asarray(spacing_ijk[::-1])
    shape = tuple(int(round(90 / s)) | 1 for s in spacing)
    kji = (np.indices(shape).T * spacing).T - (np.asarray(shape) // 2 * spacing)[:, None, None, None]
    z, y, x = kji
    nodule = z ** 2 + y ** 2 + x ** 2 <= radius ** 2
    for cy, cx, r in ((radius + 2.0, 3.0, 3.5), (-4.0, -radius - 2.0, 3.5)):  # lobes 3 mm deep beyond the sphere
        nodule |= z ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r ** 2
    vessel = ((x - radius - 1.0) ** 2 + (z - 2.0) ** 2 <= 1.5 ** 2) & ~nodule  # runs along y past the nodule
    hu = np.where(nodule | vessel, 40.0, -860.0)
    hu = ndimage.gaussian_filter(hu, 0.6 / spacing) + np.random.default_rng(3).normal(0, 20, shape)
    return hu.astype(np.float32), nodule, vessel


def test_segmentation_keeps_lobulations_and_cuts_the_vessel():
    """The opening against vessels takes its ball from the nodule's size; what it cuts off comes back where
    it ends close to the nodule (lobes), not where it runs on (the vessel)."""
    from clinseg.tasks.nodule.segment import segment_candidate

    spacing_ijk = (0.7, 0.7, 2.5)
    hu, nodule, vessel = _lobulated_nodule(spacing_ijk)
    centre = (np.asarray(hu.shape) // 2).astype(float)
    seg = segment_candidate(hu, np.ones(hu.shape, bool), spacing_ijk, centre, 9.5)
    mask = np.zeros(hu.shape, bool)
    mask[seg.box] = seg.mask
    dice = 2 * np.count_nonzero(mask & nodule) / (np.count_nonzero(mask) + np.count_nonzero(nodule))
    assert dice >= 0.9
    grid = Volume(np.zeros(hu.shape, np.uint8), spacing_ijk)
    [ours] = measure_nodules(grid.with_array(mask.view(np.uint8)))
    [truth] = measure_nodules(grid.with_array(nodule.view(np.uint8)))
    assert abs(ours.axes.long_mm - truth.axes.long_mm) <= 1.5
    away = ndimage.distance_transform_edt(~nodule, sampling=spacing_ijk[::-1])
    assert not np.any(mask & vessel & (away > 4.0))  # at most the fillet where the vessel grazes the nodule


def _on_the_wall(spacing_ijk: tuple[float, float, float], radius: float, inset: float, size_mm: float,
                 nodule_hu: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A spherical nodule of ``nodule_hu`` cut by a flat chest wall ``inset`` mm off its centre, in lung, with the real
    search region (each lung closed with a ball): (HU, nodule, wall, region)."""
    from clinseg.tasks.nodule.region import CLOSE_MM, close_mask

    spacing = np.asarray(spacing_ijk[::-1])
    shape = tuple(int(round(size_mm / s)) | 1 for s in spacing)
    z, y, x = (np.indices(shape).T * spacing).T - (np.asarray(shape) // 2 * spacing)[:, None, None, None]
    wall = x > inset
    nodule = (z ** 2 + y ** 2 + x ** 2 <= radius ** 2) & ~wall
    hu = ndimage.gaussian_filter(np.where(wall, 40.0, np.where(nodule, nodule_hu, -860.0)), 0.6 / spacing)
    hu += np.random.default_rng(seed).normal(0, 20, shape)
    return hu.astype(np.float32), nodule, wall, close_mask(hu < -400, tuple(spacing), CLOSE_MM)


def test_juxta_pleural_nodule_reaches_the_chest_wall():
    """A broad-based nodule on a flat chest wall, in the real search region (each lung closed with a ball):
    the closing fills its dent only to a curved surface; the mask still reaches the wall, never into it."""
    from clinseg.tasks.nodule.segment import segment_candidate

    spacing_ijk = (0.7, 0.7, 2.5)
    hu, nodule, wall, region = _on_the_wall(spacing_ijk, 11.0, 4.0, 100.0, 40.0, seed=0)
    shape = hu.shape
    assert np.count_nonzero(nodule & ~region) > 0.1 * np.count_nonzero(nodule)  # the closing alone cuts it
    seg = segment_candidate(hu, region, spacing_ijk, (np.asarray(shape) // 2).astype(float), 9.0)
    mask = np.zeros(shape, bool)
    mask[seg.box] = seg.mask
    assert 2 * np.count_nonzero(mask & nodule) / (np.count_nonzero(mask) + np.count_nonzero(nodule)) >= 0.95
    assert not np.any(mask & wall)
    grid = Volume(np.zeros(shape, np.uint8), spacing_ijk)
    [ours] = measure_nodules(grid.with_array(mask.view(np.uint8)))
    [truth] = measure_nodules(grid.with_array(nodule.view(np.uint8)))
    assert abs(ours.axes.short_mm - truth.axes.short_mm) <= 1.0 and abs(ours.axes.long_mm - truth.axes.long_mm) <= 1.0


def test_juxta_pleural_ground_glass_nodule_is_not_read_as_the_wall():
    """A candidate of a ground-glass nodule on the chest wall sits near the wall (LIDC-IDRI-0002's does): the core
    is read inside the search region only, so the wall's density does not make the nodule look solid and cut it
    to its densest scrap."""
    from clinseg.tasks.nodule.segment import segment_candidate

    spacing_ijk, inset = (0.7, 0.7, 1.25), 3.0
    hu, nodule, wall, region = _on_the_wall(spacing_ijk, 8.0, inset, 80.0, -600.0, seed=1)
    shape = hu.shape
    near_wall = np.asarray(shape, float) // 2 + [0.0, 0.0, (inset - 0.5) / spacing_ijk[0]]
    seg = segment_candidate(hu, region, spacing_ijk, near_wall, 6.0)
    mask = np.zeros(shape, bool)
    mask[seg.box] = seg.mask
    assert seg.core_hu < -350  # read as ground glass, not as tissue
    assert 2 * np.count_nonzero(mask & nodule) / (np.count_nonzero(mask) + np.count_nonzero(nodule)) >= 0.85
    assert not np.any(mask & wall)
