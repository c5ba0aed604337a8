"""An airway run's outputs -> MRML: segmentation, centerline tree, branch table, route, in one folder.

Two sources feed the same import: a finished ``clinseg airway`` output folder (``read_output_folder``)
and a ``Result`` computed in-process (route planning, update from an edited segmentation).

The segmentation node anchors the derived nodes through MRML node references (saved with the scene),
so a later update replaces exactly the centerlines, tables and route of that segmentation and nothing
else. Imports only ``slicer`` and ``vtk``: runs on a headless ``slicer-core`` scene.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import slicer
from ClinicalSegLib.mrml import curve_nodes_from_curves, segmentation_node_from_labelmap, table_node_from_table
from ClinicalSegLib.mrml_common import sh_folder, sh_item, sh_parent_of, subject_hierarchy
from ClinicalSegLib.mrml_markups import check_curves
from ClinicalSegLib.mrml_table import check_table

from clinseg.errors import InputError
from clinseg.io import read_segmentation
from clinseg.io.markups import read_curves
from clinseg.io.tables import read_table
from clinseg.result import Curve, Result, Table

ROUTE_GROUP = "route"  # Curve.attributes["group"] of route curves (their .mrk.json file stem)
RESULTS_FOLDER = "Airway results"
CENTERLINES_FOLDER = "Centerlines"
ROUTE_FOLDER = "Route"

# Node reference roles from the segmentation node to what was derived from it.
ROLE_PREFIX = "ClinicalSeg.AirwaySeg."
CENTERLINE_ROLE = ROLE_PREFIX + "centerline"
BRANCH_TABLE_ROLE = ROLE_PREFIX + "branchTable"
ROUTE_ROLE = ROLE_PREFIX + "route"
ROUTE_TABLE_ROLE = ROLE_PREFIX + "routeTable"
TREE_ROLES = (CENTERLINE_ROLE, BRANCH_TABLE_ROLE)
ROUTE_ROLES = (ROUTE_ROLE, ROUTE_TABLE_ROLE)

CENTERLINE_COLOR = (0.2, 0.6, 1.0)
ROUTE_COLOR = (1.0, 0.85, 0.1)


# -- reading an output folder ------------------------------------------------------------------------
def _number(text: str) -> float | int | None:
    value = float(text)
    if math.isfinite(value) and value == int(value) and "." not in text and "e" not in text.lower():
        return int(value)
    return value


def typed_table(table: Table) -> Table:
    """Numbers back from CSV text: a column whose non-empty cells all parse as numbers becomes numeric.

    Empty cells become ``None`` in numeric columns (NaN in the table node), so the table view sorts
    lengths and diameters as numbers rather than as text.
    """
    columns: dict[str, list] = {}
    for key, values in table.columns.items():
        texts = [str(v).strip() for v in values]
        try:
            numbers = [None if t == "" else _number(t) for t in texts]
        except ValueError:
            columns[key] = list(values)
            continue
        columns[key] = numbers if any(n is not None for n in numbers) else list(values)
    return Table(table.name, columns)


OUTPUT_SUFFIXES = (".seg.nrrd", ".mrk.json", ".csv", ".png")


def _output_files(folder: Path, listed: list[str]) -> list[Path]:
    """The files ``summary.json`` lists plus any other output file in the folder (roles may collide in the
    summary, e.g. a ``route`` curve group and a ``route`` table), in a stable order."""
    names = {name for name in listed if name.endswith(OUTPUT_SUFFIXES)}
    names |= {p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(OUTPUT_SUFFIXES)}
    return [folder / name for name in sorted(names)]


def read_output_folder(folder: str | Path) -> Result:
    """A ``Result`` back from a folder written by ``clinseg.output.write_result`` (``summary.json`` lists its files).

    Curves keep their group (the ``.mrk.json`` file stem) in ``attributes["group"]``; tables get numeric columns;
    ``Result.files`` maps each file's stem and kind (``route.mrk.json`` -> ``"route.mrk"``) to its path.
    """
    folder = Path(folder)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise InputError(folder.name or str(folder), "has no summary.json: not a clinseg output folder")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        listed = [str(name) for name in dict(summary["files"]).values()]
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(summary_path.name, f"is not a readable output summary ({error})") from None
    result = Result(summary.get("task", "airway"), metrics=dict(summary.get("metrics", {})))
    for path in _output_files(folder, listed):
        name = path.name
        if not path.is_file():
            raise InputError(name, f"listed in {summary_path.name} but missing from {folder.name}")
        if name.endswith(".seg.nrrd"):
            result.labelmap, result.segments = read_segmentation(path)
        elif name.endswith(".mrk.json"):
            for curve in read_curves(path):
                curve.attributes.setdefault("group", name.removesuffix(".mrk.json"))
                result.curves.append(curve)
        elif name.endswith(".csv"):
            result.tables.append(typed_table(read_table(path, name=name.removesuffix(".csv"))))
        else:
            result.figures.append(path)
        result.files[name.removesuffix(".json").removesuffix(".nrrd").removesuffix(".csv")] = path
    return result


# -- sorting a Result into tree and route --------------------------------------------------------------
def is_route_curve(curve: Curve) -> bool:
    """In the ``route`` group, or carrying a route's summary (``Route.to_curve`` puts its branch sequence there)."""
    return curve.attributes.get("group") == ROUTE_GROUP or "branch_sequence" in curve.attributes


