"""The classical stroke engine: thresholds a radiologist would use, made relative to the patient's own brain.

Acute (DWI + ADC): restricted diffusion is bright on DWI and dark on ADC. Seeds are voxels brighter than 1.4x
the brain's median DWI, with ADC below 620e-6 mm^2/s and brighter than the mirrored point of the other
hemisphere; the lesion is the seeds' connected region of voxels still bright (1.3x), low in ADC (< 800e-6)
and asymmetric. The mirror test removes the symmetric DWI bright spots of susceptibility at the skull base.
Chronic (T1): a cavity is CSF-dark on T1 where the other hemisphere holds tissue.

Figures that set the thresholds (bench/stroke.py): on the real ISLES'22 case the lesion's median ADC is 592e-6
and median DWI 1.6x the brain's; phantom infarcts sit at ADC ~460e-6 and 1.9x.
"""

from __future__ import annotations

import cc3d
import numpy as np
from scipy import ndimage

from ...errors import InputError
from ...volume import Volume

ADC_SEED = 620.0  # x1e-6 mm^2/s: the usual restricted-diffusion cut-off
ADC_GROW = 800.0
DWI_SEED, DWI_GROW = 1.4, 1.3  # x the brain's median DWI
ASYMMETRY = 0.25  # DWI ratio above the mirrored voxel's (half of it while growing)
RIM_MM = 4.0  # seeds lie this deep inside the brain (the cortex's edge has partial-volume outliers)
MIN_LESION_ML = 0.02
T1_SEED, T1_GROW = 0.45, 0.6  # x the brain's median T1 (chronic cavity is CSF-dark)
T1_ASYMMETRY = 0.45
CHRONIC_DEPTH_MM = 8.0  # seeds, and each lesion's median voxel, lie this deep: asymmetric sulci are shallow


def adc_to_micro(adc: np.ndarray, brain: np.ndarray, subject: str = "ADC") -> tuple[np.ndarray, str]:
    """ADC in x1e-6 mm^2/s and the unit it came in, told by the brain's median (tissue is ~700-900e-6)."""
    values = adc[brain & (adc > 0)]
    if values.size == 0:
        raise InputError(subject, "is zero everywhere in the brain: not an ADC map")
    median = float(np.median(values))
    for unit, scale in (("1e-6 mm2/s", 1.0), ("1e-3 mm2/s", 1e3), ("mm2/s", 1e6)):
        if 300.0 <= median * scale <= 2500.0:
            return adc.astype(np.float32) * np.float32(scale), unit
    raise InputError(subject, f"does not look like an ADC map (brain median {median:.3g}; expected ~0.8e-3 mm2/s "
                     "in mm2/s, 1e-3 mm2/s or 1e-6 mm2/s)")


def mirrored(array: np.ndarray, volume: Volume, brain: np.ndarray) -> np.ndarray:
    """``array`` reflected left-right across the sagittal plane through the brain's centre (LPS x)."""
    points = np.argwhere(brain)[:, ::-1].astype(float)
    if points.size == 0:
        return array.copy()
    centre_x = float(volume.index_to_physical(points)[:, 0].mean())
    nk, nj, ni = volume.shape
    out = np.empty(array.shape, np.float32)
    k_j_i = np.stack(np.meshgrid(np.arange(nj), np.arange(ni), indexing="ij"), axis=-1).reshape(-1, 2)
    for k in range(nk):  # slice by slice: bounded memory on large grids
        ijk = np.column_stack([k_j_i[:, 1], k_j_i[:, 0], np.full(len(k_j_i), k)]).astype(float)
        lps = volume.index_to_physical(ijk)
        lps[:, 0] = 2 * centre_x - lps[:, 0]
        src = volume.physical_to_index(lps)[:, ::-1].T
        out[k] = ndimage.map_coordinates(array, src, order=1, mode="nearest").reshape(nj, ni)
    return out


