"""The NoduleSeg pipeline: chest CT -> nodule instances (label map, one segment each) + "nodules" table.

Steps: check the input, find body and lungs, run the engine (the classical one: blob candidates, a
mask per candidate, a false-positive score), keep the candidates scoring at least ``min_score``, write
them as labels 1..n (best first) and measure each into the table. No nodule above the threshold is a
valid answer: the label map is empty, the table has no rows, and the metrics say so.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ...anatomy.lungs import ChestMasks, chest_masks
from ...checks import require_3d_extent, require_ct
from ...engine.devices import select_device
from ...errors import InputError
from ...post.nodules import nodule_table
from ...preprocess import fill_ct_padding
from ...progress import CancelToken, ProgressCallback, Stages
from ...result import Result
from ...terminology import NODULE
from ...volume import Volume
from ..engines import resolve_engine
from .classical import Finding, find_nodules
from .fpr import MODEL_ID, THICK_SLICE_MM, FPReducer, default_fpr, load_fpr
from .nodulenet_engine import NoduleNetDetector

DEFAULT_MIN_SCORE = 0.5
DEFAULT_MAX_NODULES = 100
# Smaller than the airway task's: a nodule needs a few centimetres of lung, and real thin-slab series
# (e.g. 12 slices of 1.25 mm) hold whole nodules.
MIN_EXTENT_MM = (80.0, 80.0, 10.0)
MIN_SLICES = 8
EMPTY_MESSAGE = "no nodule above threshold"


@dataclass
class NoduleOptions:
    # "classical" (blob candidates + logistic score, no weights), "model" (the candidates scored by a registered
    # false-positive network, default fpr.MODEL_ID) or "auto" (that network when installed, else classical)
    engine: str = "auto"
    model_id: str | None = None
    device: str = "auto"
    min_score: float = DEFAULT_MIN_SCORE
    max_nodules: int = DEFAULT_MAX_NODULES


def _resolve_engine(options: NoduleOptions) -> tuple[str, FPReducer | NoduleNetDetector | None]:
    engine, model_id = resolve_engine("nodule", options.engine, options.model_id, MODEL_ID)
    if not model_id:
        return engine, None
    device = "cpu" if model_id == MODEL_ID else str(select_device(options.device))  # reducers are small: CPU
    return engine, load_fpr(model_id, device)


def checked_chest(ct: Volume, subject: str) -> tuple[Volume, ChestMasks]:
    """The input checks (3-D extent, CT numbers, lungs in view) of a run or a click; the CT with its scanner
    padding filled, and its chest masks."""
    require_3d_extent(ct, subject, MIN_EXTENT_MM, min_voxels=MIN_SLICES)
    require_ct(ct, subject)
    masks = chest_masks(ct, subject)  # before padding is filled: it tells the field of view's edge
    return fill_ct_padding(ct), masks


def sampling_warnings(spacing_ijk: tuple[float, float, float]) -> list[str]:
    """A warning when the voxels are too coarse for small nodules (detection still runs)."""
    coarsest = max(spacing_ijk)
    if coarsest <= THICK_SLICE_MM:
        return []
    return [f"voxel spacing {coarsest:.1f} mm: nodule detection is made for voxels of at most 1.4 mm and misses many "
            f"small nodules on coarser ones (phantoms at 2.5 mm slices: 50 of 80 found, against 66 at 1.4 mm)"]


def labels_from_findings(findings: list[Finding], shape: tuple[int, ...]) -> tuple[np.ndarray, dict[int, float]]:
    """Label map (1 = best score; a voxel belongs to the first finding that claims it) and scores by label."""
    labels = np.zeros(shape, np.uint16)
    scores: dict[int, float] = {}
    for f in findings:
        view = labels[f.mask.box]
        free = f.mask.mask & (view == 0)
        if not free.any():
            continue
        label = len(scores) + 1
        view[free] = label
        scores[label] = f.score
    return labels, scores


def run_nodule(ct: Volume, options: NoduleOptions | None = None, progress: ProgressCallback | None = None,
               cancel: CancelToken | None = None) -> Result:
    options = options or NoduleOptions()
    subject = ct.name or "CT"
    stages = Stages("nodule", progress, cancel)

    stages.begin("checks")
    engine, reducer = _resolve_engine(options)
    if not 0.0 <= options.min_score <= 1.0:
        raise InputError("min-score", f"must be between 0 and 1, got {options.min_score}")

    stages.begin("lungs")
    ct, masks = checked_chest(ct, subject)

    if reducer is not None and options.model_id is None:
        reducer = default_fpr(ct.spacing)  # the built-in network for this sampling

    stages.begin("detection")
    findings = find_nodules(ct.array, masks, ct.spacing, progress, cancel, reducer)
    kept = [f for f in findings if f.score >= options.min_score][: options.max_nodules]

    stages.begin("measurement")
    labels, scores = labels_from_findings(kept, ct.shape)
    labelmap = ct.with_array(labels, name="nodule")
    segments = [replace(NODULE, label=n, name=f"Nodule {n}") for n in sorted(scores)]
    table = nodule_table(labelmap, ct, scores)
    result = Result("nodule", labelmap=labelmap, segments=segments, tables=[table])
    result.metrics.update(
        engine=engine, model=reducer.model_id if reducer else None, min_score=options.min_score, count=len(scores),
        candidates=len(findings),
        message=EMPTY_MESSAGE if not scores else f"{len(scores)} nodule(s) at score >= {options.min_score:g}",
        types={k: table.columns["type"].count(k) for k in sorted(set(table.columns["type"]))},
        warnings=sampling_warnings(ct.spacing),
    )
    result.metrics["timings_s"] = stages.end()
    return result
