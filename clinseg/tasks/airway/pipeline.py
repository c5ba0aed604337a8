"""The AirwaySeg pipeline: CT -> airway mask -> centerline tree -> route, as one Result.

Steps: check the input, find body/lungs/trachea, segment (trained model through the
sliding-window engine, or the classical engine), keep the largest component and
fill holes, extract the tree, plan the route to an optional target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...anatomy.lungs import chest_masks
from ...anatomy.trachea import TracheaNotInView, find_trachea
from ...checks import require_3d_extent, require_ct
from ...errors import InputError
from ...post.components import component_near, component_report, fill_holes, largest_component
from ...post.route import plan_route
from ...post.tree import extract_tree
from ...preprocess import fill_ct_padding
from ...progress import CancelToken, ProgressCallback, Stages
from ...result import Result
from ...terminology import AIRWAY
from ...volume import Volume
from ..engines import resolve_engine
from .classical import segment_airway_classical
from .model import airway_probability

# The model ``auto`` runs when it is installed; None: the classical engine. A model becomes the default only
# when it beats the classical engine on the held-out comparison (docs/airway.md); none does yet.
DEFAULT_MODEL: str | None = None
MIN_EXTENT_MM = (80.0, 80.0, 40.0)
TRACHEA_NEAR_MM = 10.0  # the kept component must reach this close to the trachea seed


@dataclass
class AirwayOptions:
    engine: str = "auto"  # "model", "classical", or "auto" (model when installed, else classical)
    model_id: str | None = None
    device: str = "auto"
    target_lps: tuple[float, float, float] | None = None
    scope_diameter_mm: float | None = None


def _airway_component(
    mask: np.ndarray, seed: np.ndarray | None, spacing: tuple, model_id: str | None
) -> np.ndarray:
    """The component through the trachea seed: a network's false positives (a dark band along the chest wall,
    the oesophagus) can outgrow a fragmented airway. A card whose postprocessing names ``largest_component``
    (an upstream recipe reproduced exactly, e.g. the ATM'22 baseline) gets the largest component instead, as
    does a network's output when no trachea seed was found."""
    from ...registry import get_registry

    ops = [op.get("op") for op in get_registry().card(model_id).postprocessing] if model_id else []
    if "largest_component" in ops or seed is None:
        return largest_component(mask)
    radius = tuple(max(1, round(TRACHEA_NEAR_MM / s)) for s in spacing[::-1])
    return component_near(mask, seed, radius)


def run_airway(
    ct: Volume,
    options: AirwayOptions | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Result:
    options = options or AirwayOptions()
    subject = ct.name or "CT"
    stages = Stages("airway", progress, cancel)

    stages.begin("checks")
    require_3d_extent(ct, subject, MIN_EXTENT_MM)
    require_ct(ct, subject)
    engine, model_id = resolve_engine("airway", options.engine, options.model_id, DEFAULT_MODEL)

    stages.begin("lungs")
    masks = chest_masks(ct, subject)  # sees the scanner's padding, to tell the field of view's edge
    ct = fill_ct_padding(ct)
    try:
        seed = find_trachea(ct, masks, subject)
    except TracheaNotInView:
        raise
    except InputError:
        if engine != "model":
            raise  # the classical engine grows from the seed
        seed = None  # a network needs no seed; its largest component stands in for the trachea's

    stages.begin("segmentation")
    if engine == "model":
        probability_mask = airway_probability(ct, masks, model_id, options.device, progress, cancel).mask(ct.shape)
        report = {"model": model_id}
    else:
        probability_mask, report = segment_airway_classical(ct, masks, seed, progress, cancel)
        report["model"] = None

    stages.begin("postprocess")
    islands = component_report(probability_mask, ct.spacing)
    mask = fill_holes(_airway_component(probability_mask, seed, ct.spacing, model_id))
    if not mask.any():
        raise InputError(subject, "no airway found")

    result = _tree_result(ct.with_array(mask.astype(np.uint8), name="airway"), options, stages)
    result.metrics.update(
        engine=engine,
        engine_report=report,
        islands_removed=len(islands) - 1 if islands else 0,
        trachea_seed_ijk=None if seed is None else [int(v) for v in seed[::-1]],
        airway_volume_ml=float(mask.sum() * np.prod(ct.spacing) / 1000.0),
    )
    result.metrics["timings_s"] = stages.end()
    return result


def update_from_mask(
    mask: Volume,
    options: AirwayOptions | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Result:
    """Recompute tree and route from an (edited) airway mask, e.g. after Segment Editor work."""
    options = options or AirwayOptions()
    stages = Stages("airway", progress, cancel)
    stages.begin("postprocess")
    binary = mask.array > 0
    if not binary.any():
        raise InputError(mask.name or "airway mask", "is empty")
    result = _tree_result(mask.with_array(binary.astype(np.uint8), name="airway"), options, stages)
    result.metrics["timings_s"] = stages.end()
    return result


def _tree_result(mask: Volume, options: AirwayOptions, stages: Stages) -> Result:
    stages.begin("tree")
    result = Result("airway", labelmap=mask, segments=[AIRWAY])
    try:
        tree = extract_tree(mask)
    except InputError as error:
        if options.target_lps is not None:
            raise  # a route was asked for and cannot exist without a tree
        # The segmentation is still worth keeping (and editing): say why there is no tree.
        result.metrics["warnings"] = [f"no centerline tree: {error.problem}"]
        result.metrics["tree"] = {"branches": 0}
        return result
    for curve in tree.to_curves():
        curve.attributes["group"] = "centerlines"
        result.curves.append(curve)
    branches = tree.to_table()
    branches.name = "branches"
    result.tables.append(branches)
    result.metrics["tree"] = {
        "branches": len(tree.branches),
        "max_generation": max((b.generation for b in tree.branches), default=0),
        "loops_broken": tree.loops_broken,
        "islands": len(tree.islands),
        "named": sorted(b.name for b in tree.branches if b.name),
    }
    if options.target_lps is not None:
        stages.begin("route")
        route = plan_route(tree, np.asarray(options.target_lps, dtype=float), options.scope_diameter_mm)
        curve = route.to_curve()
        curve.attributes["group"] = "route"
        result.curves.append(curve)
        table = route.to_table()
        table.name = "route"
        result.tables.append(table)
        result.metrics["route"] = route.summary()
    return result
