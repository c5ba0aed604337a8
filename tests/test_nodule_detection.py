"""Nodule detection pieces: the ground-glass candidate pass, the ball mask fallback, the false-positive
network (built-in weights verified and loaded, patches), and detection on a phantom at a fixed score."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from clinseg.tasks.nodule.candidates import Candidate, detect_candidates, ggo_window
from clinseg.tasks.nodule.classical import ball_mask
from clinseg.tasks.nodule.fpr import HU_RANGE, patches

SHAPE = (48, 48, 48)


def _ggo_beside_vessel() -> tuple[np.ndarray, np.ndarray]:
    """A 5 mm ground-glass sphere (-630 HU) overlapping a 4 mm vessel (+40 HU) in lung (-850), 1 mm grid."""
    k, j, i = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]].astype(float)
    ct = np.full(SHAPE, -850.0, np.float32)
    vessel = (j - 24) ** 2 + (i - 20) ** 2 <= 2.0 ** 2
    centre = np.array([24.0, 24.0, 23.6])
    glass = (k - centre[0]) ** 2 + (j - centre[1]) ** 2 + (i - centre[2]) ** 2 <= 2.5 ** 2
    ct[vessel] = 40.0
    ct[glass & ~vessel] = -630.0
    ct = ndimage.gaussian_filter(ct, 0.7) + np.random.default_rng(0).normal(0, 10, SHAPE).astype(np.float32)
    return ct, centre


def test_ground_glass_pass_finds_the_nodule_beside_a_vessel():
    ct, centre = _ggo_beside_vessel()
    region = np.ones(SHAPE, bool)
    near = lambda cands: [c for c in cands if np.linalg.norm(c.kji - centre) <= 2.5]  # noqa: E731
    # The first pass sees a tube with a dent: no blob at all.
    assert near(detect_candidates(ct, region, (1.0, 1.0, 1.0), ggo_sigmas_mm=())) == []
    found = near(detect_candidates(ct, region, (1.0, 1.0, 1.0)))
    assert len(found) == 1 and found[0].ggo


def test_ggo_window_keeps_ground_glass_and_drops_lung_and_solid():
    values = ggo_window(np.array([-1000.0, -850.0, -630.0, -500.0, 40.0]))
    assert values[0] == values[1] == values[4] == 0.0
    assert values[2] == values[3] > 0


def test_ball_mask_is_the_blob_inside_the_region():
    ct = np.full((20, 20, 20), -850.0, np.float32)
    region = np.ones(ct.shape, bool)
    region[:, :, 12:] = False
    cand = Candidate(np.array([10.0, 10.0, 10.0]), 2.0, 30.0, 0.8)  # radius 2 sqrt(3) = 3.46 mm
    seg = ball_mask(ct, region, (1.0, 1.0, 1.0), cand)
    full = np.zeros(ct.shape, bool)
    full[seg.box] = seg.mask
    k, j, i = np.argwhere(full).T
    assert np.all((k - 10) ** 2 + (j - 10) ** 2 + (i - 10) ** 2 <= cand.radius_mm ** 2 + 1e-6)
    assert i.max() == 11 and full[10, 10, 7] and not full[10, 10, 12]


def test_patches_sample_hu_at_1_mm_around_the_centre():
    ct = np.full((30, 30, 30), -1000.0, np.float32)
    ct[15, 15, 15] = 600.0
    p = patches(ct, (2.0, 2.0, 2.0), np.array([[15.0, 15.0, 15.0]]))
    assert p.shape == (1, 32, 32, 32) and p.dtype == np.uint8
    lo, hi = HU_RANGE
    assert p.max() == p[0, 15:17, 15:17, 15:17].max()  # the bright voxel sits at the patch centre
    assert p[0, 0, 0, 0] == round((-1000 - lo) * 255 / (hi - lo))


def test_builtin_fp_network_verifies_and_loads():
    from clinseg.nets.nodule_fpr import NoduleFPR
    from clinseg.registry import get_registry
    from clinseg.tasks.nodule.fpr import MODEL_ID, load_fpr

    registry = get_registry()
    card = registry.card(MODEL_ID)
    assert card.task == "nodule" and registry.is_installed(MODEL_ID) and registry.verify(MODEL_ID) == []
    reducer = load_fpr()
    network = reducer.network
    assert isinstance(network, NoduleFPR) and not network.training
    assert reducer.model_id == MODEL_ID and reducer.prior_shift == card.figures["prior_shift"]
    assert sum(p.numel() for p in network.parameters()) == card.parameter_count
