"""The network path's leak clip: a mask that ran along a vessel is cut back to its nodule even when the blob filter
over-read the nodule's size; a round nodule or a broad-based juxta-pleural one is left whole."""

from __future__ import annotations

import numpy as np

from clinseg.tasks.nodule.candidates import Candidate
from clinseg.tasks.nodule.classical import clip_leak
from clinseg.tasks.nodule.segment import NoduleMask

SPACING_IJK = (0.8, 0.8, 1.25)
SPACING = np.asarray(SPACING_IJK[::-1])
SHAPE = (31, 61, 61)


def _grid(centre_kji: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, y, x) in mm from ``centre_kji``, broadcastable over SHAPE."""
    z, y, x = ((np.arange(n) - c) * s for n, c, s in zip(SHAPE, centre_kji, SPACING))
    return z[:, None, None], y[None, :, None], x[None, None, :]


def _clip(mask: np.ndarray, centre_kji: np.ndarray, radius_mm: float) -> np.ndarray:
    seg = NoduleMask(tuple(slice(0, n) for n in SHAPE), mask, np.ones(SHAPE, bool), -450.0, -850.0, 0.0, 0.0, False)
    cand = Candidate(np.asarray(centre_kji, float), radius_mm / np.sqrt(3.0), 50.0, 0.8)
    return clip_leak(seg, cand, SPACING_IJK).mask


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_leak_along_a_vessel_is_cut_back_despite_an_over_read_blob():
    """A 3.6 mm nodule whose mask ran along the 2 mm vessel it touches, its blob read as 4.33 mm (the filter's
    scale merged it with the vessel): the mask is its equivalent sphere's size only with the vessel in it, so the
    blob's radius alone would not call it a leak (Dice 0.3); the ball inscribed in the nodule does."""
    centre = np.asarray(SHAPE, float) // 2
    z, y, x = _grid(centre)
    nodule = z**2 + y**2 + x**2 <= 1.8**2
    vessel = (z**2 + (x - 2.5) ** 2 <= 1.0) & np.ones_like(y, bool)
    leaked = nodule | vessel
    assert _dice(leaked, nodule) < 0.35
    clipped = _clip(leaked, centre + [0, 0, 0.5], 4.33)
    assert _dice(clipped, nodule) >= 0.75
    assert np.count_nonzero(clipped & ~nodule) <= 0.5 * np.count_nonzero(nodule)


def test_round_nodule_with_an_under_read_blob_is_left_whole():
    centre = np.asarray(SHAPE, float) // 2
    z, y, x = _grid(centre)
    nodule = z**2 + y**2 + x**2 <= 9.0**2
    assert np.array_equal(_clip(nodule, centre + [1, 1, 0], 3.0), nodule)


def test_broad_based_juxta_pleural_nodule_is_left_whole():
    """A lens 11.6 mm across and 4.5 mm high on the chest wall has 1.8 times the equivalent radius of its inscribed
    ball, as a leak has, but it is centred on its blob: no leak."""
    base = np.asarray(SHAPE, float) // 2
    z, y, x = _grid(base)
    nodule = (z**2 + y**2 + x**2 <= 6.0**2) & (x >= 1.5)
    blob = np.argwhere(nodule).mean(axis=0) - [0, 0, 1]  # the blob's centre a voxel nearer the wall
    assert np.array_equal(_clip(nodule, blob, 3.0), nodule)
