"""AirwaySeg: airway tree from chest CT, branch table and bronchoscope route planning."""

import sys
from pathlib import Path
from typing import Annotated

import numpy as np

# From a source checkout (this folder added to Slicer's module paths) the shared package and the core
# sit beside the module folder rather than in qt-scripted-modules: make them importable the same way.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "ClinicalSegLib" / "ClinicalSegLib").is_dir():
    sys.path[:0] = [p for p in (str(_checkout / "ClinicalSegLib"), str(_checkout)) if p not in sys.path]

from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode  # noqa: E402
from slicer.parameterNodeWrapper import Choice, Default, WithinRange, parameterNodeWrapper  # noqa: E402
from slicer.ScriptedLoadableModule import ScriptedLoadableModule  # noqa: E402

from ClinicalSegLib import taskmodule, widgets  # noqa: E402

TASK_TITLE = "Airway segmentation"


class AirwaySeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        taskmodule.describeModule(
            self.parent,
            title="Airway Segmentation",
            helpText=(
                "Segments the bronchial airway tree (lumen and wall) in non-contrast chest CT, then derives its "
                "centerlines, a table of branches with generation and length, and a route from the trachea to a "
                "target point (for example a peripheral nodule) that a bronchoscope of the given diameter can "
                "follow. The segmentation can be edited in Segment Editor and the tree rebuilt from it. "
                "This version does not include the airway pipeline yet: the panel shows its controls, disabled."
            ),
            acknowledgementText=(
                "Task definition and evaluation follow the MICCAI 2022 Airway Tree Modeling challenge (ATM'22) "
                "and an SJTU thesis on bronchial segmentation in non-contrast lung CT (3D U-Net with attention "
                "distillation and feature re-learning)."
            ),
        )


@parameterNodeWrapper
class AirwaySegParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    device: Annotated[str, Choice(list(widgets.DEVICE_CHOICES)), Default(widgets.DEFAULT_DEVICE)]
    outputSegmentation: vtkMRMLSegmentationNode
    targetPoint: vtkMRMLMarkupsFiducialNode
    # Outer diameter of the bronchoscope: branches narrower than this are not followed by the route.
    scopeDiameter: Annotated[float, WithinRange(1.0, 10.0), Default(4.0)]


class AirwaySegLogic(taskmodule.TaskModuleLogic):
    taskTitle = TASK_TITLE
    parameterNodeClass = AirwaySegParameterNode


class AirwaySegWidget(taskmodule.TaskModuleWidget):
    logicClass = AirwaySegLogic

    def setup(self):
        super().setup()
        self.ui.modelInfoLabel.text = "No airway model is included in this version."
        widgets.setWidgetsEnabled(
            [self.ui.modelSelector, self.ui.show3DButton, self.ui.planRouteButton,
             self.ui.updateFromSegmentationButton, self.ui.branchTableView],
            False,
            toolTip=widgets.pipeline_unavailable_message(TASK_TITLE),
        )


class AirwaySegTest(taskmodule.TaskModuleTest):
    logicClass = AirwaySegLogic
    spacing = (0.8, 0.8, 1.0)

    def makeVoxels(self):
        """A chest slab in HU: body, two lungs, and an air-filled trachea splitting into two main bronchi."""
        shape = (24, 48, 48)
        voxels = np.full(shape, -1000, dtype=np.int16)
        voxels[taskmodule.ellipsoidMask(shape, (12, 24, 24), (30, 20, 23))] = 40
        for side in (13, 35):
            voxels[taskmodule.ellipsoidMask(shape, (12, 24, side), (20, 14, 9))] = -850
        k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
        trachea = (k >= 12) & ((j - 24) ** 2 + (i - 24) ** 2 <= 4)
        left = (k < 12) & (k >= 4) & ((j - 24) ** 2 + (i - (24 - (12 - k))) ** 2 <= 2)
        right = (k < 12) & (k >= 4) & ((j - 24) ** 2 + (i - (24 + (12 - k))) ** 2 <= 2)
        voxels[trachea | left | right] = -1000
        return voxels
