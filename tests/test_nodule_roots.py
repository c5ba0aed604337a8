"""Vessel stumps (``clinseg.tasks.nodule.roots``): a thick vessel cut by the search region is told from nodules."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from clinseg.tasks.nodule.roots import is_vessel_stump
from clinseg.tasks.nodule.segment import segment_candidate

SPACING_IJK = (1.0, 1.0, 1.0)
WALL_X = 70.0  # the region (lung) is x < 70 mm; beyond it the mediastinum / chest wall


def _scene() -> tuple[np.ndarray, np.ndarray, dict[str, tuple[np.ndarray, float]]]:
    """Lung with: a 12 mm vessel from the wall ending in a 14 mm bulb with thin branches; a 10 mm vessel's stump
    14 mm long; a juxta-pleural nodule;
    an isolated nodule on a thin vessel that runs to the wall. Returns (HU, region, {name: (centre kji, radius)})."""
    shape = (100, 100, 100)
    z, y, x = np.indices(shape).astype(np.float32)
    tissue = x >= WALL_X
    tissue |= ((z - 30) ** 2 + (y - 30) ** 2 <= 6.0 ** 2) & (x >= 45) & (x < WALL_X)  # the root vessel
    tissue |= (z - 30) ** 2 + (y - 30) ** 2 + (x - 45) ** 2 <= 7.0 ** 2  # its end, where it branches
    for dz, dy in ((1, 0), (0, 1), (-1, -1)):  # thin branches running on into the lung
        for t in np.linspace(0, 30, 61):
            c = np.array([30 + dz * t * 0.6, 30 + dy * t * 0.6, 45 - t])
            tissue |= (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= 1.2 ** 2
    tissue |= ((z - 30) ** 2 + (y - 70) ** 2 <= 5.0 ** 2) & (x >= 56)  # a shorter vessel's stump, no branches
    tissue |= (z - 30) ** 2 + (y - 70) ** 2 + (x - 56) ** 2 <= 5.0 ** 2
    tissue |= (z - 70) ** 2 + (y - 70) ** 2 + (x - (WALL_X - 5.3)) ** 2 <= 5.0 ** 2  # juxta-pleural nodule
    tissue |= (z - 70) ** 2 + (y - 30) ** 2 + (x - 35) ** 2 <= 4.0 ** 2  # isolated nodule ...
    tissue |= ((z - 70) ** 2 + (y - 30 - 3.5) ** 2 <= 1.2 ** 2) & (x >= 35)  # ... beside a thin vessel to the wall
    hu = ndimage.gaussian_filter(np.where(tissue, 40.0, -860.0), 0.8)
    hu += np.random.default_rng(0).normal(0, 15, shape)
    spots = {"root": (np.array([30.0, 30.0, 45.0]), 7.0), "stump": (np.array([30.0, 70.0, 60.0]), 5.0),
             "juxta-pleural": (np.array([70.0, 70.0, 64.7]), 5.0),
             "isolated": (np.array([70.0, 30.0, 35.0]), 4.0)}
    return hu.astype(np.float32), x < WALL_X, spots


def test_root_vessel_end_is_flagged_and_nodules_are_not():
    hu, region, spots = _scene()
    flags = {}
    for name, (centre, radius) in spots.items():
        seg = segment_candidate(hu, region, SPACING_IJK, centre, radius)
        assert seg is not None, name
        flags[name] = is_vessel_stump(seg, SPACING_IJK)
    # The root vessel's end lies inside the region (its mask does not reach the edge): not judged. Telling it from a
    # nodule on a thick vessel at the hilum was tried and dropped (docs/nodule.md).
    assert flags == {"root": False, "stump": True, "juxta-pleural": False, "isolated": False}
