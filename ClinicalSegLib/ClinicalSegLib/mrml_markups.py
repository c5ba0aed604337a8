"""``Curve`` trees <-> ``vtkMRMLMarkupsCurveNode`` nested in subject hierarchy folders.

Per-point radius: a ``vtkMRMLStaticMeasurement`` named ``Radius`` holding one
value per control point (control-point data). It is saved in ``.mrk.json`` as
the measurement's ``controlPointValues`` and read back by the markups storage
node; the curve's world polydata then carries it interpolated as the point
data array ``Radius`` (``slicer.util.arrayFromMarkupsCurveData(node, "Radius", world=True)``).
Curve attributes (generation, anatomical name...) become node attributes
``ClinicalSeg.<key>``: they are saved with the scene (``.mrml``), not in ``.mrk.json``.
"""

from __future__ import annotations

import logging

import numpy as np
import slicer
import vtk

from clinseg.errors import InputError
from clinseg.result import Curve
from clinseg.volume import LPS_TO_RAS

from .mrml_common import ATTRIBUTE_PREFIX, sh_folder, sh_item, subject_hierarchy

RADIUS = "Radius"
PARENT_ATTRIBUTE = ATTRIBUTE_PREFIX + "parent"

log = logging.getLogger(__name__)


def check_curves(curves: list[Curve]) -> None:
    """Reject what would make a broken tree, before any node is created."""
    names = [c.name for c in curves]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError("curves", f"curve names must be unique (they link the tree), repeated: {duplicates}")
    for curve in curves:
        points = np.asarray(curve.points, dtype=float)
        if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
            raise InputError(curve.name, f"points must be an (N, 3) array with N >= 1, got shape {points.shape}")
        if not np.all(np.isfinite(points)):
            raise InputError(curve.name, "has non-finite point coordinates")
        if curve.radii is not None and np.asarray(curve.radii).shape != (len(points),):
            raise InputError(curve.name, f"has {np.asarray(curve.radii).size} radii for {len(points)} points")
    parents = {c.name: c.parent for c in curves}
    for start in names:
        seen, name = {start}, parents[start]
        while name in parents:
            if name in seen:
                raise InputError(start, f"parent chain loops back to '{name}'")
            seen.add(name)
            name = parents[name]


def _attribute_text(value: object) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)


def _curve_node(scene: slicer.vtkMRMLScene, curve: Curve) -> slicer.vtkMRMLMarkupsCurveNode:
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsCurveNode", curve.name)
    node.CreateDefaultDisplayNodes()
    was_modifying = node.StartModify()
    try:
        # A centerline is already sampled densely: straight segments between its points, no spline overshoot.
        node.SetCurveTypeToLinear()
        node.SetNumberOfPointsPerInterpolatingSegment(1)
        points = vtk.vtkPoints()
        for p in np.asarray(curve.points, dtype=float) @ LPS_TO_RAS.T:
            points.InsertNextPoint(*p)
        node.SetControlPointPositionsWorld(points)
        if curve.radii is not None:
            values = vtk.vtkDoubleArray()
            values.SetName(RADIUS)
            for r in np.asarray(curve.radii, dtype=float):
                values.InsertNextValue(float(r))
            measurement = slicer.vtkMRMLStaticMeasurement()
            measurement.SetName(RADIUS)
            measurement.SetUnits("mm")
            measurement.SetPrintFormat("")  # a per-point array, not one number to print next to the curve
            measurement.SetControlPointValues(values)
            node.AddMeasurement(measurement)
        for key, value in curve.attributes.items():
            node.SetAttribute(ATTRIBUTE_PREFIX + str(key), _attribute_text(value))
        if curve.parent:
            node.SetAttribute(PARENT_ATTRIBUTE, curve.parent)
    finally:
        node.EndModify(was_modifying)
    display = node.GetDisplayNode()
    if display is not None:
        display.SetPointLabelsVisibility(False)
    return node


def curve_nodes_from_curves(
    scene: slicer.vtkMRMLScene,
    curves: list[Curve],
    tree_name: str,
    parent_item: int | None = None,
    folder_item: int | None = None,
) -> list[slicer.vtkMRMLMarkupsCurveNode]:
    """One curve node per ``Curve`` (same order), nested as the ``Curve.parent`` tree under a new folder
    ``tree_name`` (under ``parent_item``), or under the existing folder ``folder_item`` when given.

    A curve whose parent is not in ``curves`` sits directly in the folder.
    """
    check_curves(curves)
    sh = subject_hierarchy(scene)
    folder = folder_item or sh_folder(scene, tree_name, parent_item)
    nodes = [_curve_node(scene, c) for c in curves]
    items = {c.name: sh_item(scene, n) for c, n in zip(curves, nodes)}
    for curve in curves:
        if curve.parent and curve.parent not in items:
            log.warning("curve %s: parent %s is not among the curves; put in %s", curve.name, curve.parent, tree_name)
        sh.SetItemParent(items[curve.name], items.get(curve.parent or "", folder))
    return nodes


def _radii(node: slicer.vtkMRMLMarkupsCurveNode) -> np.ndarray | None:
    for n in range(node.GetNumberOfMeasurements()):
        values = node.GetNthMeasurement(n).GetControlPointValues()
        if values is not None and values.GetName() == RADIUS and values.GetNumberOfTuples():
            return np.array([values.GetValue(i) for i in range(values.GetNumberOfTuples())])
    return None


def curves_from_curve_nodes(nodes: list[slicer.vtkMRMLMarkupsCurveNode]) -> list[Curve]:
    """``Curve`` objects (LPS, world) back from curve nodes, e.g. after the user edited a route.

    The parent is the subject hierarchy parent when that is one of ``nodes``,
    else the ``ClinicalSeg.parent`` attribute; attribute values come back as text.
    """
    ids = {n.GetID() for n in nodes}
    curves = []
    for node in nodes:
        name = node.GetName()
        positions = vtk.vtkPoints()
        node.GetControlPointPositionsWorld(positions)
        ras = np.array([positions.GetPoint(i) for i in range(positions.GetNumberOfPoints())]).reshape(-1, 3)
        attributes = {
            key[len(ATTRIBUTE_PREFIX):]: node.GetAttribute(key)
            for key in node.GetAttributeNames() or ()
            if key.startswith(ATTRIBUTE_PREFIX) and key != PARENT_ATTRIBUTE
        }
        parent = node.GetAttribute(PARENT_ATTRIBUTE)
        sh = node.GetScene().GetSubjectHierarchyNode() if node.GetScene() else None
        item = sh.GetItemByDataNode(node) if sh else 0
        parent_node = sh.GetItemDataNode(sh.GetItemParent(item)) if item else None
        if parent_node is not None and parent_node.GetID() in ids:
            parent = parent_node.GetName()
        curves.append(Curve(name, ras @ LPS_TO_RAS.T, _radii(node), parent or None, attributes))
    return curves
