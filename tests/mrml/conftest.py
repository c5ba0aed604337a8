"""Fixtures for tests that run ClinicalSegLib on slicer-core's real MRML classes (no Slicer application).

Each test module starts with ``pytest.importorskip("slicer")``, so the whole
folder is skipped, with that reason, where slicer-core is not installed. The folder is not named ``slicer``:
slicer-core's ``slicer`` package extends its path with every ``slicer`` folder on ``sys.path`` and imports each
module there, so ``import slicer`` from another test file imported these test modules (and failed alone).
"""

from __future__ import annotations

import importlib.util
import sys
import types
import unittest
from pathlib import Path

import pytest

# The Slicer-side package lives outside the clinseg distribution: ClinicalSegLib/ClinicalSegLib.
ROOT = Path(__file__).resolve().parents[2]
LIB_DIR = ROOT / "ClinicalSegLib"
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


# -- module files loaded as Slicer loads them ------------------------------------------------------------
# slicer-core has the MRML classes but not Slicer's scripted-module bases (``slicer.ScriptedLoadableModule``)
# nor ``slicer.parameterNodeWrapper``: small stand-ins with Slicer's naming rules take their place for the
# length of a test, so the module files and the shared bases run for real on a headless scene.
def slicer_stand_ins() -> dict[str, types.ModuleType]:
    """The two Slicer-application modules taskmodule imports that slicer-core lacks."""
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent) -> None:
            self.parent = parent
            self.moduleName = self.__class__.__name__

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None) -> None:
            self.moduleName = self.__class__.__name__.removesuffix("Logic")

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None) -> None:
            self.parent = parent
            self.moduleName = self.__class__.__name__.removesuffix("Widget")

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message: str, msec: int = 1000) -> None:
            print(message)

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleWidget,
                ScriptedLoadableModuleTest):
        setattr(scripted, cls.__name__, cls)
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls
    wrapper.Choice = wrapper.Default = wrapper.WithinRange = lambda *args: args
    return {scripted.__name__: scripted, wrapper.__name__: wrapper}


@pytest.fixture
def load_module(monkeypatch):
    """Load ``<Name>/<Name>.py`` under the module name Slicer gives it; undo every import afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # the module's source-checkout bootstrap edits it
    for name, module in slicer_stand_ins().items():
        monkeypatch.setitem(sys.modules, name, module)
    before = set(sys.modules)

    def load(name: str) -> types.ModuleType:
        sys.path.insert(0, str(ROOT / name))  # Slicer puts a module's folder on sys.path: its <Name>Lib imports
        spec = importlib.util.spec_from_file_location(name, ROOT / name / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    yield load
    for name in set(sys.modules) - before:
        module = sys.modules.pop(name)
        package, _, child = name.rpartition(".")
        if getattr(sys.modules.get(package), child, None) is module:
            delattr(sys.modules[package], child)  # else `from package import child` finds the stale one




@pytest.fixture
def app_scene(scene, monkeypatch):
    """``scene`` as the application's ``slicer.mrmlScene``, which module logics use by default."""
    import slicer

    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    return scene
