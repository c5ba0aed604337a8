"""Resampling, windowing, cropping and padding keep the physical placement of every voxel."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from clinseg.preprocess import bounding_box, crop, pad_to, resample, resample_to, window
from clinseg.volume import Volume

OBLIQUE = Rotation.from_euler("zyx", [30, 10, -20], degrees=True).as_matrix()
GRADIENT = np.array([0.5, -2.0, 1.25])  # HU per mm along L, P, S


def linear_volume(shape=(10, 12, 14), spacing=(0.8, 0.7, 2.5), origin=(-20.0, 15.0, 40.0), direction=OBLIQUE) -> Volume:
    """Voxel value = an affine function of its LPS position, so any linear resampling must reproduce it."""
    volume = Volume(np.zeros(shape, np.float32), spacing, origin, direction)
    nk, nj, ni = shape
    k, j, i = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    lps = volume.index_to_physical(np.stack([i, j, k], axis=-1))
    volume.array = (lps @ GRADIENT + 100.0).astype(np.float32)
    return volume


def centre(volume: Volume) -> np.ndarray:
    return volume.index_to_physical((np.array(volume.size_ijk) - 1) / 2)


def extent(volume: Volume) -> np.ndarray:
    return np.array(volume.size_ijk) * np.array(volume.spacing)


def test_resample_keeps_centre_extent_and_values():
    volume = linear_volume()
    out = resample(volume, (1.0, 1.0, 1.0))
    assert out.size_ijk == (11, 8, 25)  # round(14*0.8), round(12*0.7), round(10*2.5)
    assert out.spacing == (1.0, 1.0, 1.0) and out.array.dtype == np.float32
    np.testing.assert_allclose(out.direction, volume.direction)
    np.testing.assert_allclose(centre(out), centre(volume), atol=1e-9)
    assert np.all(np.abs(extent(out) - extent(volume)) <= np.array(out.spacing) / 2 + 1e-9)
    # Voxels whose centre lies inside the source grid hold the affine function at their own position.
    nk, nj, ni = out.shape
    k, j, i = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    lps = out.index_to_physical(np.stack([i, j, k], axis=-1))
    src = volume.physical_to_index(lps)
    inside = np.all((src >= 0) & (src <= np.array(volume.size_ijk) - 1), axis=-1)
    assert inside.sum() > 0.5 * inside.size
    np.testing.assert_allclose(out.array[inside], (lps @ GRADIENT + 100.0)[inside], atol=1e-3)


def test_resample_isotropic_number_and_nearest_labels():
    labels = np.zeros((6, 8, 8), np.uint8)
    labels[2:4, 3:6, 3:6] = 7
    labels[0, 0, 0] = 2
    volume = Volume(labels, (0.5, 0.5, 2.0), (1.0, 2.0, 3.0))
    out = resample(volume, 1.0, order=0)
    assert out.array.dtype == np.uint8 and out.size_ijk == (4, 4, 12)
    assert set(np.unique(out.array)) <= {0, 2, 7} and 7 in out.array
    np.testing.assert_allclose(centre(out), centre(volume))
    # Volume of the label is kept to within a voxel layer.
    assert abs((out.array == 7).sum() * 1.0 - (labels == 7).sum() * 0.5) <= 9


def test_resample_rejects_bad_arguments():
    volume = linear_volume()
    with pytest.raises(ValueError, match="positive"):
        resample(volume, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="order"):
        resample(volume, 1.0, order=2)


def test_resample_to_other_grid_matches_physical_points():
    volume = linear_volume()
    reference = Volume(np.zeros((7, 9, 11), np.int16), (1.1, 0.9, 1.7), (-18.0, 14.0, 42.0), np.eye(3))
    out = resample_to(volume, reference, order=1, default_value=-5.0)
    assert out.same_grid(reference) and out.spacing == reference.spacing and out.origin == reference.origin
    nk, nj, ni = out.shape
    k, j, i = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    lps = out.index_to_physical(np.stack([i, j, k], axis=-1))
    src = volume.physical_to_index(lps)
    inside = np.all((src >= 0) & (src <= np.array(volume.size_ijk) - 1), axis=-1)
    outside = np.any((src < -0.5) | (src > np.array(volume.size_ijk) - 0.5), axis=-1)
    assert inside.any() and outside.any()
    np.testing.assert_allclose(out.array[inside], (lps @ GRADIENT + 100.0)[inside], atol=1e-3)
    assert np.all(out.array[outside] == -5.0)


def test_resample_to_same_grid_is_identity():
    volume = linear_volume()
    np.testing.assert_allclose(resample_to(volume, volume).array, volume.array, atol=1e-4)


def test_window():
    out = window(np.array([-2000, -1000, -300, 400, 3000], np.int16), -1000, 400)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])
    with pytest.raises(ValueError):
        window(np.zeros(3), 10, 10)


def test_crop_moves_origin_and_keeps_physical_positions():
    volume = linear_volume()
    bbox = (slice(2, 7), slice(3, None), slice(-5, None))
    out = crop(volume, bbox)
    assert out.shape == (5, 9, 5)
    np.testing.assert_array_equal(out.array, volume.array[2:7, 3:, 9:])
    np.testing.assert_allclose(out.origin, volume.index_to_physical([9, 3, 2]))
    # Voxel (i, j, k) of the crop sits where voxel (i + 9, j + 3, k + 2) of the source does.
    np.testing.assert_allclose(out.index_to_physical([4, 8, 4]), volume.index_to_physical([13, 11, 6]), atol=1e-9)
    with pytest.raises(ValueError, match="empty"):
        crop(volume, (slice(3, 3), slice(None), slice(None)))


def test_bounding_box():
    mask = np.zeros((10, 12, 14), bool)
    mask[3:5, 6, 2:9] = True
    assert bounding_box(mask) == (slice(3, 5), slice(6, 7), slice(2, 9))
    assert bounding_box(mask, 2) == (slice(1, 7), slice(4, 9), slice(0, 11))  # clipped at 0
    assert bounding_box(mask, (0, 10, 1)) == (slice(3, 5), slice(0, 12), slice(1, 10))
    assert bounding_box(np.zeros((3, 3, 3))) is None
    volume = linear_volume()
    cropped = crop(volume, bounding_box(mask, 1))
    assert cropped.shape == (4, 3, 9)


@pytest.mark.parametrize("center", [False, True])
def test_pad_to(center):
    volume = linear_volume(shape=(4, 5, 6))
    out = pad_to(volume, (7, 5, 3), value=-1024, center=center)
    assert out.shape == (7, 5, 6)  # never cropped
    front = 1 if center else 0
    np.testing.assert_array_equal(out.array[front : front + 4], volume.array)
    assert np.all(out.array[:front] == -1024) and np.all(out.array[front + 4 :] == -1024)
    # The original voxels keep their physical positions.
    np.testing.assert_allclose(out.index_to_physical([2, 3, front + 1]), volume.index_to_physical([2, 3, 1]), atol=1e-9)
