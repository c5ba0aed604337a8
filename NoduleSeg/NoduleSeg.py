"""NoduleSeg: lung nodule detection, false-positive reduction and segmentation in chest CT."""

import sys
from pathlib import Path

# From a source checkout (this folder added to Slicer's module paths) the shared package and the core
# sit beside the module folder rather than in qt-scripted-modules: make them importable the same way.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "ClinicalSegLib" / "ClinicalSegLib").is_dir():
    sys.path[:0] = [p for p in (str(_checkout / "ClinicalSegLib"), str(_checkout)) if p not in sys.path]

from ClinicalSegLib import taskmodule  # noqa: E402

# Its pipeline is not part of this version yet: the module only states its texts and self-test input.
NoduleSeg, NoduleSegWidget, NoduleSegLogic, NoduleSegTest = taskmodule.placeholderModuleClasses(
    __name__, taskTitle="Lung nodule segmentation", title="Nodule Segmentation",
    helpText="""Detects lung nodules in chest CT, removes false positives and segments each nodule,
        giving one segment and one table row (position, diameter, volume, score) per nodule. A nodule can
        be handed to Airway Segmentation as a route target.
        This version does not include the nodule pipeline yet: Apply stays disabled.""",
    acknowledgementText="""Follows a NoduleNet-style multi-task detector (Tang et al., MICCAI 2019),
        implemented from its description, with LIDC-IDRI as the reference data set.""",
    # Lung parenchyma in HU inside a body, with one solid 6 mm nodule.
    syntheticInput=taskmodule.SyntheticInput(
        shape=(20, 48, 48), spacing=(0.7, 0.7, 1.25), background=-1000, ellipsoids=(
            ((10, 24, 24), (25, 22, 23), 30),  # body
            ((10, 24, 24), (18, 16, 18), -860),  # lungs
            ((10, 20, 28), (2.4, 4.3, 4.3), 20),  # nodule
        )),
)
