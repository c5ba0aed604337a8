"""Left/right assignment of paired organs by the midsagittal plane, on a head & neck phantom."""

from __future__ import annotations

import numpy as np
import pytest

from clinseg.phantoms.headneck import generate_headneck
from clinseg.tasks.oar.sides import assign_sides, left_of_midline, midline_plane, paired_labels
from clinseg.terminology import HN_ORGANS
from clinseg.volume import Volume

VALUE = {s.name: s.label for s in HN_ORGANS}
MIDLINE = [VALUE[n] for n in ("Brain", "Brainstem", "Spinal cord", "Spinal canal", "Mandible")]


@pytest.fixture(scope="module")
def phantom():
    return generate_headneck(4, spacing=(3.0, 3.0, 3.0), with_tumour=False)


def test_pairs_come_from_the_laterality_codes():
    pairs = paired_labels(HN_ORGANS)
    names = {(next(s.name for s in HN_ORGANS if s.label == a), next(s.name for s in HN_ORGANS if s.label == b))
             for a, b in pairs}
    assert len(pairs) == 8
    for organ in ("Eye", "Lens", "Optic nerve", "Parotid", "Submandibular", "Cochlea", "Lacrimal", "Lung"):
        assert (f"{organ} L", f"{organ} R") in names


def test_patient_left_is_plus_x_on_the_phantom(phantom):
    """The phantoms' 'L' organs lie at +x of the fitted midline (LPS), their 'R' twins at -x."""
    labels = phantom.labels.array
    plane = midline_plane(phantom.labels, labels, MIDLINE)
    brain_x = phantom.labels.index_to_physical(np.argwhere(labels == VALUE["Brain"]).mean(0)[::-1])[0]
    assert abs(plane[0] + plane[1] * 0 - brain_x) < 15.0
    left = left_of_midline(phantom.labels, plane)
    for value_l, value_r in paired_labels(HN_ORGANS):
        if (labels == value_l).any():
            assert left[labels == value_l].mean() > 0.95
        if (labels == value_r).any():
            assert left[labels == value_r].mean() < 0.05


def test_swapped_and_mixed_sides_are_repaired(phantom):
    """A one-hot 'network output' with every pair's sides swapped (and one eye split across both labels) comes
    back with the phantom's own labels."""
    labels = phantom.labels.array
    swap = np.arange(256, dtype=np.uint8)
    for value_l, value_r in paired_labels(HN_ORGANS):
        swap[value_l], swap[value_r] = value_r, value_l
    wrong = swap[labels]
    eye_r = labels == VALUE["Eye R"]
    k_mid = int(np.argwhere(eye_r)[:, 0].mean())
    wrong[eye_r & (np.arange(labels.shape[0])[:, None, None] < k_mid)] = VALUE["Eye R"]  # half right, half wrong
    prob = np.stack([(wrong == v).astype(np.float32) for v in range(len(HN_ORGANS) + 1)])
    plane = midline_plane(phantom.labels, prob.argmax(0), MIDLINE)
    assign_sides(prob, phantom.labels, paired_labels(HN_ORGANS), plane)
    fixed = prob.argmax(0)
    for value_l, value_r in paired_labels(HN_ORGANS):
        for value in (value_l, value_r):
            a, b = fixed == value, labels == value
            if b.any():
                assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.97, value
    assert (swap[labels] != labels).sum() > 1000  # the swap did change the sides


def test_tilted_midline_is_followed():
    """Midline organs along x = 10 + 0.2 y - 0.1 z: the plane's coefficients are recovered."""
    grid = Volume(np.zeros((40, 60, 60), np.uint8), (2.0, 2.0, 2.0), (-60.0, -60.0, -40.0), np.eye(3), "g")
    k, j, i = np.indices(grid.shape)
    x, y, z = -60 + 2.0 * i, -60 + 2.0 * j, -40 + 2.0 * k
    labels = np.zeros(grid.shape, np.uint8)
    labels[(np.abs(x - (10 + 0.2 * y - 0.1 * z)) < 5) & (np.abs(y) < 40)] = VALUE["Brain"]
    labels[(np.abs(x - 50) < 4) & (np.abs(y) < 4) & (k < 5)] = VALUE["Brainstem"]  # an outlier: dropped
    a, b, c = midline_plane(grid, labels, MIDLINE)
    assert a == pytest.approx(10, abs=1.5) and b == pytest.approx(0.2, abs=0.03) and c == pytest.approx(-0.1, abs=0.03)


def test_body_fallback_without_midline_organs():
    grid = Volume(np.zeros((10, 40, 40), np.uint8), (2.0, 2.0, 2.0), (-40.0, -40.0, 0.0), np.eye(3), "g")
    hu = np.full(grid.shape, -1000.0, np.float32)
    hu[:, 5:35, 12:32] = 40.0  # body centred at i = 21.5 -> x = 3 mm
    a, _, _ = midline_plane(grid, np.zeros(grid.shape, np.uint8), MIDLINE, hu)
    assert a == pytest.approx(3.0, abs=0.5)


def test_mirror_pass_makes_stage_1_left_right_equivariant():
    """With the mirror pass (card inference ``mirror_tta``) a mirrored scan gives the mirrored labels, left and right
    swapped, whatever the network: the two passes are each other's mirror images."""
    import torch

    from clinseg.engine import SlidingWindowInferer
    from clinseg.tasks.oar.model import _with_mirror_pass, left_right_axis

    class Card:
        @staticmethod
        def segments():
            return HN_ORGANS

    torch.manual_seed(0)
    network = torch.nn.Conv3d(1, len(HN_ORGANS) + 1, 3, padding=1).eval()
    inferer = SlidingWindowInferer((8, 16, 16), overlap=0.25)
    image = np.random.default_rng(0).random((8, 16, 20)).astype(np.float32)
    grid = Volume(image, (1.0, 1.0, 1.0))
    assert left_right_axis(grid) == 2
    turned = Volume(image, (1.0, 1.0, 1.0), direction=np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], float))
    assert left_right_axis(turned) == 1  # the rows (j), not the columns, run left-right here

    def labels(array: np.ndarray) -> np.ndarray:
        plain = inferer(array, network)
        return _with_mirror_pass(plain, array, grid, Card(), inferer, network, None, None).argmax(0).numpy()

    swap = np.arange(len(HN_ORGANS) + 1)
    for left, right in paired_labels(HN_ORGANS):
        swap[left], swap[right] = right, left
    direct, mirrored = labels(image), labels(np.ascontiguousarray(image[:, :, ::-1]))
    assert len(np.unique(direct)) > 3
    assert np.array_equal(swap[mirrored[:, :, ::-1]], direct)