def is_route_table(table: Table) -> bool:
    return ROUTE_GROUP in table.name.lower()  # "airway_route", "route"


def split_result(result: Result) -> tuple[list[Curve], list[Curve], list[Table], list[Table]]:
    """(centerlines, route curves, branch tables, route tables) of ``result``."""
    centerlines = [c for c in result.curves if not is_route_curve(c)]
    routes = [c for c in result.curves if is_route_curve(c)]
    branch_tables = [t for t in result.tables if not is_route_table(t)]
    route_tables = [t for t in result.tables if is_route_table(t)]
    return centerlines, routes, branch_tables, route_tables


# -- derived nodes referenced from the segmentation ----------------------------------------------------
def referenced_nodes(segmentation_node: slicer.vtkMRMLSegmentationNode, role: str) -> list[slicer.vtkMRMLNode]:
    """Nodes the segmentation node references under ``role`` (deleted ones skipped)."""
    nodes = []
    for n in range(segmentation_node.GetNumberOfNodeReferences(role)):
        node = segmentation_node.GetNthNodeReference(role, n)
        if node is not None:
            nodes.append(node)
    return nodes


def derived_nodes(segmentation_node: slicer.vtkMRMLSegmentationNode) -> dict[str, Any]:
    """The tree and route nodes currently attached to ``segmentation_node`` (same keys as the import returns)."""
    tables = referenced_nodes(segmentation_node, BRANCH_TABLE_ROLE)
    route_tables = referenced_nodes(segmentation_node, ROUTE_TABLE_ROLE)
    return {
        "centerlines": referenced_nodes(segmentation_node, CENTERLINE_ROLE),
        "branchTable": tables[0] if tables else None,
        "route": referenced_nodes(segmentation_node, ROUTE_ROLE),
        "routeTable": route_tables[0] if route_tables else None,
    }


def _depth(sh: slicer.vtkMRMLSubjectHierarchyNode, item: int) -> int:
    depth = 0
    while item and item != sh.GetSceneItemID():
        item, depth = sh.GetItemParent(item), depth + 1
    return depth


