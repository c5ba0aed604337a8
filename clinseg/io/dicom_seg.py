"""DICOM Segmentation (SEG) export through highdicom: a label map on a CT series' grid -> one binary SEG object.

Each segment becomes one SEG segment with its name, its SNOMED category / type codes (``clinseg.terminology``)
and its colour; frames reference the CT slices they lie on (highdicom matches the geometry of the source
images, which must be the series the label map was read from). Optional: needs ``highdicom``
(``pip install 'clinseg[rt]'``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..containment import SegmentMasks
from ..errors import InputError
from ..terminology import Segment
from ..volume import Volume, label_of
from .atomic import atomic_write


def _require_highdicom():
    try:
        import highdicom
    except ImportError:
        raise InputError("highdicom", "not installed: pip install 'clinseg[rt]' (needed for DICOM SEG)") from None
    return highdicom


def series_datasets(folder: str | Path, reference: Volume, series_uid: str) -> list:
    """The CT series' datasets in the order of ``reference``'s slices ``k`` (pixel data included)."""
    import pydicom

    folder = Path(folder)
    by_k: dict[int, object] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
        except Exception:  # noqa: BLE001 - not DICOM: skip it
            continue
        if str(ds.get("SeriesInstanceUID", "")) != series_uid or "ImagePositionPatient" not in ds:
            continue
        k = float(reference.physical_to_index(np.asarray(ds.ImagePositionPatient, float))[2])
        by_k[int(round(k))] = ds
    if sorted(by_k) != list(range(reference.shape[0])):
        raise InputError(label_of(folder), "the CT series does not cover every slice of the segmentation's grid")
    return [by_k[k] for k in range(reference.shape[0])]


def write_dicom_seg(path: str | Path, labelmap: Volume, segments: list[Segment], source: list,
                    overwrite: bool = False, series_description: str = "ClinicalSeg segmentation") -> Path:
    """Write ``labelmap`` (on the grid of ``source``, the CT datasets in slice order) as a binary DICOM SEG; a
    segment that contains others (``Segment.contains``) gets its full extent (SEG segments may overlap)."""
    hd = _require_highdicom()
    from pydicom.sr.coding import Code
    from pydicom.uid import generate_uid

    from .. import __version__

    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(label_of(path), "exists (choose another name or pass --overwrite)")
    if len(source) != labelmap.shape[0]:
        raise InputError(label_of(path), f"{len(source)} CT slices for a {labelmap.shape[0]}-slice label map")
    masks = SegmentMasks(labelmap.array, segments)
    present = [s for s in segments if np.any(labelmap.array == s.label)]
    if not present:
        raise InputError(label_of(path), "the segmentation is empty: nothing to export")
    # (frames, rows, columns, segments): frame k is CT slice k, rows j, columns i.
    pixels = np.stack([masks[s.name] for s in present], axis=-1).astype(np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(name="ClinicalSeg", version=__version__,
                                                   family=Code("123109", "DCM", "Artificial Intelligence"))
    descriptions = []
    for number, s in enumerate(present, start=1):
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=s.name[:64],
            segmented_property_category=Code(s.category[1], s.category[0], s.category[2]),
            segmented_property_type=Code(s.type[1], s.type[0], s.type[2]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*(int(round(255 * c)) for c in s.color))))
    seg = hd.seg.Segmentation(
        source_images=source, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=300,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="ClinicalSeg",
        manufacturer_model_name="clinseg", software_versions=__version__, device_serial_number="0",
        series_description=series_description[:64])
    with atomic_write(path) as tmp:
        seg.save_as(tmp)
    return path
