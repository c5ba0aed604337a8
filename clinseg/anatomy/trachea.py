"""Automatic trachea detection: the seed of the classical engine and the root of the tree."""

from __future__ import annotations

import cc3d
import numpy as np

from ..errors import InputError
from ..geometry import LEFT, SUPERIOR, array_axis
from ..volume import Volume
from .lungs import ChestMasks

SEARCH_MM = 60.0  # look this far below the top of the air-inside-body region
MIN_AREA_MM2, MAX_AREA_MM2 = 40.0, 700.0  # trachea cross-section, child to large adult
MAX_OFFCENTRE_MM = 35.0
MAIN_BRONCHUS_OFFSET_MM = 8.0  # below the carina both main bronchi lie this far off the midline; the trachea closer


class TracheaNotInView(InputError):
    """The scan starts at or below the carina: seen, not merely a search that failed, so no engine goes on."""


def find_trachea(ct: Volume, masks: ChestMasks, subject: str = "CT") -> np.ndarray:
    """Index ``(k, j, i)`` of a voxel inside the trachea lumen.

    Scans axial slices from the top of the lungs+airway region downwards for a round,
    dark, midline air region of tracheal size; the lungs at the apex are lateral and
    the oesophagus is collapsed or small, so the first such region is the trachea.
    """
    sup_axis, sup_sign = array_axis(ct, SUPERIOR)
    left_axis, _ = array_axis(ct, LEFT)
    air = masks.lungs > 0
    spacing = np.array(ct.spacing[::-1])
    in_plane = [a for a in range(3) if a != sup_axis]
    occupied = np.nonzero(np.any(air, axis=tuple(in_plane)))[0]
    if occupied.size == 0:
        raise InputError(subject, "no trachea in the field of view (no air inside the body)")
    top = occupied.max() if sup_sign > 0 else occupied.min()
    step = -1 if sup_sign > 0 else 1
    n_search = int(SEARCH_MM / spacing[sup_axis])

    body_index = np.nonzero(masks.body)
    centre = body_index[left_axis].mean() if body_index[0].size else ct.shape[left_axis] / 2

    best, straddled = None, False
    for n in range(n_search):
        s = top + step * n
        if not 0 <= s < ct.shape[sup_axis]:
            break
        found = _tube_sections(np.take(air, s, axis=sup_axis), np.take(ct.array, s, axis=sup_axis),
                               spacing[in_plane], centre, in_plane[1] == left_axis, spacing[left_axis])
        # Neighbours in left-right order with nothing between them, one on either side of the midline: the
        # main bronchi (at the lung apices the trachea lies between the two).
        offsets = sorted(offset for _, _, offset in found)
        straddled |= any(a < -MAIN_BRONCHUS_OFFSET_MM and b > MAIN_BRONCHUS_OFFSET_MM
                         for a, b in zip(offsets, offsets[1:]))
        for score, (r, c), _ in found:
            if best is None or score > best[0]:
                index = [0, 0, 0]
                index[sup_axis], index[in_plane[0]], index[in_plane[1]] = s, r, c
                best = (score, np.array(index))
        if best is not None and n > 2:
            break  # a few slices below the top: stable enough
    if straddled:
        raise TracheaNotInView(subject, "no trachea in the field of view: the scan starts at or below the carina "
                                        "(a main bronchus on either side of the midline at its top)")
    if best is None:
        raise InputError(subject, "no trachea found near the top of the lungs (is the neck/upper chest in the scan?)")
    return best[1]


def _tube_sections(
    air: np.ndarray, hu: np.ndarray, pixel_mm: np.ndarray, centre: float, cols_are_lateral: bool, lateral_mm: float
) -> list[tuple[float, tuple[int, int], float]]:
    """Round, dark air sections of tracheal size near the midline of one axial slice: (score, pixel, signed
    lateral offset in mm) each."""
    pixel_mm2 = float(np.prod(pixel_mm))
    labels, count = cc3d.connected_components(air, connectivity=8, return_N=True)
    found = []
    for label in range(1, count + 1):
        region = labels == label
        area = region.sum() * pixel_mm2
        if not MIN_AREA_MM2 <= area <= MAX_AREA_MM2:
            continue
        rows, cols = np.nonzero(region)
        extent = [(np.ptp(rows) + 1) * pixel_mm[0], (np.ptp(cols) + 1) * pixel_mm[1]]
        fill = area / (extent[0] * extent[1])
        aspect = max(extent) / max(min(extent), 1e-6)
        offset = ((cols if cols_are_lateral else rows).mean() - centre) * lateral_mm
        if fill < 0.55 or aspect > 2.2 or abs(offset) > MAX_OFFCENTRE_MM or np.median(hu[region]) > -850:
            continue
        r, c = int(round(rows.mean())), int(round(cols.mean()))
        if not region[r, c]:  # centroid of a crescent: take the region's deepest pixel
            r, c = rows[len(rows) // 2], cols[len(cols) // 2]
        found.append((fill - abs(offset) / 100.0, (int(r), int(c)), float(offset)))
    return found

