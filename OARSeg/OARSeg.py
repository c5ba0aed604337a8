"""OARSeg: head and neck organs at risk and clinical target volumes in planning CT."""

import sys
from pathlib import Path

import numpy as np

# From a source checkout (this folder added to Slicer's module paths) the shared package and the core
# sit beside the module folder rather than in qt-scripted-modules: make them importable the same way.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "ClinicalSegLib" / "ClinicalSegLib").is_dir():
    sys.path[:0] = [p for p in (str(_checkout / "ClinicalSegLib"), str(_checkout)) if p not in sys.path]

from slicer.ScriptedLoadableModule import ScriptedLoadableModule  # noqa: E402

from ClinicalSegLib import taskmodule  # noqa: E402

TASK_TITLE = "Organ-at-risk segmentation"


class OARSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        taskmodule.describeModule(
            self.parent,
            title="Organs at Risk Segmentation",
            helpText=(
                "Contours head and neck organs at risk (brainstem, eyes, optic nerves, parotids, mandible) in "
                "radiotherapy planning CT with a two-stage 3D U-Net, and the clinical target volume where a model "
                "for it is installed; results can be exported as DICOM RTSTRUCT. "
                "This version does not include the organ-at-risk pipeline yet: Apply stays disabled."
            ),
            acknowledgementText=(
                "Follows an XJTU thesis on head and neck CT segmentation with a two-stage 3D U-Net, a Tsinghua "
                "thesis on target-volume delineation with noisy labels (Pick-and-Learn, MICCAI 2019), and the "
                "MICCAI 2015 head and neck auto-segmentation challenge."
            ),
        )


class OARSegLogic(taskmodule.TaskModuleLogic):
    taskTitle = TASK_TITLE


class OARSegWidget(taskmodule.TaskModuleWidget):
    logicClass = OARSegLogic


class OARSegTest(taskmodule.TaskModuleTest):
    logicClass = OARSegLogic
    spacing = (1.0, 1.0, 2.5)

    def makeVoxels(self):
        """A head in HU: skull shell, brain, two eyes and a brainstem."""
        shape = (16, 48, 48)
        voxels = np.full(shape, -1000, dtype=np.int16)
        voxels[taskmodule.ellipsoidMask(shape, (8, 24, 24), (10, 22, 19))] = 900
        voxels[taskmodule.ellipsoidMask(shape, (8, 24, 24), (9, 20, 17))] = 35
        for side in (17, 31):
            voxels[taskmodule.ellipsoidMask(shape, (9, 8, side), (1.5, 3, 3))] = 10
        voxels[taskmodule.ellipsoidMask(shape, (5, 28, 24), (4, 3, 3))] = 30
        return voxels
