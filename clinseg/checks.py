"""Input checks shared by the task pipelines: the right modality and enough of a volume."""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .preprocess import padding_as_air
from .volume import Volume

MIN_VOXELS_PER_AXIS = 16


def require_3d_extent(volume: Volume, subject: str, min_extent_mm: tuple[float, float, float],
                      min_voxels: int = MIN_VOXELS_PER_AXIS) -> None:
    """Refuse volumes too small to hold the anatomy a task needs (extent in i, j, k mm; at least ``min_voxels``
    along every axis)."""
    extent = [n * s for n, s in zip(volume.size_ijk, volume.spacing)]
    if volume.array.ndim != 3 or min(volume.shape) < min_voxels:
        size = "x".join(map(str, volume.size_ijk))
        raise InputError(subject, f"is too small ({size} voxels); a 3-D scan is expected")
    short = [f"{e:.0f} < {m:.0f} mm" for e, m in zip(extent, min_extent_mm) if e < m]
    if short:
        raise InputError(subject, f"covers too little anatomy ({', '.join(short)})")


def require_ct(volume: Volume, subject: str) -> None:
    """A CT in Hounsfield units has air near -1000 and soft tissue near 0; MRI does not."""
    sample = volume.array[:: max(1, volume.shape[0] // 32), ::4, ::4]
    sample = padding_as_air(sample)  # outside the reconstruction circle
    lo, median, hi = np.percentile(sample, [1, 50, 99])
    if lo > -700 or lo < -1500 or hi < -200 or hi > 5000:
        raise InputError(
            subject,
            f"does not look like a CT in Hounsfield units (1st/50th/99th percentiles {lo:.0f}/{median:.0f}/{hi:.0f}); "
            "expected air near -1000 HU",
        )
