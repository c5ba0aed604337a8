"""AirwaySeg's task on the shared base (ClinicalSegLib) on slicer-core's real MRML scene.

Covers the import of an output folder by the airway layout, overwrite protection, in-process route planning
and tree update from an edited segmentation, the engine/model choices, and the job's CLI arguments and input.
The module's logic driven end to end through real child processes is in test_airwayseg_module.py.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (headless MRML) is not installed")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "AirwaySeg"))

from AirwaySegLib import routes  # noqa: E402
from AirwaySegLib.task import AIRWAY as AIRWAY_TASK  # noqa: E402
from AirwaySegLib.task import LAYOUT  # noqa: E402
from ClinicalSegLib.mrml import (  # noqa: E402
    ImportRequest,
    derived_nodes,
    import_result,
    labelmap_from_segmentation_node,
    segmentation_node_from_labelmap,
    show_3d,
    volume_from_volume_node,
    volume_node_from_volume,
)
from ClinicalSegLib.task import device_option, task_arguments  # noqa: E402

from ClinicalSegLib import choices, jobs  # noqa: E402
from clinseg.errors import InputError  # noqa: E402
from clinseg.output import read_result, write_result  # noqa: E402
from clinseg.result import Curve, Result, Table  # noqa: E402
from clinseg.terminology import AIRWAY  # noqa: E402
from clinseg.volume import Volume  # noqa: E402


def _pipeline_available() -> bool:
    try:
        return importlib.util.find_spec("clinseg.post.route") is not None and \
            importlib.util.find_spec("clinseg.tasks.airway") is not None
    except ImportError:
        return False


needs_pipeline = pytest.mark.skipif(not _pipeline_available(), reason="clinseg.post not available yet")

# [k, j, i] grid, 1 mm voxels, identity direction: i = x (left), j = y (posterior), k = z (superior).
SHAPE = (64, 32, 64)
CARINA = (30, 16, 32)


def y_mask() -> np.ndarray:
    """Trachea (radius 4 mm) from the top down to the carina, two main bronchi (radius 3 mm) going down and out."""
    k, j, i = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    ck, cj, ci = CARINA
    trachea = (k >= ck) & ((j - cj) ** 2 + (i - ci) ** 2 <= 16)
    bronchi = np.zeros(SHAPE, dtype=bool)
    for side in (-1, 1):  # centre line i = ci + side * (ck - k) for k in [4, ck]
        bronchi |= (k <= ck) & (k >= 4) & ((j - cj) ** 2 + (i - ci - side * (ck - k)) ** 2 <= 9)
    return (trachea | bronchi).astype(np.uint8)


def mask_volume(array: np.ndarray | None = None) -> Volume:
    array = y_mask() if array is None else array
    return Volume(array, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3), "airway")


def hand_result() -> Result:
    """A Result as the pipeline makes it: airway label map, 3 nested centerlines with radius, tables, a route."""
    ck, cj, ci = CARINA
    t = np.linspace(0.0, 1.0, 8)[:, None]
    trachea = np.hstack([ci + 0 * t, cj + 0 * t, 63 - (63 - ck) * t])
    left = np.hstack([ci + (ck - 4) * t, cj + 0 * t, ck - (ck - 4) * t])
    right = np.hstack([ci - (ck - 4) * t, cj + 0 * t, ck - (ck - 4) * t])
    group = {"group": "centerlines"}
    curves = [
        Curve("Trachea", trachea, np.full(8, 4.0), None, {**group, "generation": 0}),
        Curve("LeftMainBronchus", left, np.linspace(3.2, 2.8, 8), "Trachea", {**group, "generation": 1}),
        Curve("RightMainBronchus", right, np.linspace(3.1, 2.9, 8), "Trachea", {**group, "generation": 1}),
        Curve("Route", np.vstack([trachea, left[1:]]), np.concatenate([np.full(8, 4.0), np.full(7, 3.0)]), None,
              {"group": "route", "length_mm": 70.2}),
    ]
    branches = Table("airway_branches", {
        "branch_id": [0, 1, 2], "parent_id": [-1, 0, 0], "generation": [0, 1, 1],
        "name": ["Trachea", "LeftMainBronchus", "RightMainBronchus"], "lobe": ["", "", ""],
        "length_mm": [33.0, 36.77, 36.77], "mean_diameter_mm": [8.0, 6.0, 6.0],
    })
    route = Table("route", {"step": [1, 2], "branch": ["Trachea", "LeftMainBronchus"], "min_diameter_mm": [8.0, 5.6]})
    return Result("airway", labelmap=mask_volume(), segments=[AIRWAY], curves=curves, tables=[branches, route],
                  metrics={"airway_volume_ml": 4.2})


def count(scene, class_name: str) -> int:
    return scene.GetNumberOfNodesByClass(class_name)


def sh_children_names(scene, item: int) -> list[str]:
    sh = scene.GetSubjectHierarchyNode()
    return [sh.GetItemName(sh.GetItemByPositionUnderParent(item, n)) for n in range(sh.GetNumberOfItemChildren(item))]


@pytest.fixture
def ct_node(scene):
    ct = np.full(SHAPE, 40, dtype=np.int16)
    ct[y_mask() > 0] = -1000
    return volume_node_from_volume(scene, Volume(ct, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3), "chest"))


# -- reading and importing an output folder ------------------------------------------------------------
def import_folder(scene, folder, ct_node=None, segmentation=None, overwrite=False):
    """What a finished job does: read the output folder, import it by the airway layout."""
    return import_result(scene, read_result(folder), LAYOUT, ImportRequest(ct_node, segmentation, overwrite))


def test_import_output_folder_builds_segmentation_tree_tables_and_route(scene, ct_node, tmp_path):
    write_result(hand_result(), tmp_path / "out")
    nodes = import_folder(scene, tmp_path / "out", ct_node)
    sh = scene.GetSubjectHierarchyNode()

    segmentation = nodes["segmentation"].GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    segment = segmentation.GetSegment(segmentation.GetNthSegmentID(0))
    assert segment.GetName() == "Airway" and "^89187006^" in segment.GetTerminology()
    assert nodes["segmentation"].GetName() == "chest airway"
    back = labelmap_from_segmentation_node(nodes["segmentation"], reference=volume_from_volume_node(ct_node))[0]
    np.testing.assert_array_equal(back.array, y_mask())

    names = [n.GetName() for n in nodes["centerlines"]]
    assert names == ["Trachea", "LeftMainBronchus", "RightMainBronchus"]
    radius = slicer.util.arrayFromMarkupsControlPointData(nodes["centerlines"][1], "Radius")
    np.testing.assert_allclose(radius, np.linspace(3.2, 2.8, 8), atol=1e-4)
    # LPS (32, 16, 63) is RAS (-32, -16, 63).
    np.testing.assert_allclose(slicer.util.arrayFromMarkupsControlPoints(nodes["centerlines"][0], world=True)[0],
                               [-32.0, -16.0, 63.0], atol=1e-3)
    items = {n.GetName(): sh.GetItemByDataNode(n) for n in nodes["centerlines"]}
    assert sh.GetItemParent(items["LeftMainBronchus"]) == items["Trachea"]
    assert sh.GetItemParent(items["RightMainBronchus"]) == items["Trachea"]

    table = nodes["branchTable"].GetTable()
    assert table.GetNumberOfRows() == 3
    assert table.GetColumnByName("length_mm").GetValue(1) == pytest.approx(36.77)
    assert table.GetColumnByName("name").GetValue(2) == "RightMainBronchus"
    assert [n.GetName() for n in nodes["route"]] == ["Route"]
    assert nodes["routeTable"].GetTable().GetNumberOfRows() == 2
    assert nodes["metrics"] == {"airway_volume_ml": 4.2}

    folder = nodes["folder"]
    assert sh.GetItemName(folder) == LAYOUT.folder_name and sh.GetItemParent(folder) == sh.GetSceneItemID()
    assert sorted(sh_children_names(scene, folder)) == sorted(
        ["chest airway", "Centerlines", "airway_branches", "Route"])
    route_folder = sh.GetItemParent(sh.GetItemByDataNode(nodes["route"][0]))
    assert sorted(sh_children_names(scene, route_folder)) == ["Route", "route"]
    # The segmentation knows what was derived from it.
    derived = derived_nodes(nodes["segmentation"], LAYOUT)
    assert derived["centerlines"] == nodes["centerlines"] and derived["branchTable"] is nodes["branchTable"]
    assert derived["route"] == nodes["route"] and derived["routeTable"] is nodes["routeTable"]


def test_reimport_refuses_a_filled_segmentation_unless_allowed(scene, ct_node, tmp_path):
    write_result(hand_result(), tmp_path / "out")
    output = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my airway")
    first = import_folder(scene, tmp_path / "out", ct_node, output)
    assert first["segmentation"] is output
    counts = {c: count(scene, c) for c in ("vtkMRMLMarkupsCurveNode", "vtkMRMLTableNode", "vtkMRMLSegmentationNode")}
    assert counts == {"vtkMRMLMarkupsCurveNode": 4, "vtkMRMLTableNode": 2, "vtkMRMLSegmentationNode": 1}
    sh = scene.GetSubjectHierarchyNode()
    items_before = sh.GetNumberOfItems()

    with pytest.raises(InputError, match="my airway: already holds 1 segment"):
        import_folder(scene, tmp_path / "out", ct_node, output)
    assert {c: count(scene, c) for c in counts} == counts and sh.GetNumberOfItems() == items_before
    with pytest.raises(InputError, match="already holds 1 segment"):
        jobs.TaskJob(scene, AIRWAY_TASK, [ct_node], engine="classical", output_segmentation_node=output)  # before a run

    second = import_folder(scene, tmp_path / "out", ct_node, output, overwrite=True)
    # The old tree, tables and route are gone, not duplicated; folders and item count are as before.
    assert {c: count(scene, c) for c in counts} == counts
    assert sh.GetNumberOfItems() == items_before
    assert second["folder"] == first["folder"]
    assert all(scene.GetNodeByID(n.GetID()) is None for n in first["centerlines"])
    assert derived_nodes(output, LAYOUT)["centerlines"] == second["centerlines"]


def test_show_3d_builds_the_closed_surface(scene, ct_node):
    node = segmentation_node_from_labelmap(scene, mask_volume(), [AIRWAY], reference_volume_node=ct_node)
    show_3d(node, True)
    surface = node.GetSegmentation().GetSegment(node.GetSegmentation().GetNthSegmentID(0)).GetRepresentation(
        slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName())
    assert surface is not None and surface.GetNumberOfPoints() > 100
    assert node.GetDisplayNode().GetVisibility3D()
    show_3d(node, False)
    assert not node.GetDisplayNode().GetVisibility3D()


# -- route planning and update from an edited segmentation ---------------------------------------------
def fiducial(scene, ras) -> slicer.vtkMRMLMarkupsFiducialNode:
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "target")
    node.AddControlPointWorld(*ras)
    return node


def test_target_and_segment_lookup(scene):
    node = fiducial(scene, (-10.0, 20.0, 30.0))
    np.testing.assert_allclose(routes.target_lps(node), [10.0, -20.0, 30.0])
    np.testing.assert_allclose(routes.target_lps((1.0, 2.0, 3.0)), [-1.0, -2.0, 3.0])
    with pytest.raises(InputError, match="no control point"):
        routes.target_lps(scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "empty"))
    with pytest.raises(InputError, match="three finite RAS"):
        routes.target_lps((1.0, 2.0))
    segmentation = segmentation_node_from_labelmap(scene, mask_volume(), [AIRWAY])
    assert routes.airway_segment_id(segmentation) == segmentation.GetSegmentation().GetNthSegmentID(0)
    mask = routes.airway_mask(segmentation)
    assert mask.array.dtype == np.uint8 and int(mask.array.sum()) == int(y_mask().sum())


def bronchus_end_ras(side: int) -> tuple[float, float, float]:
    """RAS of a point just beyond the distal end of the left (+1) or right (-1) bronchus."""
    ck, cj, ci = CARINA
    lps = np.array([ci + side * (ck - 4) + side * 2.0, cj, 3.0])
    return (-lps[0], -lps[1], lps[2])


@needs_pipeline
def test_plan_route_then_update_from_edited_segmentation(scene, ct_node):
    segmentation = segmentation_node_from_labelmap(scene, mask_volume(), [AIRWAY], reference_volume_node=ct_node)
    planner = routes.RoutePlanner()
    target = fiducial(scene, bronchus_end_ras(+1))

    tree_nodes = planner.update_from_segmentation(scene, segmentation, reference_volume_node=ct_node)
    assert len(tree_nodes["centerlines"]) >= 3  # trachea and two main bronchi
    assert tree_nodes["branchTable"].GetTable().GetNumberOfRows() == len(tree_nodes["centerlines"])
    assert tree_nodes["route"] == [] and tree_nodes["routeTable"] is None
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1  # the source is left as it was

    planned = planner.plan_route(scene, segmentation, target, scope_diameter_mm=2.0, reference_volume_node=ct_node)
    assert len(planned["route"]) == 1 and planned["routeTable"] is not None
    assert planned["centerlines"] == tree_nodes["centerlines"]  # planning a route keeps the tree
    end = slicer.util.arrayFromMarkupsControlPoints(planned["route"][0], world=True)[-1]
    assert np.linalg.norm(end - np.asarray(bronchus_end_ras(+1))) < 8.0
    start = slicer.util.arrayFromMarkupsControlPoints(planned["route"][0], world=True)[0]
    assert start[2] > 50.0  # from the top of the trachea
    assert planner.cached(routes.airway_mask(segmentation, ct_node))
    assert planned["metrics"]["route"]["scope_stop"] is None  # a 2 mm scope passes 6 mm bronchi
    with pytest.raises(InputError, match="no target point"):
        planner.plan_route(scene, segmentation, None)
    with pytest.raises(InputError, match="from the nearest airway"):
        planner.plan_route(scene, segmentation, (500.0, 0.0, 0.0), reference_volume_node=ct_node)
    with pytest.raises(InputError, match="must be positive"):
        planner.plan_route(scene, segmentation, target, scope_diameter_mm=-1.0)
    assert derived_nodes(segmentation, LAYOUT)["route"] == planned["route"]  # a refused plan keeps the route

    # Planning again replaces the route (and its folder) and keeps the tree; a 7 mm scope stops in the bronchus.
    again = planner.plan_route(scene, segmentation, target, scope_diameter_mm=7.0, reference_volume_node=ct_node)
    assert count(scene, "vtkMRMLMarkupsCurveNode") == len(tree_nodes["centerlines"]) + 1
    assert count(scene, "vtkMRMLTableNode") == 2
    sh = scene.GetSubjectHierarchyNode()
    assert sh_children_names(scene, tree_nodes["folder"]).count("Route") == 1
    assert again["folder"] == tree_nodes["folder"]
    stop = again["metrics"]["route"]["scope_stop"]
    assert stop is not None and stop["distance_mm"] > 25.0, stop  # past the 8 mm trachea
    passes = again["routeTable"].GetTable().GetColumnByName("scope_passes")
    assert [passes.GetValue(n) for n in range(passes.GetNumberOfValues())][-1] == 0.0  # bools become 0/1
    assert sh.GetItemParent(sh.GetItemByDataNode(again["routeTable"])) == \
        sh.GetItemParent(sh.GetItemByDataNode(again["route"][0]))

    # The user erases the right bronchus in Segment Editor; the tree is rebuilt from what is left.
    segment_id = segmentation.GetSegmentation().GetNthSegmentID(0)
    voxels = slicer.util.arrayFromSegmentInternalBinaryLabelmap(segmentation, segment_id)
    assert voxels.shape == SHAPE  # the layer covers the whole grid, so [k, j, i] indices are the CT's
    voxels[: CARINA[0] - 2, :, : CARINA[2]] = 0  # right bronchus (LPS x < carina x)
    segmentation.GetSegmentation().GetSegment(segment_id).Modified()
    updated = planner.update_from_segmentation(scene, segmentation, target, 2.0, ct_node)
    assert len(updated["centerlines"]) < len(tree_nodes["centerlines"])
    assert all(scene.GetNodeByID(n.GetID()) is None for n in tree_nodes["centerlines"] + planned["route"])
    assert count(scene, "vtkMRMLMarkupsCurveNode") == len(updated["centerlines"]) + len(updated["route"])
    assert count(scene, "vtkMRMLTableNode") == 2
    assert not planner.cached(routes.airway_mask(segmentation, ct_node))  # the edit is a new tree


def test_update_from_a_segmentation_cut_at_the_division_keeps_it_and_says_why_there_is_no_tree(scene):
    """A scan whose top edge lies at the carina: the trachea leaves it on both sides of the division, so no
    tree is built (which branch is the trachea is unknown); the segmentation stays, the reason comes back."""
    top = CARINA[0]
    ct = np.full((top, *SHAPE[1:]), 40, dtype=np.int16)
    ct[y_mask()[:top] > 0] = -1000
    ct_node = volume_node_from_volume(scene, Volume(ct, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3), "cut"))
    segmentation = segmentation_node_from_labelmap(scene, mask_volume(np.ascontiguousarray(y_mask()[:top])),
                                                   [AIRWAY], reference_volume_node=ct_node)
    nodes = routes.RoutePlanner().update_from_segmentation(scene, segmentation, reference_volume_node=ct_node)
    assert nodes["centerlines"] == [] and count(scene, "vtkMRMLMarkupsCurveNode") == 0
    assert "the trachea cannot be told from the main bronchi" in nodes["metrics"]["warnings"][0]
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1


# -- engine and model choices --------------------------------------------------------------------------
@needs_pipeline
def test_engine_choices_show_card_facts(clinseg_home):
    found = choices.engine_choices(AIRWAY_TASK)
    assert [c.key for c in found[:2]] == ["auto", "classical"]
    assert "Auto: the classical engine" in found[0].summary and "no weights" in found[1].summary
    atm = choices.choice_for("atm22-baseline", found)
    assert atm.key == "model:atm22-baseline" and not atm.installed and atm.label.endswith("(not installed)")
    assert "trained on real data" in atm.summary and "Licence MIT" in atm.summary
    assert "1,022,106 parameters" in atm.summary and "none measured yet" in atm.summary
    assert atm.arguments() == ["--engine", "model", "--model", "atm22-baseline"]
    assert choices.resolve(AIRWAY_TASK, "classical").arguments() == ["--engine", "classical"]
    with pytest.raises(InputError, match="atm22-baseline: is not installed"):
        choices.resolve(AIRWAY_TASK, "model", "atm22-baseline")
    with pytest.raises(InputError, match="unknown engine"):
        choices.resolve(AIRWAY_TASK, "deep")
    assert choices.install_arguments("atm22-baseline") == ["models", "install", "atm22-baseline"]


def test_card_summary_lists_measured_figures():
    from clinseg.registry import ModelCard, get_registry

    data = get_registry().card("atm22-baseline").to_dict()
    data["figures"] = {"phantom_test": {"dice": 0.9134, "td": 0.81}, "n_cases": 12}
    summary = choices.card_summary(ModelCard.from_dict(data), installed=True)
    assert "Measured: phantom_test: dice 0.913, td 0.81; n_cases 12. Installed." in summary


# -- the background run ----------------------------------------------------------------------------------
def test_cli_arguments_and_devices():
    args = task_arguments(AIRWAY_TASK, ["ct.nrrd"], "out", "model", "atm22-baseline", "GPU",
                          {"targetPoint": (-10.0, 20.5, 30.0), "scopeDiameterMm": 4.0})
    assert args == ["airway", "ct.nrrd", "-o", "out", "--engine", "model", "--device", "cuda", "--no-preview",
                    "--model", "atm22-baseline", "--target=-10.0000,20.5000,30.0000", "--ras",
                    "--scope-diameter", "4"]
    assert [device_option(d) for d in ("Auto", "CPU", "auto", "cuda:1", "mps")] == \
        ["auto", "cpu", "auto", "cuda:1", "mps"]
    for bad in ("TPU", "cuda:x", "cpu:0"):
        with pytest.raises(InputError, match="unknown device"):
            device_option(bad)
    with pytest.raises(InputError, match="unknown engine"):
        task_arguments(AIRWAY_TASK, ["ct.nrrd"], "out", "deep")
    with pytest.raises(InputError, match="must be positive"):
        task_arguments(AIRWAY_TASK, ["ct.nrrd"], "out", options={"scopeDiameterMm": 0.0})
    with pytest.raises(InputError, match="takes no option scope"):
        task_arguments(AIRWAY_TASK, ["ct.nrrd"], "out", options={"scope": 2.0})  # a misspelt option is not ignored


def test_job_writes_the_input_in_world_geometry(scene, ct_node, tmp_path):
    import vtk

    from clinseg.io import read_volume

    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 5.0)  # 5 mm to the right (RAS x) = -5 mm in LPS x
    transform.SetMatrixTransformToParent(matrix)
    ct_node.SetAndObserveTransformNodeID(transform.GetID())
    job = jobs.TaskJob(scene, AIRWAY_TASK, [ct_node], engine="classical", device="CPU",
                       options={"targetPoint": (1.0, 2.0, 3.0), "scopeDiameterMm": 3.5}, work_dir=tmp_path / "work")
    args = job.prepare()
    assert args[:4] == ["airway", str(tmp_path / "work" / "input0.nrrd"), "-o", str(tmp_path / "work" / "out")]
    assert args[-4:] == ["--target=1.0000,2.0000,3.0000", "--ras", "--scope-diameter", "3.5"]
    written = read_volume(args[1])
    np.testing.assert_array_equal(written.array, slicer.util.arrayFromVolume(ct_node))
    np.testing.assert_allclose(written.origin, (-5.0, 0.0, 0.0), atol=1e-6)
    job.cleanup()
    assert (tmp_path / "work").is_dir()  # a folder given by the caller is the caller's
