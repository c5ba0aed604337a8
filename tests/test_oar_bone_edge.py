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


def test_a_lumen_in_bone_is_redrawn_and_air_beside_it_stays_out() -> None:
    k, j, i = np.mgrid[0:12, 0:32, 0:32]
    lumen = ((i - 14) ** 2 + (j - 16) ** 2 <= 9) & (k >= 4) & (k <= 7)  # a 3 mm radius canal, 4 slices
    air = (i >= 20) & (i <= 23) & (j >= 13) & (j <= 19) & (k >= 4) & (k <= 7)  # 2 mm of bone beside it
    hu = np.full(lumen.shape, 1700.0)
    hu[lumen] = 200.0
    hu[air] = -1000.0
    ct = ndimage.gaussian_filter(hu, (0.4, 0.8, 0.8)).astype(np.int16)
    shifted = np.roll(lumen, 1, axis=2)  # the network's mask one voxel off
    labels = np.zeros(ct.shape, np.uint8)
    labels[shifted] = 17
    apply_bone_edges(ct, labels, SPACING, [{"op": "bone_edge", "organ": "Cochlea L", "band_mm": 1.5, "lumen": True}],
                     {"Cochlea L": 17})
    assert _dice(shifted, lumen) < 0.8
    # Its four tip voxels sit at the half-maximum itself (a digital disc is not round): 0.93, not 1.
    assert _dice(labels == 17, lumen) > 0.9 and not (labels[air] == 17).any()
