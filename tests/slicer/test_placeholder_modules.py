"""The shared self-test input of the module bases (``taskmodule.SyntheticInput``), loaded as a module loads it.

No module is a placeholder any more (StrokeSeg and OARSeg state their tasks on the shared base), so the
placeholder checks that lived here went with them.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core (headless MRML) is not installed")


def test_synthetic_input_paints_later_ellipsoids_on_top(load_module):
    load_module("OARSeg")
    taskmodule = sys.modules["ClinicalSegLib.taskmodule"]
    synthetic = taskmodule.SyntheticInput(shape=(5, 5, 7), spacing=(1.0, 1.0, 1.0), background=-5, ellipsoids=(
        ((2, 2, 2), (2, 2, 2), 1),  # 33 voxels: |offset|^2 <= 4
        ((2, 2, 2), (0.5, 0.5, 0.5), 2),  # its centre only
    ))
    voxels = synthetic.voxels()
    assert voxels[2, 2, 2] == 2 and np.count_nonzero(voxels == 1) == 32
    assert np.count_nonzero(voxels == -5) == 5 * 5 * 7 - 33
    assert taskmodule.TaskModuleTest.syntheticInput.voxels().shape == (16, 16, 16)
