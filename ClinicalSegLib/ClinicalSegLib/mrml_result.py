"""A task's ``Result`` -> MRML nodes, laid out by data: which curves and tables play which role.

The segmentation node anchors what was derived from it (curve trees, tables) through MRML node references
(saved with the scene), one reference role per ``NodeRole``. A later import for the same segmentation
replaces exactly the stale derived nodes and nothing else: new voxels make every role stale; without new
voxels, a role is stale when the result brings nodes for its tier or for a tier below it (a new airway tree
makes its old route stale; a new route leaves the tree). Everything is checked before the first node is
created, so a refusal leaves the scene untouched. Imports ``slicer`` and ``vtk`` only: runs on ``slicer-core``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import slicer

from clinseg.errors import InputError
from clinseg.result import Curve, Result, Table

from .mrml_common import ATTRIBUTE_PREFIX, sh_folder, sh_item, sh_parent_of, subject_hierarchy
from .mrml_markups import check_curves, curve_nodes_from_curves
from .mrml_segmentation import segmentation_node_from_labelmap
from .mrml_table import check_table, table_node_from_table


def _everything(_item: Any) -> bool:
    return True


@dataclass(frozen=True)
class NodeRole:
    """One kind of derived node: the ``kind`` items of a Result that ``select`` picks (first matching role wins)."""

    key: str  # key of the returned dict and suffix of the node reference role
    kind: str  # "curves" (a list of nested curve nodes), "tables" (a list of table nodes) or "table" (one)
    select: Callable[[Curve | Table], bool] = _everything
    folder: str | None = None  # subfolder of the results folder; curves default to their key
    tier: int = 0  # replacing a tier makes every higher tier stale
    color: tuple[float, float, float] | None = None
    line_thickness: float = 0.5


@dataclass(frozen=True)
class ResultLayout:
    """How a task's results sit in the scene: folder name, reference role prefix, roles, segmentation name."""

    folder_name: str
    role_prefix: str
    roles: tuple[NodeRole, ...]
    segmentation_suffix: str = "segmentation"

    def role(self, key: str) -> str:
        return self.role_prefix + key


@dataclass(frozen=True)
class ImportRequest:
    """Where a run's results go: next to ``reference_volume_node``; into ``segmentation_node`` when given."""

    reference_volume_node: Any = None
    segmentation_node: Any = None
    overwrite: bool = False
    closed_surface: bool = False


def default_layout(task: str) -> ResultLayout:
    """All curves in one tree folder, every table on its own: for a task without a layout of its own."""
    return ResultLayout(f"{task} results", f"{ATTRIBUTE_PREFIX}{task}.", (
        NodeRole("curves", "curves", folder=f"{task} curves"), NodeRole("tables", "tables")))


# -- derived nodes referenced from the segmentation ------------------------------------------------------
def referenced_nodes(segmentation_node: slicer.vtkMRMLNode, role: str) -> list[slicer.vtkMRMLNode]:
    """Nodes the segmentation node references under ``role`` (deleted ones skipped)."""
    nodes = []
    for n in range(segmentation_node.GetNumberOfNodeReferences(role)):
        node = segmentation_node.GetNthNodeReference(role, n)
        if node is not None:
            nodes.append(node)
    return nodes


def derived_nodes(segmentation_node: slicer.vtkMRMLNode, layout: ResultLayout) -> dict[str, Any]:
    """The nodes now attached to ``segmentation_node`` by role: a list, or for a "table" role a node or None."""
    found: dict[str, Any] = {}
    for role in layout.roles:
        nodes = referenced_nodes(segmentation_node, layout.role(role.key))
        found[role.key] = (nodes[0] if nodes else None) if role.kind == "table" else nodes
    return found


def _depth(sh: slicer.vtkMRMLSubjectHierarchyNode, item: int) -> int:
    depth = 0
    while item and item != sh.GetSceneItemID():
        item, depth = sh.GetItemParent(item), depth + 1
    return depth


def _remove_with_helpers(scene: slicer.vtkMRMLScene, node: slicer.vtkMRMLNode) -> None:
    """Remove ``node`` and its display and storage nodes, which nothing else uses (no orphans left behind)."""
    helpers = []
    if isinstance(node, slicer.vtkMRMLDisplayableNode):
        helpers += [node.GetNthDisplayNode(n) for n in range(node.GetNumberOfDisplayNodes())]
    if isinstance(node, slicer.vtkMRMLStorableNode):
        helpers += [node.GetNthStorageNode(n) for n in range(node.GetNumberOfStorageNodes())]
    scene.RemoveNode(node)
    for helper in helpers:
        if helper is not None and helper.GetScene() is scene:
            scene.RemoveNode(helper)


def remove_derived(scene: slicer.vtkMRMLScene, segmentation_node: slicer.vtkMRMLNode, roles: list[str],
                   keep_folder: int = 0) -> int:
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
        _remove_with_helpers(scene, node)
    while folders:
        folder = folders.pop()
        if (folder and folder != keep_folder and folder != sh.GetSceneItemID() and sh.GetItemDataNode(folder) is None
                and sh.GetNumberOfItemChildren(folder) == 0 and sh.GetItemLevel(folder) == "Folder"):
            folders.add(sh.GetItemParent(folder))
            sh.RemoveItem(folder)
    return len(nodes)


