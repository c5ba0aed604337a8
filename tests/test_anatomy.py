"""Classical anatomy finders: body/lung masks (left/right in LPS) and the trachea seed."""

from __future__ import annotations

import numpy as np
import pytest

from clinseg.anatomy.lungs import chest_masks, lung_volume_ml
from clinseg.anatomy.trachea import find_trachea
from clinseg.errors import InputError
from clinseg.phantoms import generate_chest
from clinseg.volume import Volume

FLIP_I = np.diag([-1.0, 1.0, 1.0])  # i runs towards the patient's right: array columns mirrored


@pytest.fixture(scope="module")
def flipped():
    """Anisotropic grid with a mirrored i axis: a left/right mix-up would show at once."""
    return generate_chest(11, preset="small", spacing=(1.3, 1.5, 2.2), direction=FLIP_I, with_vessels=False,
                          n_nodules=0, n_distractors=0)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))


def test_lungs_left_and_right_in_lps(flipped):
    ct = flipped.ct
    masks = chest_masks(ct, "flipped")
    truth = flipped.lungs.array
    # The phantom's lungs exclude the trachea/main bronchi; ours include them, so compare per side.
    assert _dice(masks.lungs == 1, truth == 1) > 0.93
    assert _dice(masks.lungs == 2, truth == 2) > 0.93
    # And the label really sits at the patient's left (+x in LPS), whatever the array order.
    for label, sign in ((1, 1.0), (2, -1.0)):
        kji = np.argwhere(masks.lungs == label).mean(axis=0)
        x = ct.index_to_physical(kji[::-1])[0]
        centre = ct.index_to_physical((np.array(ct.shape[::-1]) - 1) / 2.0)[0]
        assert sign * (x - centre) > 20.0
    assert masks.body.shape == ct.shape and masks.body[truth > 0].mean() > 0.99
    assert 0.85 < lung_volume_ml(masks, ct) / (np.count_nonzero(truth) * np.prod(ct.spacing) / 1000.0) < 1.2


def test_lung_cut_by_the_field_of_view_is_still_a_lung(flipped):
    """A reconstruction circle smaller than the chest cuts the chest wall: the lung then opens onto the image
    edge (seed 1001's demo phantom lost its right lung, and with it whole airway subtrees, this way)."""
    ct, truth = flipped.ct, flipped.lungs.array
    columns = np.argwhere(truth == 2)[:, 2]
    outward = columns.mean() > truth.shape[2] / 2  # the right lung's outer side is at the high columns
    cut = int(np.percentile(columns, 70 if outward else 30))
    keep = slice(0, cut) if outward else slice(cut, None)  # drop the outer third of the right lung
    cropped = Volume(ct.array[:, :, keep].copy(), ct.spacing, ct.index_to_physical((keep.start or 0, 0, 0)),
                     ct.direction, name="fov-cut")
    assert (cropped.array[:, :, -1 if outward else 0] < -700).any()  # the lung really reaches the edge
    masks = chest_masks(cropped, "fov-cut")
    cut_truth = truth[:, :, keep]
    assert _dice(masks.lungs == 2, cut_truth == 2) > 0.9
    assert _dice(masks.lungs == 1, cut_truth == 1) > 0.9


@pytest.mark.parametrize("padding", [-2048, -3024])
def test_lungs_cut_by_the_reconstruction_circle_stay_lungs(flipped, padding):
    """Real scanners store the corners outside the reconstruction circle as padding (-2048, -3024 ...); when
    the circle is smaller than the chest it cuts through both lungs, which then open onto the padding."""
    ct, truth = flipped.ct, flipped.lungs.array
    _, nj, ni = ct.shape
    j, i = np.mgrid[:nj, :ni]
    lung_columns = np.argwhere(truth > 0)[:, 2]
    centre_i, centre_j = (ni - 1) / 2, (nj - 1) / 2
    radius = 0.8 * max(centre_i - lung_columns.min(), lung_columns.max() - centre_i)  # inside both lungs' sides
    outside = np.hypot(i - centre_i, j - centre_j) > radius
    array = ct.array.copy()
    array[:, outside] = padding
    assert (truth[:, outside] > 0).sum() > 0.05 * (truth > 0).sum()  # the circle really cuts the lungs
    masks = chest_masks(ct.with_array(array, name="circle-cut"), "circle-cut")
    for label in (1, 2):
        assert _dice(masks.lungs == label, (truth == label) & ~outside) > 0.9
    assert not masks.lungs[:, outside].any() and not masks.body[:, outside].any()


def test_trachea_seed_inside_the_true_trachea(flipped):
    ct = flipped.ct
    seed = find_trachea(ct, chest_masks(ct), "flipped")
    assert flipped.lumen.array[tuple(seed)] == 1
    # It is the trachea, not a bronchus: inside the root branch's tube.
    trachea = flipped.branches[0]
    lps = ct.index_to_physical(np.asarray(seed[::-1], dtype=float))
    pts = trachea.points_lps
    seg = pts[1:] - pts[:-1]
    t = np.clip(np.einsum("ij,ij->i", lps - pts[:-1], seg) / np.einsum("ij,ij->i", seg, seg), 0, 1)
    closest = np.min(np.linalg.norm(pts[:-1] + t[:, None] * seg - lps, axis=1))
    assert closest < trachea.radius_mm


def _ellipse_body(shape, spacing, inside_hu: float) -> Volume:
    """A water-density ellipsoidal body in air, no lungs."""
    nk, nj, ni = shape
    k, j, i = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    body = ((j - nj / 2) / (0.4 * nj)) ** 2 + ((i - ni / 2) / (0.45 * ni)) ** 2 < 1.0
    array = np.where(body, inside_hu, -1000.0).astype(np.int16)
    return Volume(array, spacing)


def test_abdomen_only_crop_has_no_lungs():
    ct = _ellipse_body((60, 120, 120), (2.0, 2.0, 3.0), 40.0)
    ct.array[30:34, 55:60, 55:60] = -1000  # a little bowel gas: far too small for lungs
    with pytest.raises(InputError, match="no lungs"):
        chest_masks(ct, "abdomen.nrrd")


def test_head_only_crop_has_no_lungs():
    ct = _ellipse_body((50, 100, 100), (2.0, 2.0, 3.0), 35.0)
    rim = (ct.array > 0) & (np.abs(np.indices(ct.shape)[2] - 50) > 40)
    ct.array[rim] = 900  # skull-like bone at the sides
    ct.array[20:26, 30:40, 45:55] = -1000  # sinus air
    with pytest.raises(InputError, match="head.nrrd: no lungs"):
        chest_masks(ct, "head.nrrd")


def test_mri_like_volume_without_air_is_refused():
    rng = np.random.default_rng(0)
    mri = Volume(rng.uniform(0, 800, size=(40, 64, 64)).astype(np.float32), (1.0, 1.0, 2.0))
    with pytest.raises(InputError) as err:
        chest_masks(mri, "t1.nii.gz")
    assert str(err.value).startswith("t1.nii.gz: ") and "\n" not in str(err.value)


def test_all_air_volume_is_refused():
    with pytest.raises(InputError, match="no body"):
        chest_masks(Volume(np.full((20, 40, 40), -1000, np.int16), (2.0, 2.0, 2.0)), "empty.nrrd")
