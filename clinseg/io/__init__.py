"""Readers and writers of volumes and segmentations; every reader returns a validated LPS ``Volume``.

Formats: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage
(``.mha``, ``.mhd``), DICOM series (a folder or one ``.dcm`` of the series) and
Slicer segmentations (``.seg.nrrd``). Bad inputs raise a one-line
``InputError`` naming the file.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..volume import Volume, label_of
from .atomic import atomic_output_dir, atomic_write, full_suffix
from .dicom import SeriesInfo, is_dicom_file, list_series, read_dicom_series
from .image import IMAGE_SUFFIXES, image_suffix, read_image, write_image
from .segmentation import read_segmentation, write_segmentation
from .validate import check_volume

__all__ = [
    "IMAGE_SUFFIXES",
    "SeriesInfo",
    "atomic_output_dir",
    "atomic_write",
    "check_volume",
    "full_suffix",
    "image_suffix",
    "is_dicom_file",
    "list_series",
    "read_dicom_series",
    "read_image",
    "read_segmentation",
    "read_volume",
    "read_mask",
    "write_image",
    "write_segmentation",
    "write_volume",
]


def read_volume(path: str | Path, series_uid: str | None = None) -> Volume:
    """Read a 3-D scalar volume from an image file or a DICOM series (folder or one of its files).

    ``series_uid`` picks one series when a DICOM folder holds several.
    """
    path = Path(path)
    subject = label_of(path)
    if not path.exists():
        raise InputError(subject, "file not found")
    if path.is_dir() or path.suffix.lower() == ".dcm":
        return read_dicom_series(path, series_uid)
    if image_suffix(path) is not None:
        return read_image(path)
    if is_dicom_file(path):
        return read_dicom_series(path, series_uid)
    expected = ", ".join(IMAGE_SUFFIXES)
    raise InputError(subject, f"unsupported format '{full_suffix(path)}' (expected {expected}, .dcm or a DICOM folder)")


def read_mask(path: str | Path, series_uid: str | None = None) -> Volume:
    """A mask or label map: the label layer of a Slicer ``.seg.nrrd``, else any volume ``read_volume`` reads."""
    if str(path).lower().endswith(".seg.nrrd"):
        return read_segmentation(path)[0]
    return read_volume(path, series_uid=series_uid)


def write_volume(volume: Volume, path: str | Path) -> Path:
    """Write ``volume`` atomically as NIfTI, NRRD or MetaImage (by suffix), keeping its geometry."""
    return write_image(volume, path)