def _grow(seeds: np.ndarray, region: np.ndarray, voxel_ml: float) -> np.ndarray:
    labels = cc3d.connected_components((region | seeds).astype(np.uint8), connectivity=26)
    keep = np.unique(labels[seeds])
    mask = np.isin(labels, keep[keep > 0])
    mask = ndimage.binary_fill_holes(mask)
    labels, n = cc3d.connected_components(mask.astype(np.uint8), connectivity=26, return_N=True)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    small = np.nonzero(sizes * voxel_ml < MIN_LESION_ML)[0]
    return mask & ~np.isin(labels, small[small > 0])


def acute_lesion(dwi: Volume, adc_micro: np.ndarray | None, brain: np.ndarray) -> tuple[np.ndarray, dict]:
    """Acute infarct mask on the DWI grid from DWI and (optionally, but much better with) ADC in x1e-6 mm^2/s."""
    spacing = np.asarray(dwi.spacing[::-1])
    depth = ndimage.distance_transform_edt(brain, sampling=spacing)
    d = ndimage.gaussian_filter(dwi.array.astype(np.float32), 0.7)
    valid = brain & (adc_micro > 0) if adc_micro is not None else brain
    reference = float(np.median(d[valid])) if valid.any() else 0.0
    if reference <= 0:
        raise InputError(dwi.name or "DWI", "has no signal inside the brain")
    ratio = d / reference
    asymmetry = ratio - mirrored(ratio, dwi, brain)
    seeds = brain & (depth > RIM_MM) & (ratio > DWI_SEED) & (asymmetry > ASYMMETRY)
    region = brain & (ratio > DWI_GROW) & (asymmetry > ASYMMETRY / 2)
    report: dict = {"dwi_reference": reference}
    if adc_micro is not None:
        adc = ndimage.median_filter(adc_micro, 3)  # single-voxel noise of the ADC map
        seeds &= (adc > 0) & (adc < ADC_SEED)
        region &= (adc > 0) & (adc < ADC_GROW)
        report["adc_brain_median"] = float(np.median(adc[valid]))
    else:
        # Without ADC a bright DWI spot may be T2 shine-through: demand more contrast.
        seeds &= ratio > DWI_SEED + 0.2
    return _grow(seeds, region, float(np.prod(dwi.spacing)) / 1000.0), report


def chronic_lesion(t1: Volume, brain: np.ndarray) -> tuple[np.ndarray, dict]:
    """Chronic infarct mask on the T1 grid: CSF-dark tissue loss where the mirrored hemisphere is not dark.

    Brain extraction leaves a cortical cavity out (it is as dark as CSF), so the mask is first joined with its
    own mirror image: the healthy hemisphere's outline restores the lost tissue's place.
    """
    spacing = np.asarray(t1.spacing[::-1])
    brain = brain | (mirrored(brain.astype(np.float32), t1, brain) > 0.5)
    depth = ndimage.distance_transform_edt(brain, sampling=spacing)
    t = ndimage.gaussian_filter(t1.array.astype(np.float32), 0.7)
    reference = float(np.median(t[brain])) if brain.any() else 0.0
    if reference <= 0:
        raise InputError(t1.name or "T1", "has no signal inside the brain")
    ratio = t / reference
    loss = mirrored(ratio, t1, brain) - ratio  # positive where this side is darker than the other
    seeds = brain & (depth > CHRONIC_DEPTH_MM) & (ratio < T1_SEED) & (loss > T1_ASYMMETRY)
    region = brain & (ratio < T1_GROW) & (loss > T1_ASYMMETRY / 2)
    mask = _grow(seeds, region, float(np.prod(t1.spacing)) / 1000.0)
    labels, n = cc3d.connected_components(mask.astype(np.uint8), connectivity=26, return_N=True)
    if n:
        median_depth = np.array([np.median(depth[labels == k]) for k in range(1, n + 1)])
        mask = np.isin(labels, np.nonzero(median_depth >= CHRONIC_DEPTH_MM)[0] + 1)
    return mask, {"t1_reference": reference}
