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
