"""Head-to-foot bands of stage 1's organs: learnt from label maps, applied to a phantom with a stray 'eye'."""

from __future__ import annotations

import numpy as np
import pytest

from clinseg.phantoms.headneck import generate_headneck
from clinseg.tasks.oar.zbands import apply_z_bands, height_map
from clinseg.terminology import HN_ORGANS
from clinseg.train.oar_bands import learn_z_bands

VALUE = {s.name: s.label for s in HN_ORGANS}


@pytest.fixture(scope="module")
def phantoms():
    return [generate_headneck(seed, spacing=(3.0, 3.0, 3.0), with_tumour=False) for seed in (4, 5)]


def test_bands_cover_the_training_organs_and_open_where_the_scan_cuts(phantoms):
    bands = learn_z_bands([p.labels for p in phantoms], VALUE["Brain"], margin_mm=10.0)
    assert "Brain" not in bands
    for p in phantoms:
        labels = p.labels.array
        z = np.broadcast_to(height_map(p.labels), labels.shape)
        z0 = z[labels == VALUE["Brain"]].mean()
        for name, (low, high) in bands.items():
            zs = z[labels == VALUE[name]] - z0
            if zs.size:
                assert low is None or zs.min() >= low + 10.0 - 0.06
                assert high is None or zs.max() <= high - 10.0 + 0.06
    low, high = bands["Eye L"]
    assert low is not None and high is not None and 10.0 < high - low < 80.0
    cord = np.flatnonzero((phantoms[0].labels.array == VALUE["Spinal cord"]).any((1, 2)))
    if cord[0] == 0:  # the cord leaves the scan at its lower end: no lower bound
        assert bands["Spinal cord"][0] is None


def test_a_stray_eye_below_the_skull_is_dropped(phantoms):
    p = phantoms[0]
    labels = p.labels.array.copy()
    bands = learn_z_bands([q.labels for q in phantoms], VALUE["Brain"])
    eye_r = labels == VALUE["Eye R"]
    stray = np.zeros_like(eye_r)
    stray[2:6, 30:36, 20:26] = True  # 4 slices at the bottom of the scan, in the neck
    labels[stray] = VALUE["Eye R"]
    prob = np.stack([(labels == v).astype(np.float32) for v in range(len(HN_ORGANS) + 1)])
    z0 = apply_z_bands(prob, p.labels, VALUE["Brain"], {VALUE[k]: tuple(v) for k, v in bands.items()})
    assert z0 is not None and z0 > height_map(p.labels).ravel()[stray.any((1, 2)).argmax()] + 100
    out = prob.argmax(0)
    assert not (out[stray] == VALUE["Eye R"]).any()
    assert (out[eye_r] == VALUE["Eye R"]).all()
    assert apply_z_bands(prob * 0, p.labels, VALUE["Brain"], {}) is None  # no anchor: nothing done


def test_a_stray_anchor_voxel_on_a_neck_scan_changes_nothing(phantoms):
    """A neck scan holds no brain: one voxel stage 1 calls brain must not anchor the bands (they would erase the
    lungs, the cord and the glands below a brain that is not there)."""
    p = phantoms[0]
    labels = p.labels.array.copy()
    labels[labels == VALUE["Brain"]] = 0
    cord = np.argwhere(labels == VALUE["Spinal cord"])
    labels[tuple(cord[cord[:, 0].argmin()])] = VALUE["Brain"]  # the stray voxel, at the bottom of the scan
    bands = learn_z_bands([q.labels for q in phantoms], VALUE["Brain"])
    prob = np.stack([(labels == v).astype(np.float32) for v in range(len(HN_ORGANS) + 1)])
    before = prob.copy()
    by_value = {VALUE[k]: tuple(v) for k, v in bands.items()}
    assert apply_z_bands(prob, p.labels, VALUE["Brain"], by_value) is None
    np.testing.assert_array_equal(prob, before)
    # without the size rule the stray voxel anchors the bands and organs are erased
    assert apply_z_bands(prob, p.labels, VALUE["Brain"], by_value, min_anchor_ml=0.0) is not None
    assert prob.sum() < before.sum() - 100
