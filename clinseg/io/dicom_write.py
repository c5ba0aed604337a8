"""Write a ``Volume`` as a DICOM CT image series: one CT Image Storage file per slice.

Geometry: ``ImageOrientationPatient`` holds the ``i`` and ``j`` direction columns
(row and column cosines), ``ImagePositionPatient`` the LPS position of each slice's
first voxel, ``PixelSpacing`` is ``(sj, si)`` (between rows, between columns).
Every slice shares one StudyInstanceUID, SeriesInstanceUID and FrameOfReferenceUID.

Pixels: integer volumes are stored exactly (unsigned with ``RescaleIntercept``
-1024 when they fit, the usual CT encoding, else signed with intercept 0); float
volumes are quantised to 16 bits with a fractional slope, which reads back as
float32 within half a step. ``clinseg.io.read_volume`` on the written folder
returns the same voxels and geometry when the grid is right-handed (``k`` along
``i x j``, as every clinseg phantom is); a left-handed grid is written with its
slices reversed, so it reads back as the same image on a right-handed grid.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Volume
from .atomic import atomic_write

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
CT_OFFSET = 1024  # stored = HU + 1024 for the unsigned encoding


@dataclass(frozen=True)
class WrittenSeries:
    """What was written: the UIDs (``instance_uids[k]`` is slice ``k`` of the volume given) and the files."""

    folder: Path
    study_uid: str
    series_uid: str
    frame_uid: str
    instance_uids: list[str]
    files: list[Path]
    sop_class_uid: str = CT_IMAGE_STORAGE
    patient: dict[str, str] = field(default_factory=dict)


def _ds(value: float) -> str:
    """A Decimal String of at most 16 characters that reads back as close to ``value`` as DS allows."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def _encoding(array: np.ndarray) -> tuple[np.ndarray, int, float, float]:
    """Stored 16-bit pixels, PixelRepresentation, slope and intercept for ``array``."""
    if array.dtype.kind == "b":
        array = array.astype(np.uint8)
    if array.dtype.kind in "iu":
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if lo >= -CT_OFFSET and hi + CT_OFFSET <= 65535:
            return (array.astype(np.int32) + CT_OFFSET).astype(np.uint16), 0, 1.0, float(-CT_OFFSET)
        if lo >= -32768 and hi <= 32767:
            return array.astype(np.int16), 1, 1.0, 0.0
        raise InputError("volume", f"integer range {lo}..{hi} does not fit 16-bit DICOM pixels")
    values = array.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise InputError("volume", "has NaN or infinite voxels; DICOM pixels must be finite")
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    # The slope must survive DS formatting: round it to DS precision before quantising with it.
    slope = float(_ds(max(hi - lo, 1e-6) / 65535.0))
    intercept = float(_ds(lo))
    stored = np.clip(np.rint((values - intercept) / slope), 0, 65535).astype(np.uint16)
    return stored, 0, slope, intercept


def write_dicom_series(
    volume: Volume,
    folder: str | Path,
    patient_id: str = "PHANTOM",
    patient_name: str | None = None,
    description: str = "",
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_uid: str | None = None,
    series_number: int = 1,
    prefix: str = "CT",
) -> WrittenSeries:
    """Write ``volume`` (CT numbers) as ``folder/<prefix>_0001.dcm`` ... one file per slice, each written atomically.

    UIDs not given are generated; the returned ``WrittenSeries`` names them all so an
    RTSTRUCT or SEG can reference the series.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if volume.array.ndim != 3:
        raise InputError(volume.name or "volume", f"expected a 3-D scalar volume, got shape {volume.array.shape}")
    direction = np.asarray(volume.direction, float)
    array = volume.array
    origin = np.asarray(volume.origin, float)
    flipped = bool(np.linalg.det(direction) < 0)
    if flipped:  # store right-handed: reverse k so the slice normal is i x j
        origin = origin + direction[:, 2] * volume.spacing[2] * (volume.shape[0] - 1)
        direction = direction.copy()
        direction[:, 2] *= -1
        array = array[::-1]
    stored, representation, slope, intercept = _encoding(np.asarray(array))
    folder = Path(folder)
    study_uid, series_uid, frame_uid = study_uid or generate_uid(), series_uid or generate_uid(), \
        frame_uid or generate_uid()
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    patient = {"PatientID": patient_id, "PatientName": patient_name or patient_id, "StudyDate": date,
               "StudyTime": time}
    si, sj, sk = volume.spacing
    orientation = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
    instance_uids, files = [], []
    for k in range(stored.shape[0]):
        uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CT_IMAGE_STORAGE, uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, uid
        ds.Modality, ds.ImageType = "CT", ["DERIVED", "SECONDARY", "AXIAL"]
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = patient_id, patient["PatientName"], "", ""
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyDate, ds.StudyTime, ds.SeriesDate, ds.SeriesTime = date, time, date, time
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = series_number, k + 1, 1
        ds.SeriesDescription, ds.Manufacturer, ds.KVP = description[:64], "ClinicalSeg", ""
        ds.PositionReferenceIndicator = ""
        position = origin + direction[:, 2] * sk * k
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = orientation
        ds.SliceLocation = _ds(float(position @ direction[:, 2]))
        ds.PixelSpacing = [_ds(sj), _ds(si)]
        ds.SliceThickness = ds.SpacingBetweenSlices = _ds(sk)
        ds.Rows, ds.Columns = int(stored.shape[1]), int(stored.shape[2])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, representation
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = _ds(slope), _ds(intercept), "HU"
        ds.PixelData = np.ascontiguousarray(stored[k]).astype("<u2" if representation == 0 else "<i2").tobytes()
        path = folder / f"{prefix}_{k + 1:04d}.dcm"
        with atomic_write(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        instance_uids.append(uid)
        files.append(path)
    if flipped:  # index the UIDs by the given volume's slices, as an RTSTRUCT drawn on it refers to them
        instance_uids.reverse()
    return WrittenSeries(folder, study_uid, series_uid, frame_uid, instance_uids, files, CT_IMAGE_STORAGE, patient)
