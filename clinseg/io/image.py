"""NIfTI, NRRD and MetaImage volumes through SimpleITK (which handles their LPS/RAS conventions)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Volume, label_of
from .atomic import atomic_write, full_suffix
from .validate import check_dimension, check_volume

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
# Header + separate data file: the header names the data file, so both are written under their final names.
DETACHED_SUFFIXES = (".nhdr", ".mhd")


def image_suffix(path: str | Path) -> str | None:
    """The SimpleITK format suffix ``path`` ends with (``'.nii.gz'``...), or ``None``."""
    name = Path(path).name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return None


def _first_line(error: Exception) -> str:
    """ITK exceptions span many lines (file, line, class); keep the description only."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if line.lower().startswith("description:"):
            return line.split(":", 1)[1].strip()
    return lines[-1] if lines else type(error).__name__


def _stem(path: Path) -> str:
    suffix = image_suffix(path) or ""
    return path.name[: len(path.name) - len(suffix)]


def read_image(path: str | Path) -> Volume:
    """Read a 3-D scalar NIfTI/NRRD/MetaImage file into a validated ``Volume`` (LPS)."""
    import SimpleITK as sitk

    path = Path(path)
    subject = label_of(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise InputError(subject, f"cannot be read as an image: {_first_line(error)}") from None
    size = tuple(reader.GetSize())
    check_dimension(subject, reader.GetDimension(), size, reader.GetNumberOfComponents())
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise InputError(subject, f"cannot be read (corrupt or truncated file?): {_first_line(error)}") from None
    if image.GetDimension() == 4:  # 3-D stored with a trailing singleton axis (e.g. NIfTI t=1)
        image = image[:, :, :, 0]
    return check_volume(Volume.from_sitk(image, _stem(path)), subject)


def _writable_array(array: np.ndarray) -> np.ndarray:
    """SimpleITK has no bool or float16 pixels."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return np.ascontiguousarray(array)


def write_image(volume: Volume, path: str | Path, compress: bool = True) -> Path:
    """Write ``volume`` atomically in the format given by the suffix of ``path``."""
    import SimpleITK as sitk

    path = Path(path)
    suffix = image_suffix(path)
    if suffix is None:
        expected = ", ".join(IMAGE_SUFFIXES)
        raise InputError(label_of(path), f"unsupported output format '{full_suffix(path)}' (use {expected})")
    image = Volume(_writable_array(volume.array), volume.spacing, volume.origin, volume.direction).to_sitk()
    if suffix in DETACHED_SUFFIXES:
        _write_detached(image, path, compress)
        return path
    with atomic_write(path) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
    return path


def _write_detached(image, path: Path, compress: bool) -> None:
    """Header + data file: write both in a temporary folder, move the data file first, the header last."""
    import SimpleITK as sitk

    tmp_dir = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    tmp_dir.mkdir(parents=True)
    try:
        sitk.WriteImage(image, str(tmp_dir / path.name), compress)
        header = tmp_dir / path.name
        for item in sorted(tmp_dir.iterdir()):
            if item != header:
                os.replace(item, path.with_name(item.name))
        os.replace(header, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
