"""The classical nodule engine: search region -> blob candidates -> per-candidate mask -> FP score.

No training data or network: thresholds and filters from the physics of the image (HU levels, blob
scale), and a small logistic score over shape features (``features.py``) fitted on training phantoms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...anatomy.lungs import ChestMasks
from ...progress import CancelToken, Progress, ProgressCallback
from .candidates import Candidate, detect_candidates
from .features import candidate_features, score
from .region import search_region
from .segment import NoduleMask, segment_candidate

MIN_DIAMETER_MM = 2.5  # below the 3 mm LIDC floor even allowing for voxelisation
MAX_DIAMETER_MM = 40.0  # beyond a nodule (> 30 mm is a mass); a leak that filled its limit ball
MIN_BLOBNESS = 0.35  # l3/l1 at the candidate: below it a tube (vessel), cheaper dropped before segmenting
MAX_SEGMENTED = 150  # the strongest candidates that are segmented and scored
DUPLICATE_SHARE = 0.3  # a weaker mask with this share already claimed by a stronger one is the same nodule


@dataclass
class Finding:
    """One scored candidate with its mask (``mask`` inside ``box`` of the CT grid)."""

    candidate: Candidate
    mask: NoduleMask
    features: np.ndarray
    score: float


def find_nodules(ct: np.ndarray, masks: ChestMasks, spacing_ijk: tuple[float, float, float],
                 progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> list[Finding]:
    """Every candidate that segments into a nodule-sized mask, scored, best first, without duplicates."""
    region = search_region(masks, spacing_ijk)
    candidates = detect_candidates(ct, region, spacing_ijk)
    findings: list[Finding] = []
    voxel_mm3 = float(np.prod(spacing_ijk))
    candidates = [c for c in candidates if c.blobness >= MIN_BLOBNESS][:MAX_SEGMENTED]
    for n, cand in enumerate(candidates):
        if cancel is not None and n % 16 == 0:
            cancel.check("nodule")
        if progress is not None and n % 16 == 0:
            progress(Progress("candidates", n, len(candidates), n / max(len(candidates), 1), None,
                              f"candidate {n + 1} of {len(candidates)}"))
        seg = segment_candidate(ct, region, spacing_ijk, cand.kji, cand.radius_mm)
        if seg is None:
            continue
        diameter = (6 * seg.voxels * voxel_mm3 / np.pi) ** (1 / 3)
        if not MIN_DIAMETER_MM <= diameter <= MAX_DIAMETER_MM:
            continue
        f = candidate_features(cand, seg, spacing_ijk)
        findings.append(Finding(cand, seg, f, float(score(f)[0])))
    findings.sort(key=lambda f: -f.score)
    return _drop_duplicates(findings, ct.shape)


def _drop_duplicates(findings: list[Finding], shape: tuple[int, ...]) -> list[Finding]:
    claimed = np.zeros(shape, bool)
    kept = []
    for f in findings:
        view = claimed[f.mask.box]
        if np.count_nonzero(view & f.mask.mask) > DUPLICATE_SHARE * f.mask.voxels:
            continue
        view |= f.mask.mask
        kept.append(f)
    return kept
