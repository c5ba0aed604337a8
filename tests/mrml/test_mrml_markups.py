"""Curve trees -> markups curve nodes (radius, attributes, subject hierarchy nesting, .mrk.json) on slicer-core."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (headless MRML) is not installed")

from ClinicalSegLib.mrml import curve_nodes_from_curves, curves_from_curve_nodes  # noqa: E402

from clinseg.errors import InputError  # noqa: E402
from clinseg.result import Curve  # noqa: E402


@pytest.fixture
def tree() -> list[Curve]:
    t = np.linspace(0.0, 1.0, 6)[:, None]
    trachea = Curve("Trachea", np.hstack([10 + 0 * t, -20 + 0 * t, 100 - 60 * t]), np.linspace(9, 7, 6), None,
                    {"generation": 0, "anatomical_name": "Trachea", "length_mm": np.float64(60.0)})
    left = Curve("LMB", np.hstack([10 + 30 * t, -20 + 5 * t, 40 - 20 * t]), np.linspace(6, 5, 6), "Trachea",
                 {"generation": 1, "anatomical_name": "Left main bronchus"})
    right = Curve("RMB", np.hstack([10 - 25 * t, -20 + 0 * t, 40 - 15 * t]), np.linspace(7, 6, 6), "Trachea",
                  {"generation": 1, "anatomical_name": "Right main bronchus"})
    lul = Curve("LUL", np.hstack([40 + 10 * t, -15 - 5 * t, 20 + 10 * t]), None, "LMB", {"generation": 2})
    return [lul, trachea, left, right]  # a child before its parent: order must not matter


def control_points_ras(node) -> np.ndarray:
    return slicer.util.arrayFromMarkupsControlPoints(node, world=True)


def test_curves_carry_points_radius_and_attributes(scene, tree):
    nodes = curve_nodes_from_curves(scene, tree, "Airway tree")
    assert [n.GetName() for n in nodes] == ["LUL", "Trachea", "LMB", "RMB"]
    trachea = nodes[1]
    assert trachea.GetClassName() == "vtkMRMLMarkupsCurveNode"
    assert trachea.GetCurveTypeAsString(trachea.GetCurveType()) == "linear"
    # LPS (10, -20, z) is RAS (-10, 20, z).
    np.testing.assert_allclose(control_points_ras(trachea)[0], [-10.0, 20.0, 100.0], atol=1e-9)
    np.testing.assert_allclose(control_points_ras(trachea)[:, :2], np.tile([-10.0, 20.0], (6, 1)), atol=1e-9)
    np.testing.assert_allclose(slicer.util.arrayFromMarkupsControlPointData(trachea, "Radius"), np.linspace(9, 7, 6))
    # The markups pipeline carries the radius onto the curve's own points (what Slicer displays and probes).
    curve_radius = slicer.util.arrayFromMarkupsCurveData(trachea, "Radius", world=True)
    np.testing.assert_allclose(curve_radius, np.linspace(9, 7, 6), atol=1e-9)
    assert trachea.GetAttribute("ClinicalSeg.generation") == "0"
    assert trachea.GetAttribute("ClinicalSeg.anatomical_name") == "Trachea"
    assert trachea.GetAttribute("ClinicalSeg.length_mm") == "60.0"
    assert nodes[0].GetAttribute("ClinicalSeg.parent") == "LMB"
    assert slicer.util.arrayFromMarkupsControlPointData(nodes[0], "Radius") is None  # no radii given, none made


def test_tree_is_nested_in_the_subject_hierarchy(scene, tree):
    nodes = curve_nodes_from_curves(scene, tree, "Airway tree")
    sh = scene.GetSubjectHierarchyNode()
    item = {n.GetName(): sh.GetItemByDataNode(n) for n in nodes}
    folder = sh.GetItemParent(item["Trachea"])
    assert sh.GetItemName(folder) == "Airway tree"
    assert sh.GetItemParent(folder) == sh.GetSceneItemID()
    assert sh.GetItemParent(item["LMB"]) == item["Trachea"]
    assert sh.GetItemParent(item["RMB"]) == item["Trachea"]
    assert sh.GetItemParent(item["LUL"]) == item["LMB"]
    back = {c.name: c for c in curves_from_curve_nodes(nodes)}
    assert {name: c.parent for name, c in back.items()} == {"LUL": "LMB", "Trachea": None, "LMB": "Trachea",
                                                             "RMB": "Trachea"}
    for curve in tree:
        np.testing.assert_allclose(back[curve.name].points, curve.points, atol=1e-9)
    assert back["LMB"].attributes == {"generation": "1", "anatomical_name": "Left main bronchus"}


def test_missing_parent_goes_to_the_folder_and_bad_trees_raise(scene, tree, caplog):
    orphan = Curve("orphan", np.zeros((2, 3)), parent="not there")
    nodes = curve_nodes_from_curves(scene, [orphan], "Routes")
    sh = scene.GetSubjectHierarchyNode()
    assert sh.GetItemName(sh.GetItemParent(sh.GetItemByDataNode(nodes[0]))) == "Routes"
    assert "parent not there is not among the curves; put in Routes" in caplog.text
    with pytest.raises(InputError, match="repeated: \\['LMB'\\]"):
        curve_nodes_from_curves(scene, [*tree, tree[2]], "dup")
    loop = [Curve("a", np.zeros((2, 3)), parent="b"), Curve("b", np.zeros((2, 3)), parent="a")]
    with pytest.raises(InputError, match="parent chain loops back"):
        curve_nodes_from_curves(scene, loop, "loop")
    with pytest.raises(InputError, match="has 2 radii for 3 points"):
        curve_nodes_from_curves(scene, [Curve("r", np.zeros((3, 3)), np.ones(2))], "radii")
    with pytest.raises(InputError, match="non-finite"):
        curve_nodes_from_curves(scene, [Curve("n", np.full((2, 3), np.nan))], "nan")


def save_curve(scene, node, path) -> None:
    storage = node.CreateDefaultStorageNode()
    scene.AddNode(storage)
    node.SetAndObserveStorageNodeID(storage.GetID())
    storage.SetFileName(str(path))
    assert storage.GetClassName() == "vtkMRMLMarkupsJsonStorageNode"
    assert storage.WriteData(node)


def load_curve(scene, path):
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsCurveNode")
    storage = scene.AddNewNodeByClass("vtkMRMLMarkupsJsonStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    return node


def test_mrk_json_save_and_reload_keeps_points_and_radius(scene, tree, tmp_path):
    nodes = curve_nodes_from_curves(scene, tree, "Airway tree")
    save_curve(scene, nodes[1], tmp_path / "trachea.mrk.json")
    loaded = load_curve(scene, tmp_path / "trachea.mrk.json")
    # Slicer's .mrk.json holds no node name (Slicer names a loaded node after the file), no attributes, no curve type.
    np.testing.assert_allclose(control_points_ras(loaded), control_points_ras(nodes[1]), atol=1e-6)
    np.testing.assert_allclose(slicer.util.arrayFromMarkupsControlPointData(loaded, "Radius"), np.linspace(9, 7, 6))
    (curve,) = curves_from_curve_nodes([loaded])
    np.testing.assert_allclose(curve.points, tree[1].points, atol=1e-6)
    np.testing.assert_allclose(curve.radii, tree[1].radii)


def test_mrk_json_files_are_shared_with_clinseg_io(scene, tree, tmp_path):
    """Slicer's markups JSON storage node and clinseg.io.markups read each other's files."""
    markups = pytest.importorskip("clinseg.io.markups")
    nodes = curve_nodes_from_curves(scene, tree, "Airway tree")
    save_curve(scene, nodes[2], tmp_path / "lmb.mrk.json")
    (curve,) = markups.read_curves(tmp_path / "lmb.mrk.json")
    np.testing.assert_allclose(curve.points, tree[2].points, atol=1e-6)
    np.testing.assert_allclose(curve.radii, tree[2].radii, atol=1e-6)

    markups.write_curves(tmp_path / "clinseg.mrk.json", [tree[3]])
    loaded = load_curve(scene, tmp_path / "clinseg.mrk.json")
    assert loaded.GetName() == "RMB"
    (back,) = curves_from_curve_nodes([loaded])
    np.testing.assert_allclose(back.points, tree[3].points, atol=1e-3)
    np.testing.assert_allclose(back.radii, tree[3].radii, atol=1e-3)
