"""OARSeg: head and neck organs at risk and clinical target volumes in planning CT."""

import sys
from pathlib import Path

# From a source checkout (this folder added to Slicer's module paths) the shared package and the core
# sit beside the module folder rather than in qt-scripted-modules: make them importable the same way.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "ClinicalSegLib" / "ClinicalSegLib").is_dir():
    sys.path[:0] = [p for p in (str(_checkout / "ClinicalSegLib"), str(_checkout)) if p not in sys.path]

from ClinicalSegLib import taskmodule  # noqa: E402

# Its pipeline is not part of this version yet: the module only states its texts and self-test input.
OARSeg, OARSegWidget, OARSegLogic, OARSegTest = taskmodule.placeholderModuleClasses(
    __name__, taskTitle="Organ-at-risk segmentation", title="Organs at Risk Segmentation",
    helpText="""Contours head and neck organs at risk (brainstem, eyes, optic nerves, parotids,
        mandible) in radiotherapy planning CT with a two-stage 3D U-Net, and the clinical target volume
        where a model for it is installed; results can be exported as DICOM RTSTRUCT.
        This version does not include the organ-at-risk pipeline yet: Apply stays disabled.""",
    acknowledgementText="""Follows an XJTU thesis on head and neck CT segmentation with a two-stage 3D
        U-Net, a Tsinghua thesis on target-volume delineation with noisy labels (Pick-and-Learn, MICCAI
        2019), and the MICCAI 2015 head and neck auto-segmentation challenge.""",
    # A head in HU: skull shell, brain, two eyes and a brainstem.
    syntheticInput=taskmodule.SyntheticInput(
        shape=(16, 48, 48), spacing=(1.0, 1.0, 2.5), background=-1000, ellipsoids=(
            ((8, 24, 24), (10, 22, 19), 900),  # skull
            ((8, 24, 24), (9, 20, 17), 35),  # brain
            ((9, 8, 17), (1.5, 3, 3), 10), ((9, 8, 31), (1.5, 3, 3), 10),  # eyes
            ((5, 28, 24), (4, 3, 3), 30),  # brainstem
        )),
)
