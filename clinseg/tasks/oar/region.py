"""Is this CT of the head and neck? OARSeg refuses a chest or abdomen scan with one clear line.

Evidence, on a 4 mm copy of the scan: a skull is a bone ring (> 300 HU) enclosing at least ``SKULL_AREA_CM2`` of
soft tissue in one axial slice (the vertebral ring around the spinal canal encloses ~2 cm^2, ribs and pelvis no
closed ring); lungs are air-density tissue inside the body outline. A head & neck planning CT shows a skull and
at most its lung apices; a chest CT shows lungs in most slices and no skull.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import InputError
from ...preprocess import padding_as_air, resample
from ...volume import Volume

BONE_HU = 300.0
BODY_HU = -500.0
SKULL_AREA_CM2 = 25.0
LUNG_SLICE_SHARE = 0.15  # a slice "has lungs" when air-density tissue is this share of the body cross-section
CHECK_SPACING_MM = 4.0


@dataclass(frozen=True)
class RegionEvidence:
    skull_area_cm2: float  # largest soft-tissue area a bone ring encloses in one slice
    lung_slices: float  # share of body slices with lungs
    body_slices: int


def region_evidence(ct: Volume) -> RegionEvidence:
    """Skull and lung evidence of a CT in HU (see the module docstring)."""
    from scipy import ndimage

    spacing = tuple(max(s, CHECK_SPACING_MM) for s in ct.spacing)
    small = resample(ct.with_array(padding_as_air(np.asarray(ct.array, np.float32))), spacing, order=1,
                     default_value=-1000.0)
    hu = small.array
    pixel_cm2 = spacing[0] * spacing[1] / 100.0
    body = hu > BODY_HU
    skull = 0.0
    lung_slices = body_slices = 0
    for k in range(hu.shape[0]):
        outline = ndimage.binary_fill_holes(ndimage.binary_opening(body[k]))
        if outline.sum() * pixel_cm2 < 20.0:  # table, arms' edge, air
            continue
        body_slices += 1
        air = outline & (hu[k] < BODY_HU)
        if air.sum() >= LUNG_SLICE_SHARE * outline.sum():
            lung_slices += 1
        bone = ndimage.binary_closing(hu[k] > BONE_HU, iterations=1)
        if bone.sum() == 0:
            continue
        enclosed = ndimage.binary_fill_holes(bone) & ~bone
        skull = max(skull, float(enclosed.sum()) * pixel_cm2)
    return RegionEvidence(skull, lung_slices / max(body_slices, 1), body_slices)


def require_head_and_neck(ct: Volume, subject: str) -> RegionEvidence:
    """Refuse a CT that shows no skull (a chest or abdomen scan given to OARSeg)."""
    evidence = region_evidence(ct)
    if evidence.skull_area_cm2 >= SKULL_AREA_CM2:
        return evidence
    if evidence.lung_slices >= 0.5:
        raise InputError(subject, f"looks like a chest CT (lungs in {100 * evidence.lung_slices:.0f} % of the "
                         "slices, no skull): OARSeg needs a head & neck CT")
    raise InputError(subject, "shows no skull (no bone ring around the brain in any slice): OARSeg needs a head & "
                     "neck CT that includes at least the skull base")