def remove_derived(scene: slicer.vtkMRMLScene, segmentation_node: slicer.vtkMRMLSegmentationNode,
                   roles: tuple[str, ...], keep_folder: int = 0) -> int:
    """Remove the nodes referenced under ``roles`` and the folders they leave empty (except ``keep_folder``).

    Returns the number of nodes removed. Deepest items go first, so a nested curve tree comes apart cleanly.
    """
    sh = subject_hierarchy(scene)
    nodes = [node for role in roles for node in referenced_nodes(segmentation_node, role)]
    for role in roles:
        segmentation_node.RemoveNodeReferenceIDs(role)
    items = [(sh.GetItemByDataNode(node), node) for node in nodes]
    parents = {sh.GetItemParent(item) for item, _ in items if item}
    folders = {item for item in parents if item and sh.GetItemDataNode(item) is None}  # not the removed curves
    for item, node in sorted(items, key=lambda pair: -_depth(sh, pair[0]) if pair[0] else 0):
        if item:  # the item first: a headless scene has no plugin that drops the item of a removed node
            sh.RemoveItem(item, False, False)
        scene.RemoveNode(node)
    while folders:
        folder = folders.pop()
        if (folder and folder != keep_folder and folder != sh.GetSceneItemID() and sh.GetItemDataNode(folder) is None
                and sh.GetNumberOfItemChildren(folder) == 0 and sh.GetItemLevel(folder) == "Folder"):
            folders.add(sh.GetItemParent(folder))
            sh.RemoveItem(folder)
    return len(nodes)


def _results_folder(scene: slicer.vtkMRMLScene, segmentation_node: slicer.vtkMRMLSegmentationNode) -> int:
    """The folder of an earlier import for this segmentation (parent of its branch table, or of its Route
    folder), 0 if none."""
    sh = subject_hierarchy(scene)
    candidates = [(node, 1) for node in referenced_nodes(segmentation_node, BRANCH_TABLE_ROLE)]
    candidates += [(node, 2) for role in ROUTE_ROLES for node in referenced_nodes(segmentation_node, role)]
    for node, levels in candidates:
        item = sh.GetItemByDataNode(node)
        for _ in range(levels):
            item = sh.GetItemParent(item) if item else 0
        if item and item != sh.GetSceneItemID() and sh.GetItemDataNode(item) is None:
            return item
    return 0


def _style_curves(nodes: list, color: tuple[float, float, float], thickness: float) -> None:
    for node in nodes:
        display = node.GetDisplayNode()
        if display is not None:
            display.SetSelectedColor(*color)
            display.SetColor(*color)
            display.SetLineThickness(thickness)


def _table_in(scene: slicer.vtkMRMLScene, table: Table, folder: int) -> slicer.vtkMRMLTableNode:
    node = table_node_from_table(scene, table)
    subject_hierarchy(scene).SetItemParent(sh_item(scene, node), folder)
    return node


