"""Segment names, colours and standard terminology (DICOM code triplets, mostly SNOMED CT).

Slicer stores a segment's terminology as one ``~``-separated string in the
segment tag ``TerminologyEntry``; ``Segment.terminology_entry`` builds it.
"""

from __future__ import annotations

from dataclasses import dataclass

Code = tuple[str, str, str]  # (coding scheme designator, code value, code meaning)

ANATOMICAL_STRUCTURE: Code = ("SCT", "123037004", "Anatomical Structure")
MORPHOLOGICALLY_ALTERED: Code = ("SCT", "49755003", "Morphologically Altered Structure")
PHYSICAL_OBJECT: Code = ("SCT", "260787004", "Physical object")

CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


@dataclass(frozen=True)
class Segment:
    """One label of a segmentation: value, display name, colour (0-1 RGB) and codes."""

    label: int
    name: str
    color: tuple[float, float, float]
    category: Code = ANATOMICAL_STRUCTURE
    type: Code = ("SCT", "85756007", "Tissue")
    modifier: Code | None = None  # e.g. laterality (SCT 7771000 Left / 24028007 Right)
    # Names of the segments lying inside this one (spinal canal -> spinal cord): in a one-label-per-voxel map their
    # voxels carry their own label, yet belong to this segment too (clinseg.containment gives the full masks).
    contains: tuple[str, ...] = ()

    def terminology_entry(self) -> str:
        def fmt(code: Code | None) -> str:
            return "^".join(code) if code else "^^"

        return "~".join(
            [CONTEXT, fmt(self.category), fmt(self.type), fmt(self.modifier), ANATOMIC_CONTEXT, "^^", "^^"]
        )

    @classmethod
    def from_terminology_entry(cls, label: int, name: str, color: tuple[float, float, float], entry: str) -> Segment:
        parts = entry.split("~")

        def code(i: int) -> Code | None:
            if i >= len(parts):
                return None
            fields = parts[i].split("^")
            return tuple(fields) if len(fields) == 3 and fields[1] else None  # type: ignore[return-value]

        category = code(1) or ANATOMICAL_STRUCTURE
        return cls(label, name, color, category, code(2) or ("SCT", "85756007", "Tissue"), code(3))


LEFT: Code = ("SCT", "7771000", "Left")
RIGHT: Code = ("SCT", "24028007", "Right")

# Codes used by the tasks; colours follow Slicer's generic anatomy colours where one exists.
AIRWAY = Segment(1, "Airway", (0.76, 0.93, 1.0), ANATOMICAL_STRUCTURE, ("SCT", "89187006", "Airway structure"))
TRACHEA = Segment(1, "Trachea", (0.71, 0.89, 1.0), ANATOMICAL_STRUCTURE, ("SCT", "44567001", "Trachea"))
BRONCHUS = Segment(2, "Bronchus", (0.76, 0.93, 1.0), ANATOMICAL_STRUCTURE, ("SCT", "955009", "Bronchus"))
LUNG_LEFT = Segment(1, "Left lung", (0.77, 0.69, 0.59), ANATOMICAL_STRUCTURE, ("SCT", "39607008", "Lung"), LEFT)
LUNG_RIGHT = Segment(2, "Right lung", (0.77, 0.69, 0.59), ANATOMICAL_STRUCTURE, ("SCT", "39607008", "Lung"), RIGHT)
NODULE = Segment(1, "Nodule", (0.89, 0.35, 0.25), MORPHOLOGICALLY_ALTERED, ("SCT", "27925004", "Nodule"))
INFARCT = Segment(1, "Stroke lesion", (0.85, 0.2, 0.2), MORPHOLOGICALLY_ALTERED, ("SCT", "55641003", "Infarct"))

