"""OARSeg's task as data: the ``clinseg oar`` options and how organs sit in the scene.

One segment per organ (RT colours and codes from the core; the spinal canal and the eyes at their full extent,
cord and lens included, on a layer of their own), an "organs" table (one row per organ) and, when a
GTV is given, a CTV segment grown from it by the margin. The GTV reaches the child as a label-map file on the
CT's grid (the shared job writes a segmentation-valued option to a file and passes its path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ClinicalSegLib.mrml_result import NodeRole, ResultLayout
from ClinicalSegLib.task import TaskSpec

from clinseg.errors import InputError

ORGAN_TABLE = "organs"
# As clinseg.tasks.oar.pipeline (a test keeps them equal): the selector needs them before PyTorch is installed.
MAX_MARGIN_MM = 30.0  # wider than any H&N CTV expansion; a larger value is a typo (cm for mm)
DEFAULT_MARGIN_MM = 5.0

LAYOUT = ResultLayout("Organ-at-risk results", "ClinicalSeg.OARSeg.", (
    NodeRole("organTable", "table", lambda table: table.name == ORGAN_TABLE),
    NodeRole("tables", "tables"),
), segmentation_suffix="organs")


def oar_options(options: dict[str, Any]) -> list[str]:
    """``gtv`` (a label-map file) -> ``--gtv``; ``marginMm`` (0-30 mm, only with a GTV) -> ``--margin``;
    ``learnedCtv`` (true, only without a GTV) -> ``--ctv-model`` (the shipped learned CTV model)."""
    unknown = set(options) - {"gtv", "marginMm", "learnedCtv"}
    if unknown:
        raise InputError("options", f"organ-at-risk segmentation takes no option {', '.join(sorted(unknown))}")
    gtv, margin, learned = options.get("gtv"), options.get("marginMm"), bool(options.get("learnedCtv"))
    if learned and gtv is not None:
        raise InputError("learned CTV", "choose one CTV source: the drawn GTV (margin) or the learned CTV")
    if gtv is None:
        if margin is not None:
            raise InputError("margin", "a CTV margin needs a GTV segmentation")
        return ["--ctv-model"] if learned else []
    if not isinstance(gtv, str | Path):
        raise InputError("GTV", f"expected a segmentation node or a label-map file, got {type(gtv).__name__}")
    args = ["--gtv", str(gtv)]
    if margin is not None:
        if not 0.0 <= float(margin) <= MAX_MARGIN_MM:
            raise InputError("margin", f"must lie in [0, {MAX_MARGIN_MM:g}] mm, got {margin}")
        args += ["--margin", f"{float(margin):g}"]
    return args


def organ_summary(metrics: dict[str, Any]) -> str:
    """The status line's sentence from the run's summary metrics; empty when the run did not report them."""
    parts = []
    if metrics.get("organs") is not None:
        parts.append(f"{int(metrics['organs'])} organ(s) segmented.")
    if metrics.get("ctv_volume_ml") is not None:
        parts.append(f"CTV {float(metrics['ctv_volume_ml']):.1f} ml.")
    return " ".join(parts)


def default_model() -> str | None:
    from clinseg.tasks.oar.pipeline import DEFAULT_MODEL

    return DEFAULT_MODEL


OAR = TaskSpec(
    name="oar",
    title="Organ-at-risk segmentation",
    engines=("auto", "model"),  # organs need the network: there is no classical engine
    default_model=default_model,
    arguments=oar_options,
    layout=LAYOUT,
)
