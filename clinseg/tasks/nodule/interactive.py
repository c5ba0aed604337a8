"""Click-to-add: the one nodule at a point, found and measured by the same code as a full run.

Around the click the detector's blob filter runs on a small crop (``detect_candidates``); the blob
nearest the click goes the run's way for one candidate (``classical.finding_of``: the per-nodule
segmenter and the false-positive score, the network's when installed) and is measured like every
nodule of a run (``measure_nodules``). A click that is
not on a nodule-like structure (outside the lungs, on air, on a vessel, on something too small or too
large for a nodule) is refused with a one-line ``InputError`` that says why.

The search region (lungs closed around juxta-pleural nodules) costs a pass over the whole CT; a caller
that adds several nodules to one CT computes it once (``search_space``) and passes it on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ...errors import InputError
from ...post.nodules import NoduleMeasurement, measure_nodules, measurements_table
from ...result import Result
from ...terminology import NODULE
from ...volume import Volume
from .candidates import Candidate, detect_candidates
from .classical import MAX_DIAMETER_MM, MIN_BLOBNESS, MIN_DIAMETER_MM, NET_MIN_DIAMETER_MM, finding_of
from .fpr import default_fpr
from .pipeline import checked_chest
from .region import search_region
from .segment import NoduleMask

CROP_MM = 40.0  # half-size of the crop the blob filter runs on (the largest nodule's radius + the filter's reach)
CLICK_TOLERANCE_MM = 3.0  # the click may miss the nodule's mask by this much (a click on its edge)


@dataclass
class SearchSpace:
    """A CT as the detector sees it (scanner padding filled) and its search region (bool ``[k, j, i]``)."""

    ct: Volume
    region: np.ndarray


@dataclass
class ClickedNodule:
    """The nodule found at a click: its mask (``mask.mask`` inside ``mask.box`` of the CT grid), score and
    measurements (as a run's table row)."""

    point_lps: np.ndarray
    candidate: Candidate
    mask: NoduleMask
    score: float
    measurement: NoduleMeasurement
    model: str | None = None  # the FP network that scored it (None: the classical engine's logistic)

    def labelmap(self, ct: Volume, label: int = 1) -> Volume:
        """The nodule as ``label`` on the CT's full grid."""
        labels = np.zeros(ct.shape, np.uint16 if label > 255 else np.uint8)
        labels[self.mask.box][self.mask.mask] = label
        return ct.with_array(labels, name="nodule")


def search_space(ct: Volume) -> SearchSpace:
    """The run's input checks, lungs and search region for ``ct`` (the costly part of a click, done once)."""
    filled, masks = checked_chest(ct, ct.name or "CT")
    return SearchSpace(filled, search_region(masks, ct.spacing))


def _crop(volume: Volume, box: tuple[slice, ...], array: np.ndarray) -> Volume:
    """``array`` (the ``box`` part of ``volume``'s grid) as a Volume placed where the box lies."""
    origin = volume.index_to_physical(np.array([s.start for s in box[::-1]], float))
    return Volume(array, volume.spacing, tuple(float(v) for v in origin), volume.direction, volume.name)


def _where(point_lps: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in point_lps) + ") mm LPS"


def nodule_at(space: SearchSpace | Volume, point_lps, label: int = 1) -> ClickedNodule:
    """The nodule at ``point_lps`` (LPS mm): segmented, scored and measured (as ``label``), or an
    ``InputError`` saying why there is none. ``space`` is a ``search_space`` or the CT itself."""
    space = space if isinstance(space, SearchSpace) else search_space(space)
    ct, region = space.ct, space.region
    point = np.asarray(point_lps, float).reshape(-1)
    if point.shape != (3,) or not np.all(np.isfinite(point)):
        raise InputError("point", f"expected three finite LPS coordinates, got {point_lps!r}")
    kji = ct.physical_to_index(point)[::-1]
    if np.any(kji < -0.5) or np.any(kji > np.asarray(ct.shape) - 0.5):
        raise InputError("point", f"{_where(point)} lies outside the CT")
    centre = tuple(int(v) for v in np.rint(kji))
    if not region[centre]:
        raise InputError("point", f"{_where(point)} lies outside the lungs: no nodule to add there")

    spacing = np.asarray(ct.spacing[::-1], float)  # k, j, i
    half = np.ceil(CROP_MM / spacing).astype(int)
    lo = np.maximum(np.asarray(centre) - half, 0)
    hi = np.minimum(np.asarray(centre) + half + 1, ct.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    blobs = detect_candidates(ct.array[box], region[box], ct.spacing)
    near = [replace(c, kji=c.kji + lo) for c in blobs]
    near = [c for c in near if np.linalg.norm((c.kji - kji) * spacing) <= c.radius_mm + CLICK_TOLERANCE_MM]
    if not near:
        raise InputError("point", f"no nodule-like structure at {_where(point)} (no blob there)")
    cand = min(near, key=lambda c: float(np.linalg.norm((c.kji - kji) * spacing)))
    # A tube is never a nodule to add (the run without the FP network drops it too, with the network it is
    # scored, usually low). Then the run's path for one candidate: with the network its score decides (a failed
    # mask keeps the blob's ball), without it the logistic over the mask's shape scores.
    if cand.blobness < MIN_BLOBNESS:
        raise InputError("point", f"the structure at {_where(point)} is tube-shaped (a vessel?), not a nodule")
    network = default_fpr(ct.spacing)  # the default run's engine (auto)
    net_score = None if network is None else \
        float(1.0 / (1.0 + np.exp(-network.logits(ct.array, ct.spacing, [cand])[0])))
    finding = finding_of(ct.array, region, ct.spacing, cand, net_score)
    if finding is None:
        smallest = MIN_DIAMETER_MM if network is None else NET_MIN_DIAMETER_MM
        raise InputError("point", f"nothing nodule-sized at {_where(point)} (no mask of {smallest:g}-"
                                  f"{MAX_DIAMETER_MM:g} mm denser than the lung)")
    seg, probability = finding.mask, finding.score
    voxels = np.argwhere(seg.mask) + [s.start for s in seg.box]
    if float(np.min(np.linalg.norm((voxels - kji) * spacing, axis=1))) > CLICK_TOLERANCE_MM:
        raise InputError("point", f"no nodule at {_where(point)}: the nearest blob lies beside the click")

    # Measured on a crop around the mask (the whole grid would cost a pass per click), then placed back.
    mbox = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(seg.box, ct.shape))
    labels = np.zeros(tuple(s.stop - s.start for s in mbox), np.uint16)
    inner = tuple(slice(s.start - m.start, s.stop - m.start) for s, m in zip(seg.box, mbox))
    labels[inner][seg.mask] = label
    (measurement,) = measure_nodules(_crop(ct, mbox, labels), _crop(ct, mbox, ct.array[mbox]), {label: probability})
    measurement.center_ijk = measurement.center_ijk + [s.start for s in mbox[::-1]]
    return ClickedNodule(point, cand, seg, probability, measurement, network.model_id if network else None)


def clicked_result(ct: Volume, clicked: ClickedNodule, label: int = 1) -> Result:
    """A run's ``Result`` holding only the clicked nodule (label map, segment, one-row "nodules" table)."""
    segment = replace(NODULE, label=label, name=f"Nodule {label}")
    result = Result("nodule", labelmap=clicked.labelmap(ct, label), segments=[segment],
                    tables=[measurements_table([clicked.measurement])])
    result.metrics.update(engine="model" if clicked.model else "classical", model=clicked.model, count=1,
                          added_at_lps=[round(float(v), 2) for v in clicked.point_lps],
                          message=f"nodule added at {_where(clicked.point_lps)} (score {clicked.score:.2f})")
    return result
