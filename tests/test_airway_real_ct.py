"""AirwaySeg on real chest CT: scanner padding outside the reconstruction circle, and the real LIDC slab in
../shared (skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest

from clinseg.checks import require_ct
from clinseg.io import read_volume
from clinseg.metrics.airway import airway_metrics
from clinseg.phantoms import generate_chest
from clinseg.preprocess import fill_ct_padding
from clinseg.tasks.airway import AirwayOptions, run_airway
from clinseg.volume import Volume


def _with_padding(ct: Volume, value: int) -> Volume:
    """``ct`` with the corners outside an in-plane circle set to a scanner padding value, as real series store them."""
    _, nj, ni = ct.shape
    j, i = np.mgrid[:nj, :ni]
    outside = np.hypot(i - (ni - 1) / 2, j - (nj - 1) / 2) > 0.5 * min(ni, nj)
    array = ct.array.astype(np.int16, copy=True)
    array[:, outside] = value
    return ct.with_array(array, name="padded.nii.gz")


@pytest.mark.parametrize("value", [-2048, -3024])
def test_padding_becomes_air(value):
    ct = Volume(np.zeros((20, 64, 64), np.int16), spacing=(1.0, 1.0, 1.0))
    padded = _with_padding(ct, value)
    filled = fill_ct_padding(padded)
    assert filled.array.dtype == np.int16
    assert filled.array.min() == -1024 and (filled.array == -1024).sum() == (padded.array == value).sum()
    assert fill_ct_padding(ct) is ct  # nothing to do, no copy


def test_padded_phantom_segments_like_the_unpadded_one():
    phantom = generate_chest(seed=11, preset="small")
    padded = _with_padding(phantom.ct, -3024)
    require_ct(padded, "padded.nii.gz")  # would read as "not a CT" if the padding counted as air
    result = run_airway(padded, AirwayOptions(engine="classical"))
    reference = run_airway(phantom.ct, AirwayOptions(engine="classical"))
    scores = airway_metrics(result.labelmap.array > 0, reference.labelmap.array > 0, phantom.ct.spacing)
    assert scores["dice"] > 0.98, scores  # the padding changes nothing inside the field of view


def test_real_lidc_slab_gives_one_named_central_tree(shared):
    """LIDC-IDRI-0001: 16 slices of 2.5 mm through the carina, padding -2048 outside the field of view."""
    path = shared / "data" / "lidc" / "LIDC-IDRI-0001" / "LIDC-IDRI-0001_slab_ct.nii.gz"
    ct = read_volume(path)
    assert ct.array.min() <= -2000  # the case this test is about
    result = run_airway(ct, AirwayOptions(engine="classical"))
    tree = result.metrics["tree"]
    assert {"Trachea", "LeftMainBronchus", "RightMainBronchus"} <= set(tree["named"]), tree["named"]
    assert tree["islands"] == 0
    mask = result.labelmap.array > 0
    assert 5.0 < result.metrics["airway_volume_ml"] < 40.0
    assert np.median(ct.array[mask]) < -800  # lumen, not wall or lung parenchyma around it
    # the trachea seed lies near the middle of the body, left to right
    seed_i = result.metrics["trachea_seed_ijk"][0]
    assert abs(seed_i - ct.shape[2] / 2) < 60
