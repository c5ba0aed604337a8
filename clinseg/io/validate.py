"""Checks that turn unusable images into one-line ``InputError`` messages."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..volume import Volume

MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 20.0


def _fmt(values) -> str:
    return " x ".join(f"{v:g}" for v in values)


def check_dimension(subject: str, dimension: int, size_ijk: tuple[int, ...], components: int = 1) -> None:
    """Refuse 2-D, single-slice, 4-D and vector images before their voxels are loaded."""
    if components != 1:
        raise InputError(subject, f"has {components} components per voxel (vector/RGB); a scalar volume is expected")
    if dimension == 2:
        raise InputError(subject, f"is 2-D ({_fmt(size_ijk)} pixels); a 3-D volume is expected")
    if dimension == 4 and size_ijk[3] != 1:
        raise InputError(subject, f"is 4-D ({_fmt(size_ijk)}: time points or channels); a 3-D volume is expected")
    if dimension not in (3, 4):
        raise InputError(subject, f"is {dimension}-D; a 3-D volume is expected")
    if min(size_ijk[:3]) < 1:
        raise InputError(subject, f"is empty (size {_fmt(size_ijk)})")
    if size_ijk[2] == 1:
        raise InputError(subject, f"is 2-D (1 slice of {size_ijk[0]} x {size_ijk[1]}); a 3-D volume is expected")


def check_spacing(subject: str, spacing) -> None:
    """Voxel sizes must be positive and plausible for a medical image (0.05 to 20 mm)."""
    spacing = np.asarray(spacing, dtype=float)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(subject, f"has an invalid voxel spacing ({_fmt(spacing)} mm)")
    if np.any(spacing < MIN_SPACING_MM) or np.any(spacing > MAX_SPACING_MM):
        raise InputError(
            subject,
            f"has an absurd voxel spacing ({_fmt(spacing)} mm; expected {MIN_SPACING_MM:g} to {MAX_SPACING_MM:g} mm)",
        )


def check_volume(volume: Volume, subject: str, scalar: bool = True) -> Volume:
    """Validate a loaded volume (shape, voxel values, geometry); return it unchanged.

    ``subject`` names the input in the message (usually the file name).
    """
    array = volume.array
    components = array.shape[3] if array.ndim == 4 else 1
    if array.ndim not in (3, 4) or (array.ndim == 4 and not scalar):
        raise InputError(subject, f"is {array.ndim}-D; a 3-D volume is expected")
    check_dimension(subject, 3, volume.size_ijk, components if scalar else 1)
    kind = array.dtype.kind
    if kind == "c":
        raise InputError(subject, "has complex voxels; real numbers are expected")
    if kind == "f":
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise InputError(subject, f"has {bad} non-finite voxels (NaN/inf)")
    elif kind not in "biu":
        raise InputError(subject, f"has voxels of type {array.dtype}; numbers are expected")
    check_spacing(subject, volume.spacing)
    if not np.all(np.isfinite(volume.origin)):
        raise InputError(subject, "has a non-finite origin")
    direction = volume.direction
    if not np.all(np.isfinite(direction)) or abs(np.linalg.det(direction)) < 1e-3:
        raise InputError(subject, "has a degenerate direction matrix")
    return volume
