"""DICOM RT Structure Sets: contours -> masks on a reference CT grid, and masks -> a new RTSTRUCT.

Contours are closed planar polygons in patient LPS mm, one per axial slice piece. Reading fills each
polygon on its slice (voxel centres inside) and combines the polygons of a slice by XOR, so a contour
drawn inside another is a hole. Writing traces every slice of a mask at the half-voxel iso-line
(``skimage.measure.find_contours``), which puts exactly the mask's voxel centres inside the polygons,
and references the CT series (study, series, frame of reference and each slice's SOP instance).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Volume, label_of
from .atomic import atomic_write

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
STUDY_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"  # "Detached Study Management", as RTSTRUCTs conventionally cite
# RT ROI Interpreted Type (3006,00A4): the standard's defined terms.
ROI_TYPES = ("EXTERNAL", "PTV", "CTV", "GTV", "TREATED_VOLUME", "IRRAD_VOLUME", "OAR", "BOLUS", "AVOIDANCE", "ORGAN",
             "MARKER", "REGISTRATION", "ISOCENTER", "CONTRAST_AGENT", "CAVITY", "BRACHY_CHANNEL", "BRACHY_ACCESSORY",
             "BRACHY_SRC_APP", "BRACHY_CHNL_SHLD", "SUPPORT", "FIXATION", "DOSE_REGION", "CONTROL", "DOSE_MEASUREMENT")
_NAME_TYPES = (("GTV", "GTV"), ("CTV", "CTV"), ("PTV", "PTV"), ("EXTERNAL", "EXTERNAL"), ("BODY", "EXTERNAL"))


def roi_type_for(name: str) -> str:
    """The interpreted type a structure's name implies: names starting GTV / CTV / PTV are targets, Body or
    External the outline, everything else an ORGAN (AVOIDANCE and the rest only when asked for)."""
    upper = name.strip().upper()
    for prefix, kind in _NAME_TYPES:
        if upper.startswith(prefix):
            return kind
    return "ORGAN"


def check_roi_type(name: str, kind: str) -> str:
    """``kind`` upper-cased if it is one of the standard's terms, else a one-line refusal."""
    value = kind.strip().upper()
    if value not in ROI_TYPES:
        raise InputError(name, f"RT ROI Interpreted Type {kind!r} is not a DICOM term (e.g. ORGAN, GTV, CTV, PTV, "
                               "AVOIDANCE, EXTERNAL)")
    return value


@dataclass
class ReferenceSeries:
    """The CT series a structure set is drawn on: UIDs, one SOP instance per slice ``k``, patient data."""

    study_uid: str
    series_uid: str
    frame_uid: str
    instance_uids: list[str]
    sop_class_uid: str = CT_SOP_CLASS
    patient: dict[str, str] = field(default_factory=dict)

    @classmethod
    def synthetic(cls, volume: Volume, patient_id: str = "PHANTOM") -> ReferenceSeries:
        """New UIDs for a volume that has no DICOM series (e.g. a phantom or a NIfTI export)."""
        from pydicom.uid import generate_uid

        return cls(generate_uid(), generate_uid(), generate_uid(), [generate_uid() for _ in range(volume.shape[0])],
                   patient={"PatientID": patient_id, "PatientName": patient_id})

    @classmethod
    def from_dicom(cls, folder: str | Path, reference: Volume, series_uid: str | None = None) -> ReferenceSeries:
        """Read the UIDs of the DICOM series in ``folder`` whose slices make up ``reference``."""
        import pydicom

        folder = Path(folder)
        found: dict[str, list] = {}
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - not DICOM: skip it
                continue
            if "ImagePositionPatient" in ds and "SeriesInstanceUID" in ds:
                found.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
        if not found:
            raise InputError(label_of(folder), "no DICOM image slices found")
        uid = series_uid or max(found, key=lambda u: len(found[u]))
        if uid not in found:
            raise InputError(label_of(folder), f"no series {uid}")
        instances = [""] * reference.shape[0]
        first = found[uid][0]
        for ds in found[uid]:
            k = reference.physical_to_index(np.asarray(ds.ImagePositionPatient, float))[2]
            kk = int(round(float(k)))
            if abs(k - kk) > 0.1 or not 0 <= kk < len(instances):
                raise InputError(label_of(folder), "series slices do not match the reference volume's grid")
            instances[kk] = str(ds.SOPInstanceUID)
        if not all(instances):
            raise InputError(label_of(folder), "the series lacks some slices of the reference volume")
        keys = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
                "AccessionNumber", "ReferringPhysicianName")
        patient = {k: str(first.get(k, "")) for k in keys}
        return cls(str(first.StudyInstanceUID), uid, str(first.FrameOfReferenceUID), instances,
                   str(first.SOPClassUID), patient)


