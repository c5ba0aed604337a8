"""Vessel stumps: a thick vessel entering the lung at its root, cut by the search region into a nodule-like blob.

A pulmonary vessel enters the lung from the mediastinum as a tube 10-15 mm across. The search region ends at the
lung's edge, so a candidate's mask on such a vessel can be the tube's first centimetres: a solid blob that touches
the region's edge and is elongated along the line from that contact to its centre. A juxta-pleural nodule is round
or lies along the pleura. Only solid masks of at least ``STUMP_MIN_MM`` are judged: a ground-glass nodule's mask may
run off the pleura (two did on the validation phantoms).

Chosen on training seeds 100-139 (findings of the network path): the rule took 54 false positives (13 of them
scoring >= 0.5) and none of the 276 nodules found; on validation seeds 140-149, 12 false positives and no nodule.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .features import principal_axes
from .segment import SOLID_CORE_HU, NoduleMask

STUMP_MIN_MM = 6.0  # equivalent diameter
STUMP_ELONGATION, STUMP_ALIGNMENT = 1.5, 0.7  # long / short axis; |cos| of the long axis to the contact line


def is_vessel_stump(seg: NoduleMask, spacing_ijk: tuple[float, float, float]) -> bool:
    """True when ``seg`` (a candidate's mask) is a thick vessel's first part in the lung (module docstring)."""
    spacing = np.asarray(spacing_ijk[::-1], float)
    if seg.core_hu <= SOLID_CORE_HU or seg.voxels * float(np.prod(spacing)) < np.pi / 6 * STUMP_MIN_MM ** 3:
        return False
    outside = ~np.pad(seg.allowed, 1, constant_values=True)  # the box's own border is no edge
    contact = seg.mask & ndimage.binary_dilation(outside)[1:-1, 1:-1, 1:-1]
    if not contact.any():
        return False
    pts = np.argwhere(seg.mask) * spacing
    variances, axes = principal_axes(pts, spacing)
    if variances[-1] < STUMP_ELONGATION ** 2 * variances[0]:
        return False
    line = pts.mean(axis=0) - np.argwhere(contact).mean(axis=0) * spacing
    length = float(np.linalg.norm(line))
    return length > 0 and abs(float(line @ axes[:, -1])) >= STUMP_ALIGNMENT * length
