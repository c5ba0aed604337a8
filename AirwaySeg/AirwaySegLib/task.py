"""AirwaySeg's task as data: the ``clinseg airway`` options, how its outputs sit in the scene, its colours.

The shared base (``ClinicalSegLib``) does the rest: the job, the model selector, Apply/Cancel, the import.
"""

from __future__ import annotations

from typing import Any

from ClinicalSegLib.mrml_result import NodeRole, ResultLayout
from ClinicalSegLib.task import TaskSpec

from clinseg.errors import InputError
from clinseg.result import Curve, Table
from clinseg.volume import LPS_TO_RAS

ROUTE_GROUP = "route"  # Curve.attributes["group"] of route curves (their .mrk.json file stem)


def is_route_curve(curve: Curve) -> bool:
    """In the ``route`` group, or carrying a route's summary (``Route.to_curve`` puts its branch sequence there)."""
    return curve.attributes.get("group") == ROUTE_GROUP or "branch_sequence" in curve.attributes


def is_route_table(table: Table) -> bool:
    return ROUTE_GROUP in table.name.lower()  # "airway_route", "route"


LAYOUT = ResultLayout("Airway results", "ClinicalSeg.AirwaySeg.", (
    NodeRole("centerlines", "curves", lambda c: not is_route_curve(c), "Centerlines", tier=0,
             color=(0.2, 0.6, 1.0), line_thickness=0.3),
    NodeRole("branchTable", "table", lambda t: not is_route_table(t), tier=0),
    NodeRole("route", "curves", is_route_curve, "Route", tier=1, color=(1.0, 0.85, 0.1), line_thickness=0.6),
    NodeRole("routeTable", "table", is_route_table, "Route", tier=1),
), segmentation_suffix="airway")


def check_scope(scope_diameter_mm: float | None) -> None:
    if scope_diameter_mm is not None and not scope_diameter_mm > 0:
        raise InputError("scope diameter", f"must be positive, got {scope_diameter_mm}")


def airway_options(options: dict[str, Any]) -> list[str]:
    """``targetPoint`` (fiducial node or RAS triple) and ``scopeDiameterMm`` -> ``clinseg airway`` options."""
    from .routes import target_lps

    unknown = set(options) - {"targetPoint", "scopeDiameterMm"}
    if unknown:
        raise InputError("options", f"airway segmentation takes no option {', '.join(sorted(unknown))}")
    args = []
    if options.get("targetPoint") is not None:
        ras = LPS_TO_RAS @ target_lps(options["targetPoint"])
        # One token: a value starting with "-" would otherwise be parsed as an option.
        args += ["--target=" + ",".join(f"{float(v):.4f}" for v in ras), "--ras"]
    scope = options.get("scopeDiameterMm")
    if scope is not None:
        check_scope(scope)
        args += ["--scope-diameter", f"{float(scope):g}"]
    return args


def default_model() -> str | None:
    from clinseg.tasks.airway.pipeline import DEFAULT_MODEL

    return DEFAULT_MODEL


AIRWAY = TaskSpec(
    name="airway",
    title="Airway segmentation",
    engines=("auto", "model", "classical"),
    classical_summary="Classical engine: trachea seed and adaptive region growing with leak control; no weights, "
                      "no training data. Finds the larger bronchi; small peripheral branches are often missed.",
    default_model=default_model,
    arguments=airway_options,
    layout=LAYOUT,
)
