"""Tables and whole Results -> MRML nodes on slicer-core."""

from __future__ import annotations

import math

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (headless MRML) is not installed")
import vtk  # noqa: E402
from ClinicalSegLib.mrml import (  # noqa: E402
    ImportRequest,
    NodeRole,
    ResultLayout,
    default_layout,
    derived_nodes,
    import_result,
    labelmap_from_segmentation_node,
    table_from_table_node,
    table_node_from_table,
    volume_node_from_volume,
)

from clinseg.errors import InputError  # noqa: E402
from clinseg.result import Curve, Result, Table  # noqa: E402
from clinseg.terminology import NODULE  # noqa: E402
from clinseg.volume import Volume  # noqa: E402

TABLE = Table("Nodules", {
    "id": [1, 2, 3],
    "diameter_mm": [4.5, np.float32(12.25), None],
    "lobe": ["RUL", "LLL", None],
    "solid": [True, False, True],
})


def test_table_columns_are_typed(scene):
    node = table_node_from_table(scene, TABLE)
    assert node.GetName() == "Nodules"
    table = node.GetTable()
    assert table.GetNumberOfRows() == 3 and table.GetNumberOfColumns() == 4
    assert [table.GetColumn(c).GetName() for c in range(4)] == ["id", "diameter_mm", "lobe", "solid"]
    assert isinstance(table.GetColumnByName("id"), vtk.vtkDoubleArray)
    assert isinstance(table.GetColumnByName("lobe"), vtk.vtkStringArray)
    assert table.GetColumnByName("diameter_mm").GetValue(1) == 12.25
    assert math.isnan(table.GetColumnByName("diameter_mm").GetValue(2))
    assert table.GetColumnByName("lobe").GetValue(1) == "LLL"
    assert table.GetColumnByName("lobe").GetValue(2) == ""
    assert table.GetColumnByName("solid").GetValue(1) == 0.0
    back = table_from_table_node(node)
    assert back.columns["id"] == [1.0, 2.0, 3.0]
    assert back.columns["lobe"] == ["RUL", "LLL", ""]


def test_table_saved_and_reloaded_by_the_table_storage_node(scene, tmp_path):
    node = table_node_from_table(scene, TABLE)
    storage = node.CreateDefaultStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "nodules.tsv"))
    assert storage.WriteData(node)
    loaded = scene.AddNewNodeByClass("vtkMRMLTableNode", "loaded")
    reader = scene.AddNewNodeByClass("vtkMRMLTableStorageNode")
    reader.SetFileName(str(tmp_path / "nodules.tsv"))
    assert reader.ReadData(loaded)
    back = table_from_table_node(loaded)
    assert back.columns["id"] == [1.0, 2.0, 3.0]  # numeric type kept through the schema file
    assert back.columns["lobe"] == ["RUL", "LLL", ""]
    assert back.columns["diameter_mm"][:2] == [4.5, 12.25]


def test_ragged_table_raises(scene):
    with pytest.raises(InputError, match="columns have different lengths"):
        table_node_from_table(scene, Table("bad", {"a": [1, 2], "b": [1]}))


@pytest.fixture
def result() -> Result:
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1:3, 1:4, 2:5] = 1
    labelmap = Volume(labels, (0.8, 0.8, 1.25), (5.0, 6.0, -7.0))
    route = Curve("Route", np.array([[5.0, 6.0, -7.0], [6.0, 7.0, -6.0], [7.0, 7.5, -5.0]]), np.array([2.0, 1.5, 1.0]))
    return Result("NoduleSeg", labelmap, [NODULE], [route], [TABLE])


def test_result_nodes_are_grouped_next_to_the_reference_volume(scene, result):
    ct = volume_node_from_volume(scene, result.labelmap.with_array(np.zeros((4, 5, 6), np.int16)), "ct")
    sh = scene.GetSubjectHierarchyNode()
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "patient"), "study")
    ct_item = sh.GetItemByDataNode(ct) or sh.CreateItem(study, ct)
    sh.SetItemParent(ct_item, study)

    nodes = import_result(scene, result, request=ImportRequest(ct))
    folder = nodes["folder"]
    assert sh.GetItemName(folder) == "NoduleSeg results" and sh.GetItemParent(folder) == study
    assert nodes["segmentation"].GetName() == "ct segmentation"
    segmentation = nodes["segmentation"]
    assert sh.GetItemParent(sh.GetItemByDataNode(segmentation)) == folder
    back, segments = labelmap_from_segmentation_node(segmentation)
    np.testing.assert_array_equal(back.array, result.labelmap.array)
    assert segments == [NODULE]
    (route,) = nodes["curves"]
    curves_folder = sh.GetItemParent(sh.GetItemByDataNode(route))
    assert sh.GetItemName(curves_folder) == "NoduleSeg curves" and sh.GetItemParent(curves_folder) == folder
    (table,) = nodes["tables"]
    assert table.GetName() == "Nodules" and sh.GetItemParent(sh.GetItemByDataNode(table)) == folder


def test_refused_overwrite_leaves_the_scene_unchanged(scene, result):
    first = import_result(scene, result)
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="already holds 1 segment"):
        import_result(scene, result, request=ImportRequest(segmentation_node=first["segmentation"]))
    assert scene.GetNumberOfNodes() == before
    again = import_result(scene, result, request=ImportRequest(segmentation_node=first["segmentation"],
                                                               overwrite=True))
    assert again["segmentation"].GetID() == first["segmentation"].GetID()
    assert again["segmentation"].GetSegmentation().GetNumberOfSegments() == 1
    # The derived curve and table were replaced, not duplicated, and stay attached to the segmentation.
    assert scene.GetNumberOfNodes() == before
    assert derived_nodes(again["segmentation"], default_layout("NoduleSeg"))["tables"] == again["tables"]


def test_result_without_labelmap_attaches_curves_and_tables_to_the_given_segmentation(scene, result):
    first = import_result(scene, result)
    result.labelmap, result.segments = None, []
    with pytest.raises(InputError, match="no segmentation node to attach"):
        import_result(scene, result)
    nodes = import_result(scene, result, request=ImportRequest(segmentation_node=first["segmentation"]))
    assert nodes["segmentation"] is first["segmentation"] and nodes["folder"] == first["folder"]
    assert len(nodes["curves"]) == 1 and len(nodes["tables"]) == 1
    assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 1
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1  # the first import's table was replaced


def test_a_result_item_no_role_takes_is_refused_before_any_node(scene, result):
    layout = ResultLayout("Nodule results", "ClinicalSeg.test.", (NodeRole("tables", "tables"),))
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="no place for it"):
        import_result(scene, result, layout)  # the route curve has no role in this layout
    assert scene.GetNumberOfNodes() == before
