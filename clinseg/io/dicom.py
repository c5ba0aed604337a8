"""DICOM image series (CT, MR...) read with pydicom.

Slices are ordered by their position along the slice normal, never by
instance number (which scanners and anonymisers do not keep reliable).
The volume keeps the acquisition's orientation: direction columns are the
row and column cosines of ``ImageOrientationPatient`` and their cross product.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Volume, label_of
from .validate import check_volume

_HEADER_TAGS = [
    "SeriesInstanceUID",
    "SeriesDescription",
    "Modality",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "NumberOfFrames",
    "RescaleSlope",
    "RescaleIntercept",
]
ORIENTATION_TOL = 1e-4
MAX_TILT_DEG = 0.1


@dataclass(frozen=True)
class SeriesInfo:
    """One image series found in a folder."""

    uid: str
    description: str
    modality: str
    files: tuple[Path, ...]

    @property
    def n_slices(self) -> int:
        return len(self.files)

    def summary(self) -> str:
        return f"{self.uid} '{self.description}' ({self.modality}, {self.n_slices} slices)"


def is_dicom_file(path: str | Path) -> bool:
    """True when ``path`` has the DICOM Part 10 preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _read_header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return None


def _image_headers(folder: Path) -> list[tuple[Path, object]]:
    """Headers of every DICOM image file under ``folder`` (recursively); other files are skipped."""
    headers = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name == "DICOMDIR" or not is_dicom_file(path):
            continue
        ds = _read_header(path)
        if ds is not None and "ImagePositionPatient" in ds and "Rows" in ds and "SeriesInstanceUID" in ds:
            headers.append((path, ds))
    return headers


def _series(headers: list[tuple[Path, object]]) -> list[SeriesInfo]:
    groups: dict[str, list[tuple[Path, object]]] = {}
    for path, ds in headers:
        groups.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    return [
        SeriesInfo(
            uid,
            str(items[0][1].get("SeriesDescription", "") or ""),
            str(items[0][1].get("Modality", "") or ""),
            tuple(p for p, _ in items),
        )
        for uid, items in groups.items()
    ]


