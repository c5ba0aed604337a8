"""The OARSeg pipeline: head & neck CT -> organs at risk (two-stage network) [+ CTV] -> Result.

Steps: check the input (a CT, big enough, of the head and neck: a chest or abdomen scan is refused), stage 1 on the
whole downsampled scan, stage 2 on crops around the small organs, one connected component per organ, a per-organ
volume table. A CTV comes from one of two sources: with a drawn GTV, the anatomy-constrained margin tool grows it;
with ``ctv_model``, the learned CTV network (``ctv.predict_ctv``) finds it from the CT alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...checks import require_3d_extent, require_ct
from ...errors import InputError
from ...preprocess import fill_ct_padding, resample_to
from ...progress import CancelToken, ProgressCallback, Stages
from ...result import Result
from ...terminology import CTV
from ...volume import Volume
from ..engines import resolve_engine
from .organs import keep_one_component, organ_table, segments_of
from .region import require_head_and_neck

DEFAULT_MODEL = "oar-unet-phantom"
MIN_EXTENT_MM = (80.0, 80.0, 60.0)
DEFAULT_MARGIN_MM = 5.0
# Part B's GTV -> CTV tool (module, function); imported only when a GTV is given.


@dataclass
class OarOptions:
    engine: str = "auto"  # "model" or "auto" (the only engine: the network)
    model_id: str | None = None
    device: str = "auto"
    gtv: Volume | None = None  # drawn GTV mask (non-zero inside), any grid
    margin_mm: float = DEFAULT_MARGIN_MM
    stage2: bool = True
    check_region: bool = True
    ctv_model: str | None = None  # a registered CTV model (e.g. ctv-unet-phantom): the learned CTV, without a GTV


def _model_id(options: OarOptions) -> str:
    return resolve_engine("oar", options.engine, options.model_id, DEFAULT_MODEL, engines=("auto", "model"))[1]


def grow_ctv(ct: Volume, gtv: Volume, margin_mm: float) -> Volume:
    """The CTV grown from the GTV through soft tissue only (``clinseg.post.margin``)."""
    from ...post.margin import ctv_from_gtv

    return ctv_from_gtv(gtv, ct, margin_mm)


def _gtv_on_grid(gtv: Volume, ct: Volume) -> Volume:
    mask = gtv.with_array((np.asarray(gtv.array) != 0).astype(np.uint8))
    if not mask.same_grid(ct):
        mask = resample_to(mask, ct, order=0)
    if not mask.array.any():
        raise InputError("--gtv", "the GTV mask is empty on the CT grid")
    return mask


def run_oar(
    ct: Volume,
    options: OarOptions | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Result:
    """Organs at risk of a head & neck CT (and a CTV with a GTV) as one Result."""
    from .model import predict_organs

    options = options or OarOptions()
    subject = ct.name or "CT"
    stages = Stages("oar", progress, cancel)
    stages.begin("checks")
    require_3d_extent(ct, subject, MIN_EXTENT_MM)
    require_ct(ct, subject)
    ct = fill_ct_padding(ct)
    evidence = require_head_and_neck(ct, subject) if options.check_region else None
    model_id = _model_id(options)
    gtv = _gtv_on_grid(options.gtv, ct) if options.gtv is not None else None
    if gtv is not None and not 0.0 <= options.margin_mm <= 30.0:
        raise InputError("--margin", f"must lie in [0, 30] mm, got {options.margin_mm}")
    if gtv is not None and options.ctv_model:
        raise InputError("--ctv-model", "choose one CTV source: a drawn GTV (margin tool) or the learned model")

    stages.begin("organs")
    prediction = predict_organs(ct, model_id, options.device, options.stage2, progress, cancel)
    stages.begin("post-processing")
    labels = keep_one_component(prediction.labels.array)
    segments = segments_of(model_id, labels)
    warnings = [f"{name}: not found" for name in prediction.missing_stage2]

    ctv_ml = None
    if gtv is not None or options.ctv_model:
        stages.begin("ctv")
        if gtv is not None:
            ctv = grow_ctv(ct, gtv, options.margin_mm)
        else:
            from .ctv import predict_ctv

            ctv = predict_ctv(ct, options.ctv_model, options.device, progress, cancel)
        inside = np.asarray(ctv.array) != 0
        if inside.any():
            ctv_ml = float(inside.sum()) * float(np.prod(ct.spacing)) / 1000.0
            # One label per voxel: the CTV keeps the voxels no organ holds (its full extent: ctv_volume_ml).
            labels[inside & (labels == 0)] = CTV.label
            segments.append(CTV)
        else:
            warnings.append(f"CTV: not found by the learned model {options.ctv_model}")
    stages.begin("done")
    labelmap = ct.with_array(labels, name="organs")
    table = organ_table(labelmap, segments)
    metrics = {
        "model": model_id,
        "organs": sum(1 for s in segments if s.label != CTV.label),
        "stage2_organs": prediction.stage2,
        "ctv_volume_ml": None if ctv_ml is None else round(ctv_ml, 3),
        "margin_mm": options.margin_mm if gtv is not None else None,
        "ctv_model": options.ctv_model if gtv is None else None,
        "timings_s": stages.timings,
        "warnings": warnings,
    }
    if evidence is not None:
        metrics["region"] = {"skull_area_cm2": round(evidence.skull_area_cm2, 1),
                             "lung_slices": round(evidence.lung_slices, 3)}
    return Result("oar", labelmap, segments, tables=[table], metrics=metrics)
