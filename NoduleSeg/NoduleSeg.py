"""NoduleSeg: lung nodule detection, false-positive reduction and segmentation in chest CT."""

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

TASK_TITLE = "Lung nodule segmentation"


class NoduleSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        taskmodule.describeModule(
            self.parent,
            title="Nodule Segmentation",
            helpText=(
                "Detects lung nodules in chest CT, removes false positives and segments each nodule, giving one "
                "segment and one table row (position, diameter, volume, score) per nodule. A nodule can be handed "
                "to Airway Segmentation as a route target. "
                "This version does not include the nodule pipeline yet: Apply stays disabled."
            ),
            acknowledgementText=(
                "Follows a NoduleNet-style multi-task detector (Tang et al., MICCAI 2019), implemented from its "
                "description, with LIDC-IDRI as the reference data set."
            ),
        )


class NoduleSegLogic(taskmodule.TaskModuleLogic):
    taskTitle = TASK_TITLE


class NoduleSegWidget(taskmodule.TaskModuleWidget):
    logicClass = NoduleSegLogic


class NoduleSegTest(taskmodule.TaskModuleTest):
    logicClass = NoduleSegLogic
    spacing = (0.7, 0.7, 1.25)

    def makeVoxels(self):
        """Lung parenchyma in HU inside a body, with one solid 6 mm nodule."""
        shape = (20, 48, 48)
        voxels = np.full(shape, -1000, dtype=np.int16)
        voxels[taskmodule.ellipsoidMask(shape, (10, 24, 24), (25, 22, 23))] = 30
        voxels[taskmodule.ellipsoidMask(shape, (10, 24, 24), (18, 16, 18))] = -860
        voxels[taskmodule.ellipsoidMask(shape, (10, 20, 28), (2.4, 4.3, 4.3))] = 20
        return voxels
