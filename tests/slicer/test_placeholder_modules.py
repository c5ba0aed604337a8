"""The placeholder modules (OARSeg) loaded from their files as Slicer loads them
(``load_module`` in conftest.py), so the module files and ``taskmodule.placeholderModuleClasses`` run for real.
"""

from __future__ import annotations

import sys
import unittest
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (headless MRML) is not installed")
import vtk  # noqa: E402  (installed with slicer-core)

from clinseg.errors import InputError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDERS = {"OARSeg": "Organ-at-risk segmentation"}


@pytest.mark.parametrize("name", PLACEHOLDERS)
def test_module_file_binds_the_four_classes_slicer_looks_for(name, load_module):
    module = load_module(name)
    taskmodule = sys.modules["ClinicalSegLib.taskmodule"]
    classes = [getattr(module, name + suffix) for suffix in ("", "Widget", "Logic", "Test")]
    assert [(c.__name__, c.__qualname__, c.__module__) for c in classes] == \
        [(name + suffix, name + suffix, name) for suffix in ("", "Widget", "Logic", "Test")]
    moduleClass, widget, logic, test = classes
    assert issubclass(widget, taskmodule.TaskModuleWidget) and widget.logicClass is logic
    assert issubclass(logic, taskmodule.TaskModuleLogic) and logic.task.title == PLACEHOLDERS[name]
    assert not logic.task.available
    assert issubclass(test, taskmodule.TaskModuleTest) and test.logicClass is logic
    # Slicer's unit-test runner collects every TestCase of the module: only the module's own is there.
    collected = unittest.defaultTestLoader.loadTestsFromModule(module)
    assert {type(case) for suite in collected for case in suite} == {test}
    # What ScriptedLoadableModule.runTest does to find the self-test.
    assert getattr(sys.modules[moduleClass.__module__], f"{name}Test") is test
    assert logic().moduleName == name  # the parameter node is the module's own

    parent = SimpleNamespace()
    instance = moduleClass(parent)
    assert instance.parent is parent and parent.categories == [taskmodule.MODULE_CATEGORY]
    assert parent.title.endswith("Segmentation") and parent.contributors == taskmodule.MODULE_CONTRIBUTORS
    assert len(parent.helpText) > 100 and parent.helpText == " ".join(parent.helpText.split())
    assert parent.helpText.endswith("pipeline yet: Apply stays disabled.")
    assert parent.acknowledgementText.endswith(taskmodule.SLICER_ACKNOWLEDGEMENT)
    assert "  " not in parent.acknowledgementText and "\n" not in parent.acknowledgementText


@pytest.mark.parametrize("name", PLACEHOLDERS)
def test_logic_refuses_plainly(name, load_module):
    module = load_module(name)
    widgets = sys.modules["ClinicalSegLib.widgets"]
    logic = getattr(module, f"{name}Logic")()
    volume = slicer.vtkMRMLScalarVolumeNode()
    with pytest.raises(InputError, match="input volume"):
        logic.process(volume)  # no image data
    volume.SetAndObserveImageData(vtk.vtkImageData())
    with pytest.raises(InputError, match="TPU"):
        logic.process(volume, device="TPU")
    with pytest.raises(widgets.PipelineUnavailableError) as raised:
        logic.process(volume, device="CPU")
    assert str(raised.value) == f"{PLACEHOLDERS[name]} pipeline not available yet in this version."


@pytest.mark.parametrize("name", PLACEHOLDERS)
def test_self_test_passes_headless(name, load_module, app_scene):
    """The module's own self-test (what Testing/run_selftests.py runs inside Slicer) on a headless scene."""
    test = getattr(load_module(name), f"{name}Test")()
    test.runTest()
    assert app_scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 1  # its synthetic input


@pytest.mark.parametrize("name", PLACEHOLDERS)
def test_self_test_input_holds_every_structure(name, load_module):
    synthetic = getattr(load_module(name), f"{name}Test").syntheticInput
    voxels = synthetic.voxels()
    assert voxels.shape == synthetic.shape and voxels.dtype == np.int16
    assert len(synthetic.spacing) == 3 and min(synthetic.spacing) > 0
    assert set(np.unique(voxels)) == {synthetic.background, *(value for _c, _r, value in synthetic.ellipsoids)}


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
