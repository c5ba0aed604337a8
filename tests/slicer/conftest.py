"""Fixtures for tests that run ClinicalSegLib on slicer-core's real MRML classes (no Slicer application).

Each test module starts with ``pytest.importorskip("slicer")``, so the whole
folder is skipped, with that reason, where slicer-core is not installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The Slicer-side package lives outside the clinseg distribution: ClinicalSegLib/ClinicalSegLib.
LIB_DIR = Path(__file__).resolve().parents[2] / "ClinicalSegLib"
if str(LIB_DIR) not in sys.path:
    sys.path.insert(0, str(LIB_DIR))

# The module logics a Slicer session sets on its scene, by the names slicer.modules.<name> uses.
LOGICS = {
    "colors": "vtkSlicerColorLogic",
    "volumes": "vtkSlicerVolumesLogic",
    "segmentations": "vtkSlicerSegmentationsModuleLogic",
    "markups": "vtkSlicerMarkupsLogic",
    "subjecthierarchy": "vtkSlicerSubjectHierarchyModuleLogic",
    "tables": "vtkSlicerTablesLogic",
}


@pytest.fixture
def scene():
    """A fresh ``vtkMRMLScene`` with the application logic and the module logics registered on it.

    Registering the logics is what makes markups storage nodes, default colour
    tables and segmentation conversion rules available, as in Slicer.
    """
    slicer = pytest.importorskip("slicer", reason="slicer-core (headless MRML) is not installed")
    mrml_scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(mrml_scene)
    logics = []  # kept referenced for the scene's lifetime, as the application keeps its module logics
    # The colour logic complains that no Slicer home folder holds colour files; the built-in tables still load.
    import vtk

    warnings = vtk.vtkObject.GetGlobalWarningDisplay()
    vtk.vtkObject.GlobalWarningDisplayOff()
    try:
        for name, class_name in LOGICS.items():
            logic = getattr(slicer, class_name)()
            logic.SetMRMLApplicationLogic(app_logic)
            logic.SetMRMLScene(mrml_scene)
            app_logic.SetModuleLogic(name, logic)
            logics.append(logic)
    finally:
        vtk.vtkObject.SetGlobalWarningDisplay(warnings)
    yield mrml_scene
    mrml_scene.Clear(True)
    del logics
