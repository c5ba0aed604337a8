"""The ATM'22 baseline (trained on real chest CT only) finds the airway of a demo phantom around the carina.

A small version of ``bench/phantom_realism.py``: one held-out demo-preset phantom, one 128x160x160 crop
(4 network windows). Measured on seed 1000 when written: raw Dice 0.731, precision 0.996 after the largest
component, whose Dice is 0.415 against the lumen label and 0.265 against lumen + wall. Thresholds are those
minus a margin.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers_airway import load_bench

from clinseg.phantoms import generate_chest


def test_baseline_trained_on_real_ct_segments_the_phantom_airway(shared):
    weights = shared / "models" / "atm22_baseline" / "weight.pth"
    if not weights.is_file():
        pytest.skip("ATM'22 baseline weights absent from the shared folder")
    bench = load_bench("phantom_realism")
    ph = generate_chest(1000, preset="demo")
    r = bench.measure(ph, bench.load_baseline(weights))
    assert r["box"][0].stop - r["box"][0].start == 128
    assert r["raw_dice"] > 0.65
    assert r["precision"] > 0.95  # no false structure as large as the airway
    # The label is the lumen, as in ATM'22: the network trained on ATM'22 labels agrees far less with lumen + wall.
    largest = r["pred"]
    assert r["dice_vs_lumen_wall"] < r["dice"]
    # False positives sit on the airway's own wall or next to it, not on vessels, gas or the body outline.
    fp = r["fp_raw"]
    near = fp.get("airway wall", 0) + fp.get("next to airway", 0)
    assert near >= 0.6 * sum(fp.values())
    assert np.count_nonzero(largest) > 1000