def list_series(folder: str | Path) -> list[SeriesInfo]:
    """All DICOM image series under ``folder``, largest first."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(label_of(folder), "is not a folder")
    return sorted(_series(_image_headers(folder)), key=lambda s: (-s.n_slices, s.uid))


def _choose_series(subject: str, found: list[SeriesInfo], series_uid: str | None) -> SeriesInfo:
    listing = "; ".join(s.summary() for s in found)
    if series_uid is not None:
        for series in found:
            if series.uid == series_uid:
                return series
        raise InputError(subject, f"has no series with UID {series_uid}; found {len(found)}: {listing}")
    if len(found) > 1:
        raise InputError(subject, f"holds {len(found)} series, choose one by series UID: {listing}")
    return found[0]


def read_dicom_series(path: str | Path, series_uid: str | None = None) -> Volume:
    """Read one DICOM series from a folder (or from the folder of one ``.dcm`` file) as an LPS ``Volume``.

    With several series in the folder, ``series_uid`` picks one (for a single
    file, the file's own series is used); else ``InputError`` lists them.
    """
    path = Path(path)
    subject = label_of(path)
    if not path.exists():
        raise InputError(subject, "file or folder not found")
    if path.is_file():
        ds = _read_header(path)
        if ds is None or "SeriesInstanceUID" not in ds:
            raise InputError(subject, "is not a readable DICOM image file")
        series_uid = series_uid or str(ds.SeriesInstanceUID)
        folder = path.parent
    else:
        folder = path
    headers = _image_headers(folder)
    if not headers:
        raise InputError(subject, "holds no DICOM image files")
    series = _choose_series(subject, _series(headers), series_uid)
    by_path = dict(headers)
    volume = _assemble(subject, [(p, by_path[p]) for p in series.files])
    volume.name = series.description or folder.name
    return check_volume(volume, subject)


def _floats(ds, keyword: str, n: int, subject: str, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    try:
        out = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        out = np.array([])
    if out.shape != (n,):
        raise InputError(f"{subject}/{path.name}", f"has no valid {keyword}")
    return out


def _assemble(subject: str, items: list[tuple[Path, object]]) -> Volume:
    """Sort slices along the normal, check the grid is regular, stack and rescale the pixels."""
    first_path, first = items[0]
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        raise InputError(subject, "is a multi-frame (enhanced) DICOM object; only single-frame series are supported")
    if int(first.get("SamplesPerPixel", 1) or 1) != 1:
        raise InputError(subject, f"has {first.SamplesPerPixel} samples per pixel (colour); a scalar image is expected")
    if len(items) == 1:
        raise InputError(subject, f"is 2-D (1 slice of {first.Columns} x {first.Rows}); a 3-D volume is expected")
    orientation = _floats(first, "ImageOrientationPatient", 6, subject, first_path)
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    if abs(np.linalg.norm(normal) - 1) > 1e-3:
        raise InputError(subject, "has an invalid ImageOrientationPatient (row and column cosines not orthonormal)")
    positions = []
    for path, ds in items:
        if not np.allclose(_floats(ds, "ImageOrientationPatient", 6, subject, path), orientation, atol=ORIENTATION_TOL):
            raise InputError(subject, "slices have different orientations (a localizer or multi-plane series?)")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise InputError(subject, "slices have different sizes")
        positions.append(_floats(ds, "ImagePositionPatient", 3, subject, path))
    positions = np.array(positions)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    items = [items[i] for i in order]
    positions, along = positions[order], along[order]
    step = _slice_step(subject, along)
    _check_tilt(subject, positions, normal, along)
    pixel_spacing = _floats(first, "PixelSpacing", 2, subject, first_path)  # (between rows, between columns)
    array = _stack_pixels(subject, items)
    return Volume(
        array,
        (pixel_spacing[1], pixel_spacing[0], step),
        tuple(positions[0]),
        np.column_stack([row, col, normal]),
    )


def _slice_step(subject: str, along: np.ndarray) -> float:
    """Regular slice spacing, or an ``InputError`` naming the first gap or duplicate."""
    gaps = np.diff(along)
    step = float(np.median(gaps))
    tol = max(0.01, 0.02 * step)
    duplicates = int(np.count_nonzero(gaps < tol))
    if duplicates:
        raise InputError(subject, f"{duplicates} slices repeat a position (several acquisitions or time points?)")
    for gap, position in zip(gaps, along[:-1]):
        if abs(gap - step) > tol:
            kind = "missing slices" if gap > 1.5 * step else "uneven slice spacing"
            where = f"gap of {gap:.4g} mm at position {position:.4g} mm"
            raise InputError(subject, f"{kind}: {where} along the slice normal (slice spacing {step:.4g} mm)")
    return step


def _check_tilt(subject: str, positions: np.ndarray, normal: np.ndarray, along: np.ndarray) -> None:
    """Slices must stack along their normal; a gantry tilt shears the grid, which a Volume cannot hold."""
    travel = positions[-1] - positions[0]
    across = np.linalg.norm(travel - normal * (along[-1] - along[0]))
    angle = np.degrees(np.arctan2(across, along[-1] - along[0]))
    if angle > MAX_TILT_DEG:
        raise InputError(subject, f"slices are sheared (gantry tilt of {angle:.2f} degrees); resample it first")


def _stack_pixels(subject: str, items: list[tuple[Path, object]]) -> np.ndarray:
    """Stack ``[k, j, i]`` and apply each slice's rescale slope/intercept (to integers when they stay exact)."""
    slices, slopes, intercepts = [], [], []
    for path, _ in items:
        values, slope, intercept = _pixels(subject, path)
        slices.append(values)
        slopes.append(slope)
        intercepts.append(intercept)
    raw = np.stack(slices)
    slopes_a, intercepts_a = np.array(slopes), np.array(intercepts)
    exact = (
        np.issubdtype(raw.dtype, np.integer)
        and np.all(slopes_a == np.round(slopes_a))
        and np.all(intercepts_a == np.round(intercepts_a))
    )
    if not exact:
        return (raw * slopes_a[:, None, None] + intercepts_a[:, None, None]).astype(np.float32)
    out = raw.astype(np.int64) * slopes_a.astype(np.int64)[:, None, None] + intercepts_a.astype(np.int64)[:, None, None]
    for dtype in (np.int16, np.int32):
        info = np.iinfo(dtype)
        if out.min() >= info.min and out.max() <= info.max:
            return out.astype(dtype)
    return out


def _pixels(subject: str, path: Path) -> tuple[np.ndarray, float, float]:
    """Stored pixel values ``[j, i]`` of one slice with its rescale slope and intercept.

    pydicom decodes uncompressed and RLE data; other compressions go through
    SimpleITK's GDCM, which returns values already rescaled (slope 1, intercept 0).
    """
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        values = ds.pixel_array
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
    except Exception as pydicom_error:  # noqa: BLE001 - any decoder failure falls back to GDCM
        import SimpleITK as sitk

        try:
            values = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[0]
        except RuntimeError:
            raise InputError(f"{subject}/{path.name}", f"pixel data cannot be decoded: {pydicom_error}") from None
        slope, intercept = 1.0, 0.0
    if values.ndim != 2:
        raise InputError(f"{subject}/{path.name}", f"pixel data has shape {values.shape}; one grey frame expected")
    return values, slope, intercept
