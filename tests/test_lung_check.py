"""The "no lungs in the field of view" check scales with the scan's length: a thin slab of a real chest
passes, thin or long scans without lungs (abdomen, head, a water phantom) are refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

from clinseg.anatomy.lungs import MIN_LUNG_ML, chest_masks, min_lung_ml
from clinseg.errors import InputError
from clinseg.volume import Volume

PIXEL_MM = 0.7


def _slab(slices: int, slice_mm: float, air: list[tuple[float, float, float, float]], body_hu: float = 40.0) -> Volume:
    """A 256x256 water-density ellipse (18 x 14 cm) in air with air-filled ellipses (centre x, y, half-axes
    x, y in mm from the image centre) through every slice."""
    n = 256
    y, x = (np.mgrid[:n, :n] - n / 2) * PIXEL_MM
    plane = np.full((n, n), -1000.0, np.float32)
    plane[(x / 90) ** 2 + (y / 70) ** 2 < 1] = body_hu
    for cx, cy, ax, ay in air:
        plane[((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 < 1] = -850.0
    array = np.repeat(plane[None], slices, axis=0)
    array += np.random.default_rng(0).normal(0, 15, array.shape).astype(np.float32)
    return Volume(array.astype(np.int16), (PIXEL_MM, PIXEL_MM, slice_mm), name="slab.nii.gz")


LUNGS = [(-45.0, 0.0, 35.0, 50.0), (45.0, 0.0, 35.0, 50.0)]  # about 55 cm^2 each per slice


def test_thin_chest_slab_has_lungs():
    ct = _slab(12, 1.25, LUNGS)  # 15 mm: each lung about 80 ml, below the 150 ml a whole chest holds
    masks = chest_masks(ct)
    assert set(np.unique(masks.lungs)) == {0, 1, 2}
    assert min_lung_ml(ct) == pytest.approx(75.0)


def test_whole_chest_length_still_needs_150_ml():
    assert min_lung_ml(_slab(120, 2.5, [])) == MIN_LUNG_ML
    ct = _slab(120, 2.5, [(0.0, 0.0, 12.0, 12.0)])  # 300 mm long, a 4.5 cm^2 air tube: about 135 ml
    with pytest.raises(InputError, match="no lungs"):
        chest_masks(ct)


@pytest.mark.parametrize("air", [
    [(-20.0, 10.0, 40.0, 25.0), (40.0, -20.0, 15.0, 10.0)],  # a gastric air bubble (31 cm^2), bowel gas
    [(-20.0, -30.0, 12.0, 15.0), (20.0, -30.0, 12.0, 15.0), (0.0, -10.0, 5.0, 12.0)],  # maxillary sinuses, nose
    [],  # a water phantom
])
def test_thin_slab_without_lungs_is_refused_in_one_line(air):
    ct = _slab(12, 1.25, air)
    with pytest.raises(InputError, match="no lungs in the field of view") as error:
        chest_masks(ct, "slab.nii.gz")
    message = str(error.value)
    assert message.startswith("slab.nii.gz: ") and "\n" not in message and "15 mm long" in message
