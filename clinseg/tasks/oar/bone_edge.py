"""A bone organ's outline moved onto the bone edge the CT shows (card op ``bone_edge``: the mandible; with
``lumen``, a cavity in bone: the cochlea).

Stage 1 draws the mandible at 3 x 3 x 4.5 mm, so its outline on the native grid is off by up to a coarse voxel, and a
thin plate of bone loses about a tenth of its Dice to that alone. The bone's outline is where the CT crosses half
way between the soft tissue around it and its cortex (the half-maximum of a blurred step, whatever the scanner's
blur): both levels are measured on the scan itself, around and inside the network's mask, so no CT number is built
in. Only a band of ``band_mm`` on either side of the network's outline is redrawn (deeper voxels are kept: marrow is
darker than cortex), each slice's enclosed marrow is filled, and the largest component is kept; the network still
says which bone it is, and the CT only where its edge lies. A lumen (the cochlea's fluid in the otic capsule) is the
mirror case: the organ is what stays under the level half way between its darkest voxels and the bone around it, and
no darker than those by as much (so air next to it is not taken).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from ...post.components import bounding_box, largest_in_crop

SOFT_SHELL_MM = 3.0  # thickness of the shell beyond the band whose median CT number is the soft-tissue level
CORTEX_PERCENTILE = 95.0  # of the CT numbers within the band and inside: the cortex level


def edge_level(ct: np.ndarray, inside: np.ndarray, outside_mm: np.ndarray, band_mm: float,
               lumen: bool = False) -> tuple[float, float]:
    """(the dark side's level, the edge level half way to the bone's): the dark side is the soft tissue ``band_mm``
    to ``band_mm + SOFT_SHELL_MM`` outside the mask (its median: beyond any bone the mask missed) or, for a
    ``lumen``, a low percentile ``inside`` it; the bone is a high percentile within ``band_mm`` of the mask, so that a
    mask drawn inside the cortex still sees it."""
    if lumen:  # its darkest voxels: robust to a mask that overlaps the bone around it
        low = float(np.percentile(ct[inside], 100.0 - CORTEX_PERCENTILE))
    else:
        low = float(np.median(ct[(outside_mm > band_mm) & (outside_mm <= band_mm + SOFT_SHELL_MM)]))
    return low, (low + float(np.percentile(ct[outside_mm <= band_mm], CORTEX_PERCENTILE))) / 2.0


def refine_bone_edge(ct: np.ndarray, mask: np.ndarray, spacing: Sequence[float], band_mm: float,
                     free: np.ndarray | None = None, lumen: bool = False) -> np.ndarray:
    """``mask`` (k, j, i) redrawn within ``band_mm`` of its outline: bone there is what reaches the edge level (a
    ``lumen``: what stays under it); ``free`` (optional): the voxels it may grow into (others keep their label).
    ``spacing``: i, j, k mm."""
    sampling = tuple(float(s) for s in spacing)[::-1]
    pad = [int(np.ceil((band_mm + SOFT_SHELL_MM) / s)) + 2 for s in sampling]
    box = bounding_box(mask, max(pad))
    if box is None:
        return mask.copy()
    m = np.ascontiguousarray(mask[box])
    image = ct[box].astype(np.float32)
    outside = ndimage.distance_transform_edt(~m, sampling=sampling)
    inside = ndimage.distance_transform_edt(m, sampling=sampling)
    if not (outside > band_mm).any():
        return mask.copy()
    low, level = edge_level(image, m, outside, band_mm, lumen)
    core = inside > band_mm
    band = (outside <= band_mm) & ~core
    if free is not None:
        band &= free[box] | m
    keep = (image < level) & (image > 2 * low - level) if lumen else image >= level
    organ = core | (band & keep)
    for k in range(organ.shape[0]):  # marrow enclosed by cortex (or a brighter spot in a lumen) within each slice
        organ[k] = ndimage.binary_fill_holes(organ[k])
    out = mask.copy()
    out[box] = largest_in_crop(organ) if organ.any() else m
    return out


def apply_bone_edges(ct: np.ndarray, labels: np.ndarray, spacing: Sequence[float], ops: Sequence[Mapping],
                     values: Mapping[str, int]) -> list[str]:
    """Each ``bone_edge`` op's organ redrawn in ``labels`` (in place; it grows into background only); returns the
    organs changed."""
    done = []
    for op in ops:
        value = values.get(str(op["organ"]))
        if value is None:
            continue
        mask = labels == value
        if not mask.any():
            continue
        new = refine_bone_edge(ct, mask, spacing, float(op["band_mm"]), labels == 0, bool(op.get("lumen", False)))
        labels[mask & ~new] = 0
        labels[new] = value
        done.append(str(op["organ"]))
    return done
