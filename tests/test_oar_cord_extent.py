"""bench/hn_cord_extent.py: where the spinal cord starts and stops relative to the brainstem, the canal and the scan."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from clinseg.volume import Volume

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from hn_cord_extent import mask_row, z_ends  # noqa: E402


def _masks(cord_k: tuple[int, int], canal_k: tuple[int, int], stem_k: tuple[int, int],
           spacing_z: float = 2.5) -> dict[str, Volume]:
    grid = Volume(np.zeros((40, 8, 8), np.uint8), (1.0, 1.0, spacing_z), (0.0, 0.0, -50.0))
    out = {}
    for name, (lo, hi), width in (("Spinal cord", cord_k, 1), ("Spinal canal", canal_k, 3),
                                  ("Brainstem", stem_k, 2)):
        array = np.zeros(grid.shape, np.uint8)
        array[lo:hi + 1, 4 - width:4 + width, 4 - width:4 + width] = 1
        out[name] = grid.with_array(array)
    return out


def test_z_ends_in_lps_mm():
    grid = Volume(np.zeros((10, 4, 4), np.uint8), (1.0, 1.0, 2.0), (0.0, 0.0, 100.0))
    mask = np.zeros(grid.shape, bool)
    mask[3:6, 1, 1] = True
    assert z_ends(grid, mask) == (106.0, 110.0)
    assert z_ends(grid, np.zeros(grid.shape, bool)) is None


def test_mask_row_training_convention_and_a_cord_that_ends_in_the_canal():
    # The training masks' convention: the cord adjoins the brainstem and runs with the canal to the scan's end.
    row = mask_row(_masks((0, 19), (0, 19), (20, 29)))
    assert row == {"gap_slices": 0, "cord_at_scan_end": 1.0, "canal_below_cord_mm": 0.0, "cord_length_mm": 50.0}
    # A long scan: the canal goes 12 slices (30 mm) below the cord's end, a 2-slice gap under the brainstem.
    row = mask_row(_masks((15, 27), (3, 27), (30, 36)))
    assert row["gap_slices"] == 2 and row["cord_at_scan_end"] == 0.0
    assert row["canal_below_cord_mm"] == pytest.approx(30.0) and row["cord_length_mm"] == pytest.approx(32.5)
    assert mask_row({k: v for k, v in _masks((0, 9), (0, 9), (10, 12)).items() if k != "Brainstem"}) is None


def test_real_training_masks_cord_adjoins_brainstem_and_reaches_scan_end(shared):
    from clinseg.datasets.hn_oar import read_hn_oar

    case = read_hn_oar(shared / "data" / "hn_oar_masks", ("test",))[0]
    row = mask_row(case.load("oncologist", ["Spinal cord", "Spinal canal", "Brainstem"]))
    assert row is not None
    assert row["gap_slices"] == 0 and row["cord_at_scan_end"] == 1.0 and row["canal_below_cord_mm"] == 0.0