def import_airway_result(
    scene: slicer.vtkMRMLScene,
    result: Result,
    reference_volume_node: slicer.vtkMRMLScalarVolumeNode | None = None,
    segmentation_node: slicer.vtkMRMLSegmentationNode | None = None,
    overwrite: bool = False,
    closed_surface: bool = False,
    folder_name: str = RESULTS_FOLDER,
) -> dict[str, Any]:
    """Nodes for an airway ``Result``; returns ``{"folder", "segmentation", "centerlines", "branchTable", "route",
    "routeTable", "metrics"}``.

    With a label map: it fills ``segmentation_node`` (refused when that node already holds segments unless
    ``overwrite``) or a new node. Without one (an in-process update), ``segmentation_node`` is the source and
    is left as it is. A new centerline tree replaces the segmentation's previous tree and route (a route
    planned on the old tree is stale); a route alone replaces only the previous route. Everything is checked
    before the first node is created, so a refusal leaves the scene untouched.
    """
    centerlines, routes, branch_tables, route_tables = split_result(result)
    check_curves(centerlines)
    check_curves(routes)
    for table in result.tables:
        check_table(table)
    if result.labelmap is None and segmentation_node is None:
        raise InputError("segmentation", "no segmentation node to attach the centerlines and route to")

    sh = subject_hierarchy(scene)
    created_segmentation = result.labelmap is not None and segmentation_node is None
    segmentation = segmentation_node
    if result.labelmap is not None:  # refuses a filled segmentation_node (unless overwrite) before any change
        base = reference_volume_node.GetName() if reference_volume_node is not None else ""
        segmentation = segmentation_node_from_labelmap(
            scene, result.labelmap, result.segments, name=f"{base} airway".strip(),
            reference_volume_node=reference_volume_node, existing_node=segmentation_node,
            overwrite=overwrite, closed_surface=closed_surface,
        )

    if result.labelmap is not None or centerlines or branch_tables:
        stale = TREE_ROLES + ROUTE_ROLES  # new voxels or a new tree: the old route is stale too
    else:
        stale = ROUTE_ROLES if routes or route_tables else ()
    folder = 0 if created_segmentation else _results_folder(scene, segmentation)
    remove_derived(scene, segmentation, stale, keep_folder=folder)
    if not folder:
        anchor = reference_volume_node if created_segmentation else segmentation
        folder = sh_folder(scene, folder_name, sh_parent_of(scene, anchor))
    if created_segmentation:
        sh.SetItemParent(sh_item(scene, segmentation), folder)

    nodes: dict[str, Any] = {"folder": folder, "segmentation": segmentation, **derived_nodes(segmentation),
                             "metrics": result.metrics}
    if centerlines:
        nodes["centerlines"] = curve_nodes_from_curves(scene, centerlines, CENTERLINES_FOLDER, folder)
        _style_curves(nodes["centerlines"], CENTERLINE_COLOR, 0.3)
    if branch_tables:
        nodes["branchTable"] = _table_in(scene, branch_tables[0], folder)
    if routes or route_tables:
        if routes:
            nodes["route"] = curve_nodes_from_curves(scene, routes, ROUTE_FOLDER, folder)
            _style_curves(nodes["route"], ROUTE_COLOR, 0.6)
            route_folder = sh.GetItemParent(sh.GetItemByDataNode(nodes["route"][0]))
        else:
            nodes["route"], route_folder = [], sh_folder(scene, ROUTE_FOLDER, folder)
        nodes["routeTable"] = _table_in(scene, route_tables[0], route_folder) if route_tables else None
    references = ((CENTERLINE_ROLE, nodes["centerlines"] if centerlines else []),
                  (BRANCH_TABLE_ROLE, [nodes["branchTable"]] if branch_tables else []),
                  (ROUTE_ROLE, nodes["route"] if routes else []),
                  (ROUTE_TABLE_ROLE, [nodes["routeTable"]] if route_tables else []))
    for role, referenced in references:
        for node in referenced:
            segmentation.AddNodeReferenceID(role, node.GetID())
    return nodes


def import_output_folder(
    scene: slicer.vtkMRMLScene,
    folder: str | Path,
    reference_volume_node: slicer.vtkMRMLScalarVolumeNode | None = None,
    segmentation_node: slicer.vtkMRMLSegmentationNode | None = None,
    overwrite: bool = False,
    closed_surface: bool = False,
) -> dict[str, Any]:
    """``read_output_folder`` then ``import_airway_result``: a finished ``clinseg airway`` run into the scene."""
    return import_airway_result(scene, read_output_folder(folder), reference_volume_node, segmentation_node,
                                overwrite, closed_surface)


def show_3d(segmentation_node: slicer.vtkMRMLSegmentationNode, visible: bool = True) -> None:
    """Show (building the closed surface if needed) or hide the segmentation in 3D views."""
    if segmentation_node is None:
        raise InputError("segmentation", "no segmentation node selected")
    if visible:
        segmentation_node.CreateClosedSurfaceRepresentation()
    display = segmentation_node.GetDisplayNode()
    if display is None:
        segmentation_node.CreateDefaultDisplayNodes()
        display = segmentation_node.GetDisplayNode()
    display.SetVisibility3D(bool(visible))
    if visible:
        display.SetVisibility(True)
