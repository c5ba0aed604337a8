"""NoduleSeg's task as data: the ``clinseg nodule`` options and how nodules sit in the scene.

Per nodule: its own segment (coded as a nodule), a row of the "nodules" table (centre, axial long and short
axis, volume, type, score, Lung-RADS size category for information) and a control point of one markups node
at its centre, labelled as its segment. The shared base does the rest.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import slicer
import vtk
from ClinicalSegLib.mrml_common import sh_item, subject_hierarchy
from ClinicalSegLib.mrml_result import (
    ImportRequest,
    NodeRole,
    ResultLayout,
    derived_nodes,
    import_result,
    referenced_nodes,
    remove_derived,
)
from ClinicalSegLib.mrml_segmentation import LABEL_TAG, add_segment
from ClinicalSegLib.mrml_table import append_rows
from ClinicalSegLib.task import TaskSpec

from clinseg.errors import InputError
from clinseg.result import Result
from clinseg.terminology import NODULE as NODULE_SEGMENT
from clinseg.volume import Volume

if TYPE_CHECKING:
    from clinseg.tasks.nodule.interactive import ClickedNodule

LAYOUT = ResultLayout("Nodule results", "ClinicalSeg.NoduleSeg.", (
    NodeRole("noduleTable", "table", lambda table: table.name == "nodules"),
    NodeRole("tables", "tables"),
), segmentation_suffix="nodules")
POINTS_ROLE = LAYOUT.role("centers")
POINT_COLOR = (0.95, 0.45, 0.2)
# A CSV carries no column types: a category column holding only "2" and "3" reads back as numbers (shown "2.0").
TEXT_COLUMNS = ("type", "lung_rads_size_category", "lung_rads_note")
LAST_LABEL_ATTRIBUTE = "ClinicalSeg.NoduleSeg.LastLabel"  # on the segmentation node: labels are not reused


def nodule_options(options: dict[str, Any]) -> list[str]:
    """``minScore`` (0..1) -> ``--min-score``; anything else is an error."""
    unknown = set(options) - {"minScore"}
    if unknown:
        raise InputError("options", f"nodule segmentation takes no option {', '.join(sorted(unknown))}")
    score = options.get("minScore")
    if score is None:
        return []
    if not 0.0 <= float(score) <= 1.0:
        raise InputError("minimum score", f"must lie in [0, 1], got {score}")
    return ["--min-score", f"{float(score):g}"]


def table_rows(table_node) -> list[dict[str, Any]]:
    table = table_node.GetTable()
    columns = {table.GetColumnName(c): table.GetColumn(c) for c in range(table.GetNumberOfColumns())}
    return [{name: column.GetValue(r) for name, column in columns.items()} for r in range(table.GetNumberOfRows())]


def add_center_point(points: slicer.vtkMRMLMarkupsFiducialNode, row: dict[str, Any]) -> int:
    """A locked control point at the row's centre (RAS), labelled "Nodule <label>", its type, size and score in
    the description; returns its index."""
    x, y, z = (float(row[f"center_lps_{axis}_mm"]) for axis in "xyz")
    index = points.AddControlPointWorld(-x, -y, z, f"Nodule {int(row['label'])}")
    size = row.get("mean_diameter_mm")
    points.SetNthControlPointDescription(index, f"{row.get('type', '')}, {size:.1f} mm, score "
                                                f"{row.get('score', float('nan')):.2f}")
    points.SetNthControlPointLocked(index, True)
    return index


def center_points(scene: slicer.vtkMRMLScene, table_node, name: str) -> slicer.vtkMRMLMarkupsFiducialNode:
    """One centre point per table row (``add_center_point``), in table order."""
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    points.CreateDefaultDisplayNodes()
    points.GetDisplayNode().SetSelectedColor(*POINT_COLOR)
    for row in table_rows(table_node):
        add_center_point(points, row)
    return points


def import_nodules(scene: slicer.vtkMRMLScene, result: Result, request: ImportRequest) -> dict[str, Any]:
    """The shared import (segmentation + tables) plus the centre points, which replace any earlier ones."""
    for table in result.tables:
        for key in TEXT_COLUMNS:
            if key in table.columns:
                table.columns[key] = ["" if v is None else str(v) for v in table.columns[key]]
    nodes = import_result(scene, result, LAYOUT, request)
    segmentation = nodes["segmentation"]
    remove_derived(scene, segmentation, [POINTS_ROLE], keep_folder=nodes["folder"])
    nodes["centers"] = None
    if nodes["noduleTable"] is not None:
        nodes["centers"] = center_points(scene, nodes["noduleTable"], f"{segmentation.GetName()} centres")
        subject_hierarchy(scene).SetItemParent(sh_item(scene, nodes["centers"]), nodes["folder"])
        segmentation.AddNodeReferenceID(POINTS_ROLE, nodes["centers"].GetID())
    return nodes


def nodule_nodes(segmentation_node) -> dict[str, Any]:
    """A NoduleSeg result by its segmentation node: ``{"segmentation", "noduleTable", "centers", "tables"}``."""
    if segmentation_node is None:
        raise InputError("segmentation", "no nodule segmentation selected")
    nodes = {"segmentation": segmentation_node, **derived_nodes(segmentation_node, LAYOUT)}
    points = referenced_nodes(segmentation_node, POINTS_ROLE)
    nodes["centers"] = points[0] if points else None
    return nodes


def add_nodule(nodes: dict[str, Any], clicked: ClickedNodule, ct: Volume) -> dict[str, Any]:
    """Add a clicked nodule (``clinseg.tasks.nodule.interactive``) to a result: its segment, its table row and its
    centre point, under the label it was measured as. ``nodes`` as ``nodule_nodes`` gives them."""
    from clinseg.post.nodules import measurements_table  # the core's dependencies load on first use

    label = int(clicked.measurement.label)
    segment = replace(NODULE_SEGMENT, label=label, name=f"Nodule {label}")
    table = measurements_table([clicked.measurement])
    add_segment(nodes["segmentation"], clicked.labelmap(ct, label), segment)
    append_rows(nodes["noduleTable"], table)
    add_center_point(nodes["centers"], {k: v[0] for k, v in table.columns.items()})
    _note_label(nodes["segmentation"], label)
    return nodes


def remove_nodule(nodes: dict[str, Any], label: int) -> None:
    """Remove nodule ``label`` from a result: its segment, its table row and its centre point together."""
    segmentation = nodes["segmentation"]
    ids = [segmentation.GetSegmentation().GetNthSegmentID(n)
           for n in range(segmentation.GetSegmentation().GetNumberOfSegments())]
    segment_ids = [i for i in ids if label_of_segment(segmentation, i) == label]
    rows = [n for n, row in enumerate(table_rows(nodes["noduleTable"])) if int(row["label"]) == label]
    points = nodes.get("centers")
    indices = [] if points is None else [n for n in range(points.GetNumberOfControlPoints())
                                         if points.GetNthControlPointLabel(n) == f"Nodule {label}"]
    if not segment_ids and not rows:
        raise InputError(f"nodule {label}", "is not in this result")
    _note_label(segmentation, label)
    for segment_id in segment_ids:
        segmentation.GetSegmentation().RemoveSegment(segment_id)
    for row in reversed(rows):
        nodes["noduleTable"].GetTable().RemoveRow(row)
    nodes["noduleTable"].Modified()
    for index in reversed(indices):
        points.RemoveNthControlPoint(index)


def _note_label(segmentation_node, label: int) -> None:
    last = segmentation_node.GetAttribute(LAST_LABEL_ATTRIBUTE)
    segmentation_node.SetAttribute(LAST_LABEL_ATTRIBUTE, str(max(int(last or 0), int(label))))


def next_label(nodes: dict[str, Any]) -> int:
    """One more than every nodule label in the table, the segments' tags and the removed ones (a label once
    shown is never given to another nodule)."""
    segmentation = nodes["segmentation"]
    labels = [int(segmentation.GetAttribute(LAST_LABEL_ATTRIBUTE) or 0)]
    labels += [int(row["label"]) for row in table_rows(nodes["noduleTable"])]
    labels += [label_of_segment(segmentation, segmentation.GetSegmentation().GetNthSegmentID(n)) or 0
               for n in range(segmentation.GetSegmentation().GetNumberOfSegments())]
    return max(labels, default=0) + 1


def label_of_segment(segmentation_node, segment_id: str) -> int | None:
    """The nodule's label value kept in the segment's tag (Segment Editor renumbers layers, not tags)."""
    value = vtk.reference("")
    if segmentation_node.GetSegmentation().GetSegment(segment_id).GetTag(LABEL_TAG, value):
        return int(str(value)) if str(value).isdigit() else None
    return None


def show_above(nodes: dict[str, Any], min_score: float) -> int:
    """Show the nodules scoring at least ``min_score`` (segments and points), hide the others; returns the count."""
    rows = table_rows(nodes["noduleTable"]) if nodes.get("noduleTable") is not None else []
    visible = {int(row["label"]): float(row["score"]) >= min_score for row in rows if np.isfinite(row["score"])}
    segmentation = nodes["segmentation"]
    display = segmentation.GetDisplayNode()
    for n in range(segmentation.GetSegmentation().GetNumberOfSegments()):
        segment_id = segmentation.GetSegmentation().GetNthSegmentID(n)
        label = label_of_segment(segmentation, segment_id)
        if display is not None and label in visible:
            display.SetSegmentVisibility(segment_id, visible[label])
    points = nodes.get("centers")
    if points is not None:
        for index in range(points.GetNumberOfControlPoints()):
            label = int(points.GetNthControlPointLabel(index).rsplit(" ", 1)[-1])
            points.SetNthControlPointVisibility(index, visible.get(label, True))
    return sum(visible.values())


NODULE = TaskSpec(
    name="nodule",
    title="Lung nodule segmentation",
    engines=("auto", "model", "classical"),
    classical_summary="Classical engine: lung mask, multi-scale blob enhancement and per-candidate region "
                      "growing with a hand-set score; no weights, no training data.",
    arguments=nodule_options,
    layout=LAYOUT,
    import_result=import_nodules,
)
