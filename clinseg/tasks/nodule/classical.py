"""The classical nodule engine: search region -> blob candidates -> FP score -> per-candidate mask.

Candidates come from a blob filter (``candidates.py``). With a false-positive network (``fpr.py``; the
built-in one is trained on phantoms only; engine ``model``/``auto``) every candidate is scored on its patch
first, as NoduleNet's decoupled head scores proposals, and the best ``MAX_SEGMENTED`` are segmented; a
candidate whose mask fails (nothing above background, or smaller than a few voxels) keeps a ball of its blob
radius, since the network, not the mask, decided that it is a nodule. Without the network (engine
``classical``) the tube-like candidates are dropped, the strongest segmented and scored by the logistic over
shape features (``features.py``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import edt
import numpy as np

from ...anatomy.lungs import ChestMasks
from ...parallel import available_threads
from ...progress import CancelToken, Progress, ProgressCallback
from .candidates import Candidate, detect_candidates
from .features import candidate_features, score
from .fpr import FPReducer
from .nodulenet_engine import NoduleNetDetector
from .region import search_region
from .roots import is_vessel_stump
from .segment import NoduleMask, ball_distance, equivalent_radius, segment_candidate

MIN_DIAMETER_MM = 2.5  # below the 3 mm LIDC floor even allowing for voxelisation
NET_MIN_DIAMETER_MM = 1.5  # with the network: a 3 mm nodule on a 1.4 mm grid may segment to a few voxels
MAX_DIAMETER_MM = 40.0  # beyond a nodule (> 30 mm is a mass); a leak that filled its limit ball
MIN_BLOBNESS = 0.35  # l3/l1 at the candidate: below it a tube (vessel), cheaper dropped before segmenting
MAX_SEGMENTED = 150  # the strongest candidates that are segmented and scored
MAX_SEGMENTED_NET = 100  # with the network: its best candidates that are segmented
# Network path: a mask whose equivalent radius is LEAK_CORE times the ball inscribed at its thickest point near the
# candidate (about 1 for a round nodule) and whose centroid lies LEAK_OFFSET radii off the candidate ran along a
# vessel; it is cut to CLIP_FACTOR radii (+ half a voxel) around the candidate. The radius: the blob's or the
# inscribed one, whichever is smaller (a blob merged with its vessel over-reads the nodule).
LEAK_CORE, LEAK_OFFSET, CLIP_FACTOR = 1.5, 0.5, 1.2
CHUNK = 16  # candidates segmented between two progress reports / cancel checks
DUPLICATE_SHARE = 0.3  # a weaker mask with this share already claimed by a stronger one is the same nodule


@dataclass
class Finding:
    """One scored candidate with its mask (``mask`` inside ``box`` of the CT grid)."""

    candidate: Candidate
    mask: NoduleMask
    features: np.ndarray
    score: float


def find_nodules(ct: np.ndarray, masks: ChestMasks, spacing_ijk: tuple[float, float, float],
                 progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                 reducer: FPReducer | NoduleNetDetector | None = None) -> list[Finding]:
    """Every candidate that segments into a nodule-sized mask, scored (by ``reducer`` when given, else by the
    logistic), best first, without duplicates. A ``NoduleNetDetector`` replaces the blob candidates as well."""
    region = search_region(masks, spacing_ijk)
    if isinstance(reducer, NoduleNetDetector):
        candidates, net_scores = reducer.candidates(ct, region, spacing_ijk)
        keep = slice(0, MAX_SEGMENTED_NET)  # best first, as the reducer's
        return segment_scored(ct, region, spacing_ijk, candidates[keep], net_scores[keep], progress, cancel)
    candidates = detect_candidates(ct, region, spacing_ijk)
    if reducer is None:
        candidates = [c for c in candidates if c.blobness >= MIN_BLOBNESS][:MAX_SEGMENTED]
        return segment_scored(ct, region, spacing_ijk, candidates, None, progress, cancel)
    logits = reducer.logits(ct, spacing_ijk, candidates)
    order = np.argsort(-logits, kind="stable")[:MAX_SEGMENTED_NET]
    net_scores = [float(1.0 / (1.0 + np.exp(-logits[n]))) for n in order]
    return segment_scored(ct, region, spacing_ijk, [candidates[n] for n in order], net_scores, progress, cancel)


def segment_scored(ct: np.ndarray, region: np.ndarray, spacing_ijk: tuple[float, float, float],
                   candidates: list[Candidate], net_scores: list[float] | None,
                   progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> list[Finding]:
    """``candidates`` segmented and scored (``net_scores``: a network's, one each; None: the logistic's), vessel
    stumps and duplicates dropped, best first."""

    def kept(n: int) -> Finding | None:
        finding = finding_of(ct, region, spacing_ijk, candidates[n], net_scores[n] if net_scores is not None else None)
        # A thick vessel's first part in the lung is no nodule; a click (interactive.py) may still add one by hand.
        return None if finding is None or is_vessel_stump(finding.mask, spacing_ijk) else finding

    findings: list[Finding] = []
    # Candidates are independent: on two cores the full phantom's best 100 took 5.1 s instead of 8.7 s.
    with ThreadPoolExecutor(available_threads()) as pool:
        for start in range(0, len(candidates), CHUNK):
            if cancel is not None:
                cancel.check("nodule")
            if progress is not None:
                progress(Progress("candidates", start, len(candidates), start / max(len(candidates), 1), None,
                                  f"candidate {start + 1} of {len(candidates)}"))
            chunk = range(start, min(start + CHUNK, len(candidates)))
            findings += [f for f in pool.map(kept, chunk) if f is not None]
    findings.sort(key=lambda f: -f.score)
    return _drop_duplicates(findings, ct.shape)


def finding_of(ct: np.ndarray, region: np.ndarray, spacing_ijk: tuple[float, float, float], cand: Candidate,
               net_score: float | None) -> Finding | None:
    """One candidate segmented and scored (``net_score``: the network's probability, None: the logistic's);
    None when its mask is not nodule-sized."""
    voxel_mm3 = float(np.prod(spacing_ijk))
    seg = segment_candidate(ct, region, spacing_ijk, cand.kji, cand.radius_mm)
    diameter = (6 * seg.voxels * voxel_mm3 / np.pi) ** (1 / 3) if seg is not None else 0.0
    if net_score is not None and diameter < NET_MIN_DIAMETER_MM:
        seg = ball_mask(ct, region, spacing_ijk, cand)
        diameter = (6 * seg.voxels * voxel_mm3 / np.pi) ** (1 / 3)
    elif net_score is not None:
        seg = clip_leak(seg, cand, spacing_ijk)
        diameter = (6 * seg.voxels * voxel_mm3 / np.pi) ** (1 / 3)
    smallest = NET_MIN_DIAMETER_MM if net_score is not None else MIN_DIAMETER_MM
    if seg is None or not smallest <= diameter <= MAX_DIAMETER_MM:
        return None
    f = candidate_features(cand, seg, spacing_ijk)
    return Finding(cand, seg, f, net_score if net_score is not None else float(score(f)[0]))


def clip_leak(seg: NoduleMask, cand: Candidate, spacing_ijk: tuple[float, float, float]) -> NoduleMask:
    """``seg`` cut to a ball around the candidate when it leaked (far more volume than the ball inscribed at its
    thickest point near the candidate, and centred off the candidate: a juxta-vascular nodule's mask that ran along
    its vessel), else ``seg`` itself. Network path only: there the network, which scored the blob, decides; the mask's
    centroid is where the table puts it. In mm, so at any sampling; the blob's radius, which a vessel the blob merged
    with inflates, only caps the cut."""
    spacing = np.asarray(spacing_ijk[::-1], float)
    centre = np.asarray(cand.kji, float) - [s.start for s in seg.box]
    dist = ball_distance(seg.mask.shape, centre, spacing)
    depth = edt.edt(seg.mask.view(np.uint8), anisotropy=tuple(spacing), black_border=True)
    inscribed = float(np.max(depth[dist <= max(cand.radius_mm, 1.5 * float(spacing.max()))], initial=0.0))
    radius = min(cand.radius_mm, inscribed)
    offset = float(np.linalg.norm((np.argwhere(seg.mask).mean(axis=0) - centre) * spacing)) if inscribed > 0 else 0.0
    if offset <= LEAK_OFFSET * radius or equivalent_radius(seg.mask, spacing) <= LEAK_CORE * inscribed:
        return seg
    keep = seg.mask & (dist <= CLIP_FACTOR * radius + 0.5 * float(spacing.max()))
    return replace(seg, mask=keep) if keep.any() else seg


def ball_mask(ct: np.ndarray, region: np.ndarray, spacing_ijk: tuple[float, float, float],
              cand: Candidate) -> NoduleMask:
    """The candidate's blob as a mask: the voxels within its radius (at least MIN_DIAMETER_MM / 2 + a
    voxel's half-diagonal, so that a small blob still holds a few voxels) inside the search region."""
    spacing = np.asarray(spacing_ijk[::-1], float)
    radius = max(cand.radius_mm, MIN_DIAMETER_MM / 2 + 0.5 * float(np.linalg.norm(spacing)) / 2)
    c = np.asarray(cand.kji, float)
    lo = np.maximum(np.floor(c - radius / spacing).astype(int), 0)
    hi = np.minimum(np.ceil(c + radius / spacing).astype(int) + 1, ct.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    axes = [(np.arange(a, b) - cc) * s for a, b, cc, s in zip(lo, hi, c, spacing)]
    dist = np.sqrt(axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2)
    allowed = region[box]
    mask = (dist <= radius) & allowed
    hu = ct[box]
    inside = hu[mask] if mask.any() else np.array([-850.0])
    background = float(np.median(hu[allowed & ~mask])) if np.any(allowed & ~mask) else -850.0
    return NoduleMask(box, mask, allowed, float("nan"), background, float(np.percentile(inside, 75)), 0.0, False)


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
