"""Widget, logic and self-test behaviour shared by the four ClinicalSeg modules (Slicer only).

Slicer finds a module's ``<Name>``, ``<Name>Widget``, ``<Name>Logic`` and ``<Name>Test`` classes by name in
its module file. A module with a pipeline (AirwaySeg) defines them as subclasses of these bases, adding
what is particular to its task: parameters, extra widgets, its own self-test. A module whose pipeline is
not shipped yet states only its data (titles, texts, self-test input) and gets the four classes from
``placeholderModuleClasses``.

Modules import this file as a module (``from ClinicalSegLib import taskmodule``), not its classes:
Slicer's unit-test runner collects every TestCase bound to a name in the module file, so an imported
``TaskModuleTest`` would run once more on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, Default, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from .widgets import (
    DEFAULT_DEVICE,
    DEVICE_CHOICES,
    PipelineUnavailableError,
    device_argument,
    pipeline_unavailable_message,
    showPipelineUnavailable,
)

MODULE_CATEGORY = "Segmentation.ClinicalSeg"
MODULE_CONTRIBUTORS = ["ClinicalSeg team"]
SLICER_ACKNOWLEDGEMENT = (
    " Built on 3D Slicer (https://www.slicer.org) and its PyTorch extension (SlicerPyTorch)."
)


def describeModule(parent, title: str, helpText: str, acknowledgementText: str) -> None:
    """Set the metadata every ClinicalSeg module shares (category, contributors) plus its own texts."""
    parent.title = title
    parent.categories = [MODULE_CATEGORY]
    parent.dependencies = []
    parent.contributors = list(MODULE_CONTRIBUTORS)
    parent.helpText = helpText
    parent.acknowledgementText = acknowledgementText + SLICER_ACKNOWLEDGEMENT


@parameterNodeWrapper
class TaskParameterNode:
    """Parameters of a module that segments one input volume into one segmentation."""

    inputVolume: vtkMRMLScalarVolumeNode
    device: Annotated[str, Choice(list(DEVICE_CHOICES)), Default(DEFAULT_DEVICE)]
    outputSegmentation: vtkMRMLSegmentationNode


class TaskModuleLogic(ScriptedLoadableModuleLogic):
    """Runs a task's pipeline; until the pipeline ships, ``process`` says so instead of faking a result."""

    taskTitle = ""
    parameterNodeClass = TaskParameterNode

    def getParameterNode(self):
        return self.parameterNodeClass(super().getParameterNode())

    def process(self, inputVolume, outputSegmentation=None, device: str = DEFAULT_DEVICE) -> None:
        if inputVolume is None or inputVolume.GetImageData() is None:
            raise ValueError("Select an input volume with image data.")
        device_argument(device)  # an unknown device choice is an error whatever the pipeline
        raise PipelineUnavailableError(self.taskTitle)


class TaskModuleWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Loads ``Resources/UI/<Name>.ui``, binds it to the parameter node, keeps it in step with the scene."""

    logicClass = TaskModuleLogic

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath(f"UI/{self.moduleName}.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logicClass()

        self.ui.progressBar.visible = False
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        showPipelineUnavailable(self.logic.taskTitle, self.ui.statusLabel, self.ui.applyButton)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode is not None and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume:
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode is not None and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
        self._parameterNode = parameterNode
        if self._parameterNode is not None:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    def onApplyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(f"{self.logic.taskTitle} failed.", waitCursor=True):
            node = self._parameterNode
            self.logic.process(node.inputVolume, node.outputSegmentation, node.device)


def ellipsoidMask(shape: tuple[int, int, int], center: tuple[float, float, float],
                  radii: tuple[float, float, float]) -> np.ndarray:
    """Boolean [k, j, i] mask of an axis-aligned ellipsoid (voxel units), for synthetic test inputs."""
    k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return ((k - center[0]) / radii[0]) ** 2 + ((j - center[1]) / radii[1]) ** 2 + \
        ((i - center[2]) / radii[2]) ** 2 <= 1.0


Ellipsoid = tuple[tuple[float, float, float], tuple[float, float, float], int]  # center, radii (voxels), value


@dataclass(frozen=True)
class SyntheticInput:
    """Input volume of a self-test: ``background`` with ellipsoids painted over it, later ones on top."""

    shape: tuple[int, int, int]  # [k, j, i]
    spacing: tuple[float, float, float]  # mm, i j k order
    background: int
    ellipsoids: tuple[Ellipsoid, ...] = ()

    def voxels(self) -> np.ndarray:
        voxels = np.full(self.shape, self.background, dtype=np.int16)
        for center, radii, value in self.ellipsoids:
            voxels[ellipsoidMask(self.shape, center, radii)] = value
        return voxels


class TaskModuleTest(ScriptedLoadableModuleTest):
    """Self-test: build a synthetic input in the scene and run the module's logic on it."""

    logicClass = TaskModuleLogic
    syntheticInput = SyntheticInput(shape=(16, 16, 16), spacing=(1.0, 1.0, 1.0), background=0)

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_LogicOnSyntheticInput()

    def test_LogicOnSyntheticInput(self) -> None:
        self.delayDisplay("Creating a synthetic input volume")
        voxels = self.syntheticInput.voxels()
        inputVolume = slicer.util.addVolumeFromArray(voxels, name=f"{self.__class__.__name__}Input")
        inputVolume.SetSpacing(*self.syntheticInput.spacing)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(inputVolume), voxels)
        outputSegmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")

        logic = self.logicClass()
        parameters = logic.getParameterNode()
        parameters.inputVolume = inputVolume
        parameters.outputSegmentation = outputSegmentation
        parameters.device = "CPU"
        self.assertEqual(parameters.device, "CPU")

        self.delayDisplay("Running the logic")
        with self.assertRaises(PipelineUnavailableError) as raised:
            logic.process(parameters.inputVolume, parameters.outputSegmentation, parameters.device)
        self.assertEqual(str(raised.exception), pipeline_unavailable_message(logic.taskTitle))
        # No pipeline, no segments: nothing may be made up in its place.
        self.assertEqual(outputSegmentation.GetSegmentation().GetNumberOfSegments(), 0)
        with self.assertRaises(ValueError):
            logic.process(inputVolume, outputSegmentation, "TPU")
        self.delayDisplay("Test passed")


def placeholderModuleClasses(moduleName: str, *, taskTitle: str, title: str, helpText: str,
                             acknowledgementText: str, syntheticInput: SyntheticInput) -> tuple[type, type, type, type]:
    """``<Name>``, ``<Name>Widget``, ``<Name>Logic`` and ``<Name>Test`` of a module whose pipeline is not shipped.

    Called from the module file as ``A, AWidget, ALogic, ATest = placeholderModuleClasses(__name__, ...)``.
    The classes carry the file's name and ``__module__``: Slicer derives the module name (and so the
    parameter node) from the class names, and ``ScriptedLoadableModule.runTest`` looks ``<Name>Test`` up
    in the module named by ``__module__``. The texts may be wrapped like docstrings: each run of white
    space becomes one space, as the help panel shows it anyway.
    """
    name = moduleName.rsplit(".", 1)[-1]
    helpText, acknowledgementText = " ".join(helpText.split()), " ".join(acknowledgementText.split())

    def named(suffix: str, base: type, attributes: dict) -> type:
        className = name + suffix
        return type(className, (base,), {"__module__": moduleName, "__qualname__": className, **attributes})

    def describe(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        describeModule(self.parent, title, helpText, acknowledgementText)

    logic = named("Logic", TaskModuleLogic, {"taskTitle": taskTitle})
    return (
        named("", ScriptedLoadableModule, {"__init__": describe}),
        named("Widget", TaskModuleWidget, {"logicClass": logic}),
        logic,
        named("Test", TaskModuleTest, {"logicClass": logic, "syntheticInput": syntheticInput}),
    )
