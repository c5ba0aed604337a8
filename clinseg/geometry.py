"""Anatomical directions on a Volume's array (see clinseg.volume for the convention)."""

from __future__ import annotations

import numpy as np

from .volume import Volume

# LPS axis numbers: patient's left is +x, posterior is +y, superior is +z.
LEFT, POSTERIOR, SUPERIOR = 0, 1, 2


def array_axis(volume: Volume, lps_axis: int) -> tuple[int, int]:
    """The array axis (0 = k, 1 = j, 2 = i) closest to an LPS axis, and its sign.

    ``sign`` is +1 when increasing the array index moves towards +LPS on that axis.
    """
    columns = volume.direction  # column c is the i, j, k axis c in LPS
    c = int(np.argmax(np.abs(columns[lps_axis, :])))
    return 2 - c, int(np.sign(columns[lps_axis, c]) or 1)


def voxel_volume_mm3(volume: Volume) -> float:
    return float(np.prod(volume.spacing))


def spacing_zyx(volume: Volume) -> tuple[float, float, float]:
    """Spacing in array-axis order (k, j, i), for filters working on ``volume.array``."""
    si, sj, sk = volume.spacing
    return sk, sj, si