def _slice_contours(mask2d: np.ndarray) -> list[np.ndarray]:
    """Closed polygons ``(N, 2)`` in ``(j, i)`` index units around the voxels of one slice."""
    from skimage.measure import approximate_polygon, find_contours

    padded = np.pad(mask2d.astype(np.float32), 1)
    out = []
    for c in find_contours(padded, 0.5):
        c = approximate_polygon(c, tolerance=0.05) - 1.0
        if len(c) > 3:
            out.append(c[:-1] if np.allclose(c[0], c[-1]) else c)
    return out


def write_rtstruct(path: str | Path, masks: dict[str, np.ndarray], reference: Volume, series: ReferenceSeries,
                   colors: dict[str, tuple[float, float, float]] | None = None,
                   roi_types: dict[str, str] | None = None, label: str = "ClinSeg", overwrite: bool = True) -> Path:
    """Write an RTSTRUCT with one ROI per mask (masks on ``reference``'s grid; colours 0-1 RGB), atomically.

    ``roi_types`` gives RTROIInterpretedType per name (default: ``roi_type_for(name)``, so GTV / CTV / PTV
    names are targets and the rest ORGAN); unknown terms are refused. ``overwrite=False`` refuses an
    existing ``path``.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if len(series.instance_uids) != reference.shape[0]:
        raise InputError("series", f"{len(series.instance_uids)} slice UIDs for {reference.shape[0]} slices")
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(label_of(path), "exists (choose another name or pass --overwrite)")
    types = {name: check_roi_type(name, (roi_types or {}).get(name) or roi_type_for(name)) for name in masks}
    now = _dt.datetime.now()
    uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: structure names are free text
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_SOP_CLASS, uid
    ds.Modality = "RTSTRUCT"
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber",
                "ReferringPhysicianName"):
        setattr(ds, key, series.patient.get(key, ""))
    ds.StudyDate = series.patient.get("StudyDate") or now.strftime("%Y%m%d")
    ds.StudyTime = series.patient.get("StudyTime") or now.strftime("%H%M%S")
    # A new series in the CT's study; the frame of reference is cited per ROI and in the referenced-frame
    # sequence (the RT Structure Set IOD has no Frame of Reference module of its own).
    ds.StudyInstanceUID, ds.SeriesInstanceUID = series.study_uid, generate_uid()
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Manufacturer, ds.OperatorsName = "ClinicalSeg", ""
    ds.StructureSetLabel = label[:16]
    ds.StructureSetDate, ds.StructureSetTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")

    def image_ref(k: int) -> Dataset:
        item = Dataset()
        item.ReferencedSOPClassUID = series.sop_class_uid
        item.ReferencedSOPInstanceUID = series.instance_uids[k]
        return item

    ref_series = Dataset()
    ref_series.SeriesInstanceUID = series.series_uid
    ref_series.ContourImageSequence = Sequence([image_ref(k) for k in range(reference.shape[0])])
    ref_study = Dataset()
    ref_study.ReferencedSOPClassUID, ref_study.ReferencedSOPInstanceUID = STUDY_SOP_CLASS, series.study_uid
    ref_study.RTReferencedSeriesSequence = Sequence([ref_series])
    frame = Dataset()
    frame.FrameOfReferenceUID = series.frame_uid
    frame.RTReferencedStudySequence = Sequence([ref_study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])

    rois, contours, observations = [], [], []
    for number, (name, mask) in enumerate(masks.items(), start=1):
        mask = np.asarray(mask.array if isinstance(mask, Volume) else mask, bool)
        if mask.shape != reference.shape:
            raise InputError(name, f"mask shape {mask.shape} differs from the reference {reference.shape}")
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID = number, series.frame_uid
        roi.ROIName, roi.ROIGenerationAlgorithm = name, "AUTOMATIC"
        rois.append(roi)
        items = []
        for k in np.flatnonzero(mask.any(axis=(1, 2))):
            for poly in _slice_contours(mask[k]):
                ijk = np.column_stack([poly[:, 1], poly[:, 0], np.full(len(poly), float(k))])
                lps = reference.index_to_physical(ijk)
                c = Dataset()
                c.ContourNumber = len(items) + 1
                c.ContourImageSequence = Sequence([image_ref(int(k))])
                c.ContourGeometricType = "CLOSED_PLANAR"
                c.NumberOfContourPoints = len(lps)
                c.ContourData = [f"{v:.3f}" for v in lps.ravel()]
                items.append(c)
        rc = Dataset()
        rgb = (colors or {}).get(name, (1.0, 0.0, 0.0))
        rc.ROIDisplayColor = [int(round(255 * v)) for v in rgb]
        rc.ReferencedROINumber = number
        rc.ContourSequence = Sequence(items)
        contours.append(rc)
        obs = Dataset()
        obs.ObservationNumber, obs.ReferencedROINumber = number, number
        obs.RTROIInterpretedType, obs.ROIInterpreter = types[name], ""
        observations.append(obs)
    ds.StructureSetROISequence = Sequence(rois)
    ds.ROIContourSequence = Sequence(contours)
    ds.RTROIObservationsSequence = Sequence(observations)
    with atomic_write(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


@dataclass
class Structure:
    name: str
    mask: Volume  # uint8 on the reference grid
    color: tuple[float, float, float]
    roi_type: str


def read_rtstruct(path: str | Path, reference: Volume) -> list[Structure]:
    """Every ROI of an RTSTRUCT as a mask on ``reference``'s grid (contours off the grid's slices are refused)."""
    import pydicom
    from skimage.draw import polygon

    path = Path(path)
    subject = label_of(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as error:  # noqa: BLE001 - any parse failure is a bad input
        raise InputError(subject, f"cannot be read as DICOM: {error}") from None
    if str(ds.get("Modality", "")) != "RTSTRUCT" or "ROIContourSequence" not in ds:
        raise InputError(subject, "is not a DICOM RT Structure Set")
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.get("StructureSetROISequence", [])}
    types = {int(o.ReferencedROINumber): str(o.get("RTROIInterpretedType", ""))
             for o in ds.get("RTROIObservationsSequence", [])}
    nk, nj, ni = reference.shape
    out = []
    for rc in ds.ROIContourSequence:
        number = int(rc.ReferencedROINumber)
        mask = np.zeros(reference.shape, bool)
        for c in rc.get("ContourSequence", []):
            if str(c.get("ContourGeometricType", "CLOSED_PLANAR")) not in ("CLOSED_PLANAR", ""):
                continue
            pts = np.asarray(c.ContourData, float).reshape(-1, 3)
            ijk = reference.physical_to_index(pts)
            k = float(np.mean(ijk[:, 2]))
            kk = int(round(k))
            if np.ptp(ijk[:, 2]) > 0.5 or abs(k - kk) > 0.25:
                raise InputError(subject, f"ROI {names.get(number, number)}: contour is not on a slice of the grid")
            if not 0 <= kk < nk:
                continue
            rr, cc = polygon(ijk[:, 1], ijk[:, 0], (nj, ni))
            layer = np.zeros((nj, ni), bool)
            layer[rr, cc] = True
            mask[kk] ^= layer
        color = tuple(float(v) / 255.0 for v in rc.get("ROIDisplayColor", [255, 0, 0]))
        name = names.get(number, f"ROI {number}")
        out.append(Structure(name, reference.with_array(mask.astype(np.uint8), name), color,  # type: ignore[arg-type]
                             types.get(number, "")))
    return out
