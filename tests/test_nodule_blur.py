"""Small nodules at clinical sampling (0.8 x 0.8 x 1.25 mm): blur lowers a small solid nodule's core to a part-solid
one's level; the mask still has each one's size."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from clinseg.post.blur import sphere_core, sphere_edge
from clinseg.tasks.nodule.segment import segment_candidate

SPACING_IJK = (0.8, 0.8, 1.25)
BACKGROUND, SOLID, GROUND_GLASS = -850.0, 30.0, -600.0


def _scene(layers: list[tuple[float, float]], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(HU, truth): concentric spheres ``(radius mm, HU)`` (outer first) off the voxel grid, rendered with partial
    volume, blurred by a 0.6 mm PSF (another than ``blur.py`` assumes) and given noise; truth: the voxel centres
    inside the outer sphere."""
    spacing = np.asarray(SPACING_IJK[::-1])
    shape, sub = (31, 41, 41), 3
    centre = (np.asarray(shape) // 2 + [0.3, -0.2, 0.4]) * spacing
    axes = [((np.arange(n * sub) + 0.5) / sub - 0.5) * s - c for n, s, c in zip(shape, spacing, centre)]
    r = np.sqrt(axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2)
    fine = np.full(r.shape, BACKGROUND, np.float32)
    for radius, hu in layers:
        fine[r <= radius] = hu
    hu = fine.reshape(shape[0], sub, shape[1], sub, shape[2], sub).mean(axis=(1, 3, 5))
    hu = ndimage.gaussian_filter(hu, 0.6 / spacing)
    hu += ndimage.gaussian_filter(np.random.default_rng(seed).normal(0, 40, shape), 0.5)
    return hu.astype(np.float32), r[sub // 2::sub, sub // 2::sub, sub // 2::sub] <= layers[0][0]


def _dice(hu: np.ndarray, truth: np.ndarray, radius_mm: float) -> float:
    centre = np.argwhere(truth).mean(axis=0)
    seg = segment_candidate(hu, np.ones(hu.shape, bool), SPACING_IJK, centre, radius_mm)
    mask = np.zeros(hu.shape, bool)
    mask[seg.box] = seg.mask
    return 2 * np.count_nonzero(mask & truth) / (np.count_nonzero(mask) + np.count_nonzero(truth))


def test_blurred_sphere_shares():
    """A large sphere keeps its contrast and its edge sits near half of it; a small one loses both."""
    spacing, smooth = np.array([1.25, 0.8, 0.8]), np.array([0.48, 0.7, 0.7])
    small_core, small_edge = sphere_core(1.5, spacing, smooth, 1.25), sphere_edge(1.5, spacing, smooth)
    large_core, large_edge = sphere_core(10.0, spacing, smooth, 5.0), sphere_edge(10.0, spacing, smooth)
    assert large_core > 0.99 and 0.44 < large_edge < 0.5
    assert 0.3 < small_core < 0.7 and small_edge < 0.35


@pytest.mark.parametrize("radius", [1.6, 2.0])
def test_small_solid_nodule_has_its_size(radius):
    hu, truth = _scene([(radius, SOLID)])
    assert _dice(hu, truth, radius) >= 0.85


def test_small_part_solid_nodule_keeps_its_ground_glass_rim():
    """A 5 mm part-solid nodule whose 2 mm solid core blurs to about -450 HU: the mask is the whole nodule,
    not the core's half-contrast blob."""
    hu, truth = _scene([(2.5, GROUND_GLASS), (1.0, SOLID)])
    assert _dice(hu, truth, 2.2) >= 0.8


def test_large_solid_nodule_unchanged():
    hu, truth = _scene([(6.0, SOLID)])
    assert _dice(hu, truth, 5.0) >= 0.98


def test_small_solid_nodule_on_a_vessel_gets_no_halo():
    """A 3.6 mm solid nodule touching a 2 mm vessel that crosses the crop: at the ground-glass threshold the
    vessel's blurred edge widens the mask along it, which is no halo (not compact around the core)."""
    spacing = np.asarray(SPACING_IJK[::-1])
    shape, sub, radius, vessel_r = (31, 61, 61), 3, 1.8, 1.0
    centre = (np.asarray(shape) // 2 + [0.3, -0.2, 0.4]) * spacing
    z, y, x = (((np.arange(n * sub) + 0.5) / sub - 0.5) * s - c for n, s, c in zip(shape, spacing, centre))
    z, y, x = z[:, None, None], y[None, :, None], x[None, None, :]
    nodule = z**2 + y**2 + x**2 <= radius**2
    vessel = (z**2 + (x - radius - vessel_r + 0.3) ** 2 <= vessel_r**2) & np.ones_like(y, bool)  # along y
    hu = np.where(nodule | vessel, SOLID, BACKGROUND).astype(np.float32)
    hu = hu.reshape(shape[0], sub, shape[1], sub, shape[2], sub).mean(axis=(1, 3, 5))
    hu = ndimage.gaussian_filter(hu, 0.6 / spacing)
    hu += ndimage.gaussian_filter(np.random.default_rng(1).normal(0, 40, shape), 0.5)
    truth = nodule[sub // 2::sub, sub // 2::sub, sub // 2::sub]
    on_vessel = vessel[sub // 2::sub, sub // 2::sub, sub // 2::sub] & ~truth
    seg = segment_candidate(hu.astype(np.float32), np.ones(shape, bool), SPACING_IJK, np.argwhere(truth).mean(axis=0),
                            radius)
    mask = np.zeros(shape, bool)
    mask[seg.box] = seg.mask
    assert not seg.halo
    assert 2 * np.count_nonzero(mask & truth) / (np.count_nonzero(mask) + np.count_nonzero(truth)) >= 0.7
    assert np.count_nonzero(mask & on_vessel) <= 20


def test_a_small_solid_nodule_is_typed_solid_once_its_blur_is_allowed_for():
    """A 4.4 mm solid nodule at 1.4 mm shows about 0.45 of its voxels above -300 HU (its rim blurs below): the
    fixed cut (0.5) called it part-solid; scaled by what a blurred solid sphere of its size shows (0.59), solid."""
    from clinseg.post.blur import solid_sphere_share
    from clinseg.post.nodules import SOLID_HU, classify_nodule

    grid = np.array([1.4, 1.4, 1.4])
    shares = [solid_sphere_share(d / 2, grid, SOLID_HU) for d in (3.0, 4.4, 8.0, 20.0)]
    assert shares == sorted(shares) and shares[0] < 0.45 and shares[-1] > 0.9
    assert classify_nodule(0.45) == "part-solid"
    assert classify_nodule(0.45, shares[1]) == "solid"
    assert classify_nodule(0.2, shares[-1]) == "part-solid" and classify_nodule(0.01, shares[1]) == "ground-glass"
