"""Nodule detection pieces: the ground-glass and vessel-bulge candidate passes, the segment openings, the ball
mask fallback, the false-positive network (built-in weights verified and loaded, patches)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from clinseg import parallel
from clinseg.phantoms.raster import capsule_distance_points
from clinseg.tasks.nodule import candidates as candidates_module
from clinseg.tasks.nodule.bulges import line_opening
from clinseg.tasks.nodule.candidates import BULGE_SIGMAS_MM, Candidate, detect_candidates, ggo_window
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


def test_the_passes_in_threads_give_the_candidates_of_one_thread(monkeypatch):
    ct, _ = _ggo_beside_vessel()
    k, j, i = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    ct[(k - 12) ** 2 + (j - 12) ** 2 + (i - 36) ** 2 <= 9] = 20.0  # a solid nodule for the first pass
    region = np.ones(SHAPE, bool)
    runs = []
    for threads in (1, 2):
        monkeypatch.setattr(candidates_module, "available_threads", lambda n=threads: n)
        runs.append(detect_candidates(ct, region, (1.0, 1.0, 1.0)))
    one, two = runs
    assert any(c.ggo for c in one) and any(not c.ggo for c in one)  # both passes ran
    assert [(tuple(c.kji), c.response, c.sigma_mm, c.ggo) for c in one] == \
        [(tuple(c.kji), c.response, c.sigma_mm, c.ggo) for c in two]


def test_omp_num_threads_one_and_a_batch_limit_mean_one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert parallel.available_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert parallel.available_threads() >= 1
    parallel.limit_threads(1)  # a batch worker's --threads
    try:
        assert parallel.available_threads() == 1
    finally:
        parallel.limit_threads(None)


def _vessels(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """A 3.2 mm vessel (+40 HU) in lung (-850) on a 1.4 mm grid, rendered with partial volume (3^3 sub-voxels):
    straight ("plain"), forking into two 2.6 mm branches ("fork"), or with a 3.5 mm nodule on its side
    ("bulge", centred 0.8 nodule radii outside the vessel's wall, as the phantoms place them). Also returns
    the nodule's centre as a float ``[k, j, i]`` index."""
    n, sub, step = 34, 3, 1.4
    points = ((np.stack(np.mgrid[: n * sub, : n * sub, : n * sub], -1).astype(np.float32) + 0.5) * (step / sub))
    points = points.reshape(-1, 3)
    mid, end = n * step / 2, n * step
    start, fork = np.array([mid, mid, 0.0]), np.array([mid, mid, mid])
    if kind == "fork":
        caps = ([start, fork, fork], [fork, [mid - 14, mid, end], [mid + 14, mid, end]], np.array([1.6, 1.3, 1.3]))
    else:
        caps = ([start], [[mid, mid, end]], np.array([1.6]))
    inside = capsule_distance_points(points, np.array(caps[0]), np.array(caps[1], float), caps[2]) <= 0
    centre = np.array([mid, mid + 1.6 + 0.8 * 1.75, mid])
    if kind == "bulge":
        inside |= np.linalg.norm(points - centre, axis=-1) <= 1.75
    inside = inside.reshape(n * sub, n * sub, n * sub)
    ct = np.where(inside, 40.0, -850.0).astype(np.float32).reshape(n, sub, n, sub, n, sub).mean(axis=(1, 3, 5))
    ct += np.random.default_rng(0).normal(0, 15, ct.shape).astype(np.float32)
    return ct, centre / step - 0.5


def _bulge_pass_only(ct: np.ndarray) -> list[Candidate]:
    """The vessel-bulge pass alone: the first pass blind to small blobs, no ground-glass pass."""
    cands = detect_candidates(ct, np.ones(ct.shape, bool), (1.4, 1.4, 1.4), sigmas_mm=(9.0,), ggo_sigmas_mm=(),
                              bulge_sigmas_mm=BULGE_SIGMAS_MM)
    return [c for c in cands if c.bulge]


def test_bulge_pass_finds_a_nodule_on_a_vessel_and_nothing_on_a_plain_vessel_or_a_fork():
    ct, centre = _vessels("bulge")
    found = _bulge_pass_only(ct)
    assert len(found) == 1 and np.linalg.norm((found[0].kji - centre) * 1.4) <= 1.75
    # The pass runs only when asked.
    default = detect_candidates(ct, np.ones(ct.shape, bool), (1.4, 1.4, 1.4), sigmas_mm=(9.0,), ggo_sigmas_mm=())
    assert not any(c.bulge for c in default)
    assert _bulge_pass_only(_vessels("plain")[0]) == []
    assert _bulge_pass_only(_vessels("fork")[0]) == []


def test_line_opening_keeps_a_long_tube_and_drops_a_short_blob():
    image = np.zeros((30, 30, 30), np.float32)
    image[15, 15, 3:27] = 100.0  # a 24 mm line along i (1 mm grid)
    image[5:8, 5:8, 5:8] = 100.0  # a 3 mm cube
    image[20, 5:10, 20] = 100.0  # a 5 mm segment along j
    opened = line_opening(image, np.array([1.0, 1.0, 1.0]), 8.0)
    assert np.all(opened[15, 15, 3:27] == 100.0)
    assert opened[5:8, 5:8, 5:8].max() == 0.0 and opened[20, 5:10, 20].max() == 0.0
    diagonal = np.zeros((20, 20, 20), np.float32)
    idx = np.arange(2, 18)
    diagonal[idx, idx, idx] = 50.0  # a body diagonal: one of the 13 directions
    assert np.all(line_opening(diagonal, np.array([1.0, 1.0, 1.0]), 8.0)[idx, idx, idx] == 50.0)


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
