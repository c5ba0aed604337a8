"""Weight-free airway segmentation: trachea seed + adaptive region growing.

Two candidate maps are grown from the trachea seed with increasing permissiveness:
plain air (HU below a threshold) and "dark tube" voxels (a morphological black
top-hat: locally darker than their surroundings, as a bronchial lumen inside its wall
is). Each step's grown volume is compared with the previous one; a jump means the
front broke through a wall into parenchyma (a leak), so the last step before the jump
is kept (explosion control).
"""

from __future__ import annotations

import cc3d
import numpy as np
from scipy import ndimage

from ...anatomy.lungs import ChestMasks
from ...errors import InputError
from ...progress import CancelToken, ProgressCallback, ProgressTracker
from ...volume import Volume

THRESHOLDS_HU = (-975, -960, -945, -930, -915, -900, -885, -870)
TOPHAT_LEVELS_HU = (300, 240, 190, 150, 120)
LEAK_RATIO = 1.6  # volume growth between two steps that signals a leak
MAX_FRACTION_OF_LUNGS = 0.12  # airways are ~2-8 % of lung volume; more is a leak


def _grow(candidates: np.ndarray, seed: tuple[int, int, int]) -> np.ndarray:
    if not candidates[seed]:
        return np.zeros_like(candidates)
    labels = cc3d.connected_components(candidates, connectivity=6)
    return labels == labels[seed]


def _adaptive(levels, make_candidates, seed, limit_voxels, cancel) -> tuple[np.ndarray, list[tuple]]:
    grown, history = None, []
    for level in levels:
        if cancel is not None:
            cancel.check("classical airway")
        trial = _grow(make_candidates(level), seed)
        n = int(trial.sum())
        previous = int(grown.sum()) if grown is not None else 0
        leaked = n > limit_voxels or (previous > 0 and n > LEAK_RATIO * previous)
        history.append((level, n, leaked))
        if leaked:
            break
        grown = trial
    return grown, history


def segment_airway_classical(
    ct: Volume,
    masks: ChestMasks,
    seed: np.ndarray,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> tuple[np.ndarray, dict]:
    """Binary airway mask on the input grid and a report of the chosen thresholds."""
    tracker = ProgressTracker("classical", 3, progress)
    lungs = masks.lungs > 0
    nz = np.nonzero(lungs)
    lo = [max(0, int(min(a.min(), s)) - 3) for a, s in zip(nz, seed)]
    hi = [min(n, int(max(a.max(), s)) + 4) for a, s, n in zip(nz, seed, ct.shape)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    local_seed = tuple(int(s - a) for s, a in zip(seed, lo))
    hu = ndimage.gaussian_filter(ct.array[box].astype(np.float32), 0.6)
    region = masks.air_inside[box] | ndimage.binary_dilation(lungs[box], iterations=2)
    limit = MAX_FRACTION_OF_LUNGS * lungs[box].sum()
    if hu[local_seed] > -800:
        raise InputError(ct.name or "CT", f"trachea seed is not air ({hu[local_seed]:.0f} HU)")

    air, air_history = _adaptive(THRESHOLDS_HU, lambda t: (hu < t) & region, local_seed, limit, cancel)
    if air is None:
        raise InputError(ct.name or "CT", "airway region growing leaked at the first threshold (too noisy?)")
    tracker.step(message="threshold growing")

    # Black top-hat with a ~4 mm element: high inside small lumens surrounded by wall.
    size = tuple(max(3, int(round(4.0 / s)) | 1) for s in ct.spacing[::-1])
    tophat = ndimage.grey_closing(hu, size=size) - hu
    tracker.step(message="tube enhancement")
    near_air = hu < -550

    def tubes(level: float) -> np.ndarray:
        return ((tophat > level) & near_air & region) | air

    grown, tube_history = _adaptive(TOPHAT_LEVELS_HU, tubes, local_seed, limit, cancel)
    mask = grown if grown is not None else air
    mask = ndimage.binary_closing(mask, iterations=1) | mask
    tracker.step(message="leak control")

    out = np.zeros(ct.shape, dtype=bool)
    out[box] = mask
    report = {
        "threshold_steps": [{"hu": t, "voxels": n, "leak": leak} for t, n, leak in air_history],
        "tophat_steps": [{"hu": t, "voxels": n, "leak": leak} for t, n, leak in tube_history],
    }
    return out, report
