"""The ``bone_edge`` op: a coarse bone mask moved onto the CT's bone edge, within its band only."""

import numpy as np
from scipy import ndimage

from clinseg.tasks.oar.bone_edge import apply_bone_edges, refine_bone_edge

SPACING = (1.0, 1.0, 2.5)  # i, j, k mm


def _plate() -> tuple[np.ndarray, np.ndarray]:
    """A 10 mm thick bone plate (2 mm cortex around darker marrow) in soft tissue, blurred as a scanner does,
    and a second bone 12 mm beside it; returns (CT, the plate's mask)."""
    shape = (24, 64, 64)
    plate = np.zeros(shape, bool)
    plate[4:20, 12:52, 20:30] = True
    cortex = plate & ~ndimage.binary_erosion(plate, np.ones((3, 5, 5)))
    other = np.zeros(shape, bool)
    other[4:20, 12:52, 42:50] = True
    hu = np.full(shape, 40.0)
    hu[plate | other] = 400.0
    hu[cortex | other] = 1400.0
    hu = ndimage.gaussian_filter(hu, (0.4, 0.8, 0.8))
    hu += np.random.default_rng(0).normal(0, 10, shape)
    return hu.astype(np.int16), plate


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_coarse_masks_move_onto_the_bone_edge() -> None:
    ct, plate = _plate()
    thin = ndimage.binary_erosion(plate, np.ones((1, 5, 5)))  # 2 mm inside the bone all round
    fat = ndimage.binary_dilation(plate, np.ones((1, 5, 5)))  # 2 mm beyond it
    for coarse in (thin, fat):
        assert _dice(coarse, plate) < 0.85
        assert _dice(refine_bone_edge(ct, coarse, SPACING, band_mm=3.0), plate) > 0.97


def test_the_edge_level_comes_from_the_scan_not_from_fixed_ct_numbers() -> None:
    ct, plate = _plate()
    thin = ndimage.binary_erosion(plate, np.ones((1, 5, 5)))
    first = refine_bone_edge(ct, thin, SPACING, band_mm=3.0)
    brighter = (ct.astype(np.float32) * 1.5 + 200).astype(np.int16)  # another scanner's calibration
    assert np.array_equal(refine_bone_edge(brighter, thin, SPACING, band_mm=3.0), first)


def test_bone_beyond_the_band_and_other_organs_stay_out() -> None:
    ct, plate = _plate()
    labels = np.zeros(ct.shape, np.uint8)
    labels[ndimage.binary_erosion(plate, np.ones((1, 5, 5)))] = 5
    labels[4:20, 12:52, 31] = 9  # an organ on the bone's surface keeps its voxels
    done = apply_bone_edges(ct, labels, SPACING, [{"op": "bone_edge", "organ": "Mandible", "band_mm": 3.0}],
                            {"Mandible": 5, "Lens": 9})
    assert done == ["Mandible"]
    assert not (labels[..., 38:] == 5).any()  # the other bone, 12 mm away
    assert (labels[4:20, 12:52, 31] == 9).all()
    assert _dice(labels == 5, plate) > 0.95
