"""NIfTI, NRRD and MetaImage volumes through SimpleITK (which handles their LPS/RAS conventions)."""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import shutil
import struct
import tempfile
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Volume, label_of
from .atomic import atomic_write, full_suffix
from .validate import check_dimension, check_spacing, check_volume

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


def _itk_reason(error: Exception) -> str:
    """ITK exceptions span many lines (source file, class, stale errno); keep the most specific one."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception thrown", "Reason:"))]
    line = useful[-1] if useful else (lines[-1] if lines else type(error).__name__)
    line = re.sub(r"^(ITK ERROR: \w+\(0x[0-9a-f]+\):|sitk::ERROR:|\[\w+\])\s*", "", line)
    return line


def _nifti_expected_bytes(path: Path) -> int | None:
    """Header offset plus voxel bytes of a NIfTI-1/2 file (uncompressed), or ``None`` if the header is unreadable."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(544)
    except (OSError, EOFError):
        return None
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", head[40:56])
            bitpix = struct.unpack(endian + "h", head[72:74])[0]
            offset = int(struct.unpack(endian + "f", head[108:112])[0])
            break
        if len(head) >= 540 and struct.unpack(endian + "i", head[:4])[0] == 540:
            dims = struct.unpack(endian + "8q", head[16:80])
            bitpix = struct.unpack(endian + "h", head[14:16])[0]
            offset = struct.unpack(endian + "q", head[168:176])[0]
            break
    else:
        return None
    n_dims = dims[0]
    if not 1 <= n_dims <= 7 or bitpix <= 0:
        return None
    return max(offset, 348) + int(np.prod([max(1, d) for d in dims[1 : n_dims + 1]], dtype=np.int64)) * bitpix // 8


def _check_nifti_complete(path: Path, subject: str) -> None:
    """ITK reads a truncated NIfTI without complaint (missing voxels come back as garbage): check the length.

    For ``.nii.gz`` the gzip trailer's ISIZE (length mod 2**32) is compared
    first; only when it disagrees (truncated, or a multi-member gzip) is the
    stream decompressed to count its bytes.
    """
    expected = _nifti_expected_bytes(path)
    if expected is None:
        return  # SimpleITK will report the unreadable header
    if not path.name.lower().endswith(".gz"):
        actual = path.stat().st_size
    else:
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            if struct.unpack("<I", f.read(4))[0] == expected % 2**32:
                return
        actual = 0
        try:
            with gzip.open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    actual += len(chunk)
        except (OSError, EOFError, zlib.error):
            raise InputError(subject, "is truncated or corrupt (the compressed stream ends early)") from None
    if actual < expected:
        raise InputError(subject, f"is truncated: {actual} bytes where its header needs {expected}")


def _stem(path: Path) -> str:
    suffix = image_suffix(path) or ""
    return path.name[: len(path.name) - len(suffix)]


@contextlib.contextmanager
def _unambiguous(path: Path) -> Iterator[Path]:
    """ITK's NIfTI reader, asked for ``x.nii.gz``, silently reads ``x.nii`` when that exists beside it:
    read such a file through a link (or copy) in an empty temporary folder instead."""
    if not (path.name.lower().endswith(".nii.gz") and path.with_name(path.name[:-3]).exists()):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="clinseg-read-") as folder:
        alias = Path(folder) / path.name
        try:
            alias.symlink_to(path.resolve())
        except OSError:  # no symlinks (Windows without privilege)
            shutil.copyfile(path, alias)
        yield alias


def read_image(path: str | Path) -> Volume:
    """Read a 3-D scalar NIfTI/NRRD/MetaImage file into a validated ``Volume`` (LPS)."""
    import SimpleITK as sitk

    path = Path(path)
    subject = label_of(path)
    if not path.is_file():
        raise InputError(subject, "file not found")
    with _unambiguous(path) as readable:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(readable))
        try:
            reader.ReadImageInformation()
        except RuntimeError as error:
            raise InputError(subject, f"cannot be read as an image: {_itk_reason(error)}") from None
        size = tuple(reader.GetSize())
        check_dimension(subject, reader.GetDimension(), size, reader.GetNumberOfComponents())
        check_spacing(subject, reader.GetSpacing()[:3])  # before ITK's own, less clear, refusal
        if image_suffix(path) in (".nii", ".nii.gz"):
            _check_nifti_complete(path, subject)
        try:
            image = reader.Execute()
        except RuntimeError as error:
            raise InputError(subject, f"cannot be read (corrupt or truncated file?): {_itk_reason(error)}") from None
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
