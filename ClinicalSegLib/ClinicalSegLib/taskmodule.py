"""Widget, logic and self-test behaviour shared by the four ClinicalSeg modules (Slicer only).

Each module file still defines its own ``<Name>``, ``<Name>Widget``, ``<Name>Logic`` and ``<Name>Test``
classes (Slicer finds them by name); they subclass these bases and add only what is particular to the
task: metadata, parameters, extra widgets, the synthetic input of the self-test.

Modules import this file as a module (``from ClinicalSegLib import taskmodule``), not its classes:
Slicer's unit-test runner collects every TestCase bound to a name in the module file, so an imported
``TaskModuleTest`` would run once more on its own.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, Default, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
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


class TaskModuleTest(ScriptedLoadableModuleTest):
    """Self-test: build a synthetic input in the scene and run the module's logic on it."""

    logicClass = TaskModuleLogic
    spacing = (1.0, 1.0, 1.0)

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_LogicOnSyntheticInput()

    def makeVoxels(self) -> np.ndarray:
        """[k, j, i] voxels of the synthetic input; each module draws its own anatomy."""
        return np.zeros((16, 16, 16), dtype=np.int16)

    def test_LogicOnSyntheticInput(self) -> None:
        self.delayDisplay("Creating a synthetic input volume")
        voxels = self.makeVoxels()
        inputVolume = slicer.util.addVolumeFromArray(voxels, name=f"{self.__class__.__name__}Input")
        inputVolume.SetSpacing(*self.spacing)
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