# --- head & neck organs at risk (OARSeg) ---------------------------------------------------------------------------
# Label values equal those of the head & neck phantoms (clinseg.phantoms.hn_anatomy), so a phantom's label map, a
# trained model's output channel and a segment here agree. SNOMED CT codes; the optic chiasm, cochlea and spinal
# canal codes were not checked against a published list (the others are the usual DICOM anatomy codes).
# Colours: no standard fixes them; these follow planning-system habits (cord yellow, brainstem magenta, parotids
# green, globes blue, lenses cyan, optic structures orange, cochleae pink, mandible bone white) and keep each
# left/right pair a shade apart.
HN_CODES: dict[str, Code] = {
    "Brain": ("SCT", "12738006", "Brain"),
    "Brainstem": ("SCT", "15926001", "Brainstem"),
    "Spinal cord": ("SCT", "2748008", "Spinal cord"),
    "Spinal canal": ("SCT", "61843000", "Spinal canal"),
    "Mandible": ("SCT", "91609006", "Mandible"),
    "Eye": ("SCT", "81745001", "Eye"),
    "Lens": ("SCT", "78076003", "Lens of eye"),
    "Optic nerve": ("SCT", "18234004", "Optic nerve"),
    "Optic chiasm": ("SCT", "244453006", "Optic chiasm"),
    "Parotid": ("SCT", "45289007", "Parotid gland"),
    "Submandibular": ("SCT", "54019009", "Submandibular gland"),
    "Cochlea": ("SCT", "80169004", "Cochlea"),
    "Lacrimal": ("SCT", "13561001", "Lacrimal gland"),
    "Lung": ("SCT", "39607008", "Lung"),
}


def _hn(label: int, name: str, color: tuple[float, float, float]) -> Segment:
    base, _, side = name.rpartition(" ")
    if side in ("L", "R"):
        return Segment(label, name, color, ANATOMICAL_STRUCTURE, HN_CODES[base], LEFT if side == "L" else RIGHT)
    return Segment(label, name, color, ANATOMICAL_STRUCTURE, HN_CODES[name])


HN_ORGANS: tuple[Segment, ...] = (
    _hn(1, "Brain", (0.98, 0.80, 0.80)),
    _hn(2, "Brainstem", (0.85, 0.20, 0.75)),
    _hn(3, "Spinal cord", (1.00, 0.90, 0.00)),
    _hn(4, "Spinal canal", (0.60, 0.85, 1.00)),
    _hn(5, "Mandible", (0.95, 0.93, 0.85)),
    _hn(6, "Eye L", (0.25, 0.50, 1.00)),
    _hn(7, "Eye R", (0.15, 0.35, 0.90)),
    _hn(8, "Lens L", (0.40, 1.00, 1.00)),
    _hn(9, "Lens R", (0.20, 0.85, 0.90)),
    _hn(10, "Optic nerve L", (1.00, 0.60, 0.10)),
    _hn(11, "Optic nerve R", (0.90, 0.50, 0.00)),
    _hn(12, "Optic chiasm", (1.00, 0.35, 0.20)),
    _hn(13, "Parotid L", (0.30, 0.85, 0.30)),
    _hn(14, "Parotid R", (0.10, 0.65, 0.15)),
    _hn(15, "Submandibular L", (0.65, 0.40, 0.90)),
    _hn(16, "Submandibular R", (0.50, 0.25, 0.80)),
    _hn(17, "Cochlea L", (1.00, 0.50, 0.70)),
    _hn(18, "Cochlea R", (0.90, 0.35, 0.60)),
    _hn(19, "Lacrimal L", (0.30, 0.90, 0.75)),
    _hn(20, "Lacrimal R", (0.15, 0.75, 0.60)),
    _hn(21, "Lung L", (0.55, 0.75, 0.95)),
    _hn(22, "Lung R", (0.45, 0.65, 0.90)),
)
NEOPLASM: Code = ("SCT", "108369006", "Neoplasm")
CTV = Segment(23, "CTV", (1.00, 0.55, 0.00), MORPHOLOGICALLY_ALTERED, NEOPLASM)