def _results_folder(scene: slicer.vtkMRMLScene, segmentation_node: slicer.vtkMRMLNode, layout: ResultLayout) -> int:
    """The folder of an earlier import for this segmentation (the nearest folder named ``layout.folder_name``
    above one of its derived nodes), 0 if none."""
    sh = subject_hierarchy(scene)
    for role in layout.roles:
        for node in referenced_nodes(segmentation_node, layout.role(role.key)):
            item = sh.GetItemByDataNode(node)
            while item and item != sh.GetSceneItemID():
                if sh.GetItemDataNode(item) is None and sh.GetItemName(item) == layout.folder_name:
                    return item
                item = sh.GetItemParent(item)
    return 0


def _child_folder(scene: slicer.vtkMRMLScene, name: str, parent: int) -> int:
    """The folder ``name`` directly under ``parent``, created when there is none."""
    sh = subject_hierarchy(scene)
    for n in range(sh.GetNumberOfItemChildren(parent)):
        child = sh.GetItemByPositionUnderParent(parent, n)
        if sh.GetItemDataNode(child) is None and sh.GetItemName(child) == name:
            return child
    return sh_folder(scene, name, parent)


def _style_curves(nodes: list, role: NodeRole) -> None:
    for node in nodes:
        display = node.GetDisplayNode()
        if display is not None and role.color is not None:
            display.SetSelectedColor(*role.color)
            display.SetColor(*role.color)
            display.SetLineThickness(role.line_thickness)


def _sorted_items(result: Result, layout: ResultLayout) -> dict[str, list]:
    """The Result's curves and tables by role key; an item no role selects is an error (it would be lost)."""
    items: dict[str, list] = {role.key: [] for role in layout.roles}
    for kinds, values in ((("curves",), result.curves), (("tables", "table"), result.tables)):
        for value in values:
            role = next((r for r in layout.roles if r.kind in kinds and r.select(value)), None)
            if role is None:
                raise InputError(value.name, f"no place for it among the {layout.folder_name}")
            items[role.key].append(value)
    for role in layout.roles:
        if role.kind == "table" and len(items[role.key]) > 1:
            raise InputError(items[role.key][1].name, f"a second table for the role '{role.key}'")
        if role.kind == "curves":
            check_curves(items[role.key])
        else:
            for table in items[role.key]:
                check_table(table)
    return items


def import_result(scene: slicer.vtkMRMLScene, result: Result, layout: ResultLayout | None = None,
                  request: ImportRequest | None = None) -> dict[str, Any]:
    """Nodes for ``result``; returns ``{"folder", "segmentation", <role keys>..., "metrics"}``.

    With a label map: it fills ``request.segmentation_node`` (refused when that node already holds segments
    unless ``overwrite``) or a new node. Without one (an in-process update), ``request.segmentation_node`` is
    the source and is left as it is.
    """
    layout = layout or default_layout(result.task)
    request = request or ImportRequest()
    items = _sorted_items(result, layout)
    segmentation = request.segmentation_node
    if result.labelmap is None and segmentation is None:
        raise InputError("segmentation", "no segmentation node to attach the results to")

    sh = subject_hierarchy(scene)
    reference = request.reference_volume_node
    created_segmentation = result.labelmap is not None and segmentation is None
    if result.labelmap is not None:  # refuses a filled segmentation node (unless overwrite) before any change
        base = reference.GetName() if reference is not None else ""
        segmentation = segmentation_node_from_labelmap(
            scene, result.labelmap, result.segments, name=f"{base} {layout.segmentation_suffix}".strip(),
            reference_volume_node=reference, existing_node=request.segmentation_node,
            overwrite=request.overwrite, closed_surface=request.closed_surface)

    brought = [role.tier for role in layout.roles if items[role.key]]
    lowest = min(brought, default=None) if result.labelmap is None else min(r.tier for r in layout.roles)
    stale = [role for role in layout.roles if lowest is not None and role.tier >= lowest]
    folder = 0 if created_segmentation else _results_folder(scene, segmentation, layout)
    remove_derived(scene, segmentation, [layout.role(role.key) for role in stale], keep_folder=folder)
    if not folder:
        anchor = reference if created_segmentation else segmentation
        folder = sh_folder(scene, layout.folder_name, sh_parent_of(scene, anchor))
    if created_segmentation:
        sh.SetItemParent(sh_item(scene, segmentation), folder)

    nodes: dict[str, Any] = {"folder": folder, "segmentation": segmentation, **derived_nodes(segmentation, layout),
                             "metrics": result.metrics}
    for role in layout.roles:
        values = items[role.key]
        if role in stale and role.kind == "curves":
            subfolder = _child_folder(scene, role.folder or role.key, folder) if values else 0
            created = curve_nodes_from_curves(scene, values, role.folder or role.key, folder_item=subfolder) \
                if values else []
            _style_curves(created, role)
        elif role in stale and values:
            parent = _child_folder(scene, role.folder, folder) if role.folder else folder
            created = [table_node_from_table(scene, table) for table in values]
            for node in created:
                sh.SetItemParent(sh_item(scene, node), parent)
        else:
            continue
        nodes[role.key] = (created[0] if created else None) if role.kind == "table" else created
        for node in created:
            segmentation.AddNodeReferenceID(layout.role(role.key), node.GetID())
    return nodes


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
