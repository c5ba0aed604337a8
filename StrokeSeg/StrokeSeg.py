"""StrokeSeg: ischemic stroke lesions in brain MRI."""

import sys
from pathlib import Path

# From a source checkout (this folder added to Slicer's module paths) the shared package and the core
# sit beside the module folder rather than in qt-scripted-modules: make them importable the same way.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "ClinicalSegLib" / "ClinicalSegLib").is_dir():
    sys.path[:0] = [p for p in (str(_checkout / "ClinicalSegLib"), str(_checkout)) if p not in sys.path]

from ClinicalSegLib import taskmodule  # noqa: E402

# Its pipeline is not part of this version yet: the module only states its texts and self-test input.
StrokeSeg, StrokeSegWidget, StrokeSegLogic, StrokeSegTest = taskmodule.placeholderModuleClasses(
    __name__, taskTitle="Stroke lesion segmentation", title="Stroke Lesion Segmentation",
    helpText="""Segments stroke lesions in brain MRI (T1-weighted for chronic lesions; DWI and ADC for
        acute ones) and reports lesion count and volume.
        This version does not include the stroke pipeline yet: Apply stays disabled.""",
    acknowledgementText="""Follows an Anhui University thesis on stroke lesion segmentation (D-UNet,
        AGMR-Net, TSRL-Net) with the ATLAS and ISLES data sets as references.""",
    # A T1-like brain: background 0, tissue 600, ventricles 200 and one dark lesion.
    syntheticInput=taskmodule.SyntheticInput(
        shape=(24, 40, 32), spacing=(1.0, 1.0, 1.0), background=0, ellipsoids=(
            ((12, 20, 16), (11, 18, 14), 600),  # brain
            ((13, 20, 13), (3, 6, 1.5), 200), ((13, 20, 19), (3, 6, 1.5), 200),  # ventricles
            ((10, 12, 9), (3, 3, 3), 300),  # lesion
        )),
)
