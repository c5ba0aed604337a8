"""StrokeSeg: ischemic stroke lesions in brain MRI."""

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

TASK_TITLE = "Stroke lesion segmentation"


class StrokeSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        taskmodule.describeModule(
            self.parent,
            title="Stroke Lesion Segmentation",
            helpText=(
                "Segments stroke lesions in brain MRI (T1-weighted for chronic lesions; DWI and ADC for acute "
                "ones) and reports lesion count and volume. "
                "This version does not include the stroke pipeline yet: Apply stays disabled."
            ),
            acknowledgementText=(
                "Follows an Anhui University thesis on stroke lesion segmentation (D-UNet, AGMR-Net, TSRL-Net) "
                "with the ATLAS and ISLES data sets as references."
            ),
        )


class StrokeSegLogic(taskmodule.TaskModuleLogic):
    taskTitle = TASK_TITLE


class StrokeSegWidget(taskmodule.TaskModuleWidget):
    logicClass = StrokeSegLogic


class StrokeSegTest(taskmodule.TaskModuleTest):
    logicClass = StrokeSegLogic

    def makeVoxels(self):
        """A T1-like brain: background 0, tissue 600, ventricles 200 and one dark lesion."""
        shape = (24, 40, 32)
        voxels = np.zeros(shape, dtype=np.int16)
        voxels[taskmodule.ellipsoidMask(shape, (12, 20, 16), (11, 18, 14))] = 600
        for side in (13, 19):
            voxels[taskmodule.ellipsoidMask(shape, (13, 20, side), (3, 6, 1.5))] = 200
        voxels[taskmodule.ellipsoidMask(shape, (10, 12, 9), (3, 3, 3))] = 300
        return voxels
