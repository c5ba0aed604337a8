"""NoduleSeg.py loaded as Slicer loads it, on the shared base, on a headless scene.

A stand-in runner plays the ``clinseg nodule`` child (it writes a real output folder with ``write_result``),
so this file checks the module's own part: the task options, the per-nodule segments, table and centre
points, the score threshold, and the route to a nodule through AirwaySeg's logic. The real ``clinseg nodule``
child then runs on a small generated chest (three nodules; a nodule-free twin for the empty answer) and every
output is checked as MRML nodes against the phantom's truth.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (headless MRML) is not installed")

from ClinicalSegLib.mrml import segmentation_node_from_labelmap, volume_node_from_volume  # noqa: E402
from stand_in_child import WritingChild  # noqa: E402

from clinseg.errors import InputError  # noqa: E402
from clinseg.result import Result  # noqa: E402
from clinseg.terminology import AIRWAY, NODULE  # noqa: E402
from clinseg.volume import Volume  # noqa: E402

SHAPE = (64, 48, 64)  # [k, j, i], 1 mm, identity: LPS = (i, j, k)


def ball(center_kji, radius) -> np.ndarray:
    k, j, i = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    return (k - center_kji[0]) ** 2 + (j - center_kji[1]) ** 2 + (i - center_kji[2]) ** 2 <= radius ** 2


def volume(array: np.ndarray, name: str) -> Volume:
    return Volume(array, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3), name)


def nodule_result() -> Result:
    from clinseg.post.nodules import nodule_table

    ct = np.full(SHAPE, -850, np.int16)
    labels = np.zeros(SHAPE, np.uint8)
    labels[ball((20, 24, 50), 5)] = 1  # 10 mm solid, near the end of the left bronchus
    labels[ball((40, 30, 14), 2.5)] = 2  # 5 mm, low score
    ct[labels > 0] = 30
    labelmap = volume(labels, "nodules")
    segments = [dataclasses.replace(NODULE, label=n, name=f"Nodule {n}") for n in (1, 2)]
    table = nodule_table(labelmap, volume(ct, "ct"), {1: 0.93, 2: 0.31})
    return Result("nodule", labelmap, segments, tables=[table], metrics={"engine": "classical", "nodules": 2})


class WritingRunner(WritingChild):
    """Stands in for the child: writes the output folder the real command would write."""

    def result(self):
        return nodule_result()


@pytest.fixture
def nodule(load_module, app_scene):
    module = load_module("NoduleSeg")
    assert module.NoduleSegLogic.task.available
    module.NoduleSegLogic.runnerFactory = staticmethod(WritingRunner)
    return module


def ct_node(scene):
    return volume_node_from_volume(scene, volume(np.full(SHAPE, -850, np.int16), "chest"))


def test_nodules_become_segments_a_table_and_centre_points(nodule, app_scene):
    logic = nodule.NoduleSegLogic()
    ct = ct_node(app_scene)
    job = logic.process(ct, engine="auto", device="CPU", minScore=0.25, waitForCompletion=False)
    assert job.runner.args[-2:] == ["--min-score", "0.25"] and job.runner.args[0] == "nodule"
    nodes = job.finish()
    segmentation = nodes["segmentation"]
    assert segmentation.GetName() == "chest nodules"
    names = [segmentation.GetSegmentation().GetNthSegment(n).GetName() for n in range(2)]
    assert names == ["Nodule 1", "Nodule 2"]
    assert "^27925004^" in segmentation.GetSegmentation().GetNthSegment(0).GetTerminology()
    table = nodes["noduleTable"].GetTable()
    assert table.GetNumberOfRows() == 2
    assert table.GetColumnByName("long_axis_mm").GetValue(0) == pytest.approx(10.0, abs=1.0)
    assert table.GetColumnByName("score").GetValue(1) == pytest.approx(0.31)
    centers = nodes["centers"]
    assert [centers.GetNthControlPointLabel(n) for n in range(2)] == ["Nodule 1", "Nodule 2"]
    position = [0.0, 0.0, 0.0]
    centers.GetNthControlPointPositionWorld(0, position)
    np.testing.assert_allclose(position, [-50.0, -24.0, 20.0], atol=0.1)  # LPS (50, 24, 20) as RAS
    assert "solid" in centers.GetNthControlPointDescription(0)

    shown = nodule.show_above(nodes, 0.5)
    display = segmentation.GetDisplayNode()
    ids = [segmentation.GetSegmentation().GetNthSegmentID(n) for n in range(2)]
    assert shown == 1 and display.GetSegmentVisibility(ids[0]) and not display.GetSegmentVisibility(ids[1])
    assert centers.GetNthControlPointVisibility(0) and not centers.GetNthControlPointVisibility(1)
    assert nodule.show_above(nodes, 0.0) == 2 and display.GetSegmentVisibility(ids[1])

    # A second run into the same segmentation replaces the nodules, table and points (after consent).
    with pytest.raises(InputError, match="already holds 2 segment"):
        logic.process(ct, outputSegmentationNode=segmentation)
    again = logic.process(ct, outputSegmentationNode=segmentation, overwrite=True)
    assert app_scene.GetNodeByID(centers.GetID()) is None and again["centers"] is not None
    assert app_scene.GetNumberOfNodesByClass("vtkMRMLMarkupsFiducialNode") == 1
    assert app_scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1
    with pytest.raises(InputError, match=r"must lie in \[0, 1\]"):
        logic.process(ct, minScore=1.5)
    with pytest.raises(InputError, match="takes no option"):
        logic.process(ct, targetPoint=(0, 0, 0))


def test_route_to_a_nodule_goes_through_airwaysegs_planner(nodule, load_module, app_scene):
    airway = load_module("AirwaySeg")
    ct = ct_node(app_scene)
    nodes = nodule.NoduleSegLogic().process(ct)
    # A trachea down to k = 30 and a bronchus going to +i (left, LPS x), ending near nodule 1.
    k, j, i = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    mask = ((k >= 30) & ((j - 24) ** 2 + (i - 32) ** 2 <= 16)) | \
        ((k <= 30) & (k >= 14) & ((j - 24) ** 2 + (i - 32 - (30 - k)) ** 2 <= 9))
    airway_segmentation = segmentation_node_from_labelmap(app_scene, volume(mask.astype(np.uint8), "airway"), [AIRWAY],
                                                          reference_volume_node=ct)
    logic = nodule.NoduleSegLogic()
    with pytest.raises(InputError, match="select a nodule in the table"):
        logic.planRouteToNodule(nodes["centers"], 5, airway_segmentation, airwayLogic=airway.AirwaySegLogic())
    route = logic.planRouteToNodule(nodes["centers"], 0, airway_segmentation, 2.0,
                                    airwayLogic=airway.AirwaySegLogic())
    assert len(route["route"]) == 1
    end = slicer.util.arrayFromMarkupsControlPoints(route["route"][0], world=True)[-1]
    assert np.linalg.norm(end - np.array([-50.0, -24.0, 20.0])) < 10.0  # the route ends at the nodule's bronchus
    assert route["metrics"]["route"]["scope_stop"] is None


def test_the_module_self_test_passes_headless_with_the_real_child(load_module, app_scene, clinseg_home):
    """What Testing/run_selftests.py runs inside Slicer: a real `clinseg nodule` child on a generated chest
    (each of its three nodules found within its radius), refusal of a filled output, then cancel."""
    load_module("NoduleSeg").NoduleSegTest().runTest()
    assert app_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0  # the cancel test's clean scene


# -- the real child ---------------------------------------------------------------------------------------------
# The issue's table columns: centre, axial long / short axis (and the plane), equivalent diameter, volume, mean HU,
# type, score, Lung-RADS size category with its "information only" note.
ISSUE_COLUMNS = ("label", "center_lps_x_mm", "center_lps_y_mm", "center_lps_z_mm", "long_axis_mm", "short_axis_mm",
                 "axial_plane_z_mm", "equivalent_diameter_mm", "volume_ml", "mean_hu", "type", "score",
                 "lung_rads_size_category", "lung_rads_note")


@pytest.fixture(scope="module")
def chest():
    """Small chest (160 x 160 x 128 at 1.4 mm) with three solid nodules of 4.0, 4.4 and 7.1 mm (one juxta-pleural)."""
    from clinseg.phantoms import generate_chest

    return generate_chest(seed=2, preset="small", with_vessels=False, n_nodules=3, n_distractors=0)


def table_rows(table_node) -> list[dict]:
    table = table_node.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    return [{n: table.GetColumnByName(n).GetValue(r) for n in names} for r in range(table.GetNumberOfRows())]


def ras(lps) -> np.ndarray:
    return np.array([-lps[0], -lps[1], lps[2]], float)


def test_real_child_gives_every_nodule_output_as_mrml_nodes(load_module, app_scene, chest, clinseg_home):
    """Run, check every node against the table and the truth, the slider, then a route from the table."""
    from ClinicalSegLib.mrml_segmentation import labelmap_from_segmentation_node

    from clinseg.post.nodules import LUNG_RADS_NOTE, lung_rads_size_category

    module = load_module("NoduleSeg")
    ct = volume_node_from_volume(app_scene, chest.ct, name="chest")
    nodes = module.NoduleSegLogic().process(ct, engine="auto", device="CPU", minScore=0.5, timeout=300)
    metrics = nodes["metrics"]
    assert metrics["engine"] == "model" and metrics["min_score"] == 0.5
    rows = table_rows(nodes["noduleTable"])
    table = nodes["noduleTable"].GetTable()
    assert set(ISSUE_COLUMNS) <= {table.GetColumnName(c) for c in range(table.GetNumberOfColumns())}
    # Every phantom nodule is found (the engine may add false positives: their number is the bench's business).
    assert len(rows) == metrics["count"] >= len(chest.nodules) == 3
    assert module.noduleSummary(metrics) == f"{len(rows)} nodule(s) at score >= 0.5"

    # The threshold went to the child: every row scores at least 0.5, best first.
    scores = [row["score"] for row in rows]
    assert min(scores) >= 0.5 and scores == sorted(scores, reverse=True)

    # One segment per row, coded as a nodule (SNOMED CT 27925004), holding the row's voxels.
    segmentation = nodes["segmentation"].GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(rows)
    voxel_ml = float(np.prod(chest.ct.spacing)) / 1000.0
    for n, row in enumerate(rows):
        segment = segmentation.GetNthSegment(n)
        assert segment.GetName() == f"Nodule {int(row['label'])}"
        assert segment.GetTerminology() == NODULE.terminology_entry()
        labels, _ = labelmap_from_segmentation_node(nodes["segmentation"], [segmentation.GetNthSegmentID(n)],
                                                    reference=chest.ct)
        mask = np.asarray(labels.array) > 0
        assert np.count_nonzero(mask) * voxel_ml == pytest.approx(row["volume_ml"], abs=6e-6)  # 5 decimals
        centre = chest.ct.index_to_physical(np.argwhere(mask).mean(axis=0)[::-1])
        np.testing.assert_allclose(centre, [row[f"center_lps_{a}_mm"] for a in "xyz"], atol=0.01)

    # One locked centre point per row, at the table's centre in RAS.
    centers = nodes["centers"]
    assert centers.GetNumberOfControlPoints() == len(rows)
    for n, row in enumerate(rows):
        assert centers.GetNthControlPointLabel(n) == f"Nodule {int(row['label'])}"
        position = [0.0, 0.0, 0.0]
        centers.GetNthControlPointPositionWorld(n, position)
        np.testing.assert_allclose(position, ras([row[f"center_lps_{a}_mm"] for a in "xyz"]), atol=1e-3)
        assert centers.GetNthControlPointLocked(n)

    # Measurements: each phantom nodule is a row at its centre with its size; Lung-RADS from size and type only.
    matched = []
    for truth in chest.nodules:
        row = min(rows, key=lambda r: np.linalg.norm(np.subtract([r[f"center_lps_{a}_mm"] for a in "xyz"],
                                                                  truth.center_lps)))
        matched.append(row)
        assert np.linalg.norm(np.subtract([row[f"center_lps_{a}_mm"] for a in "xyz"], truth.center_lps)) < 1.5
        assert row["equivalent_diameter_mm"] == pytest.approx(truth.diameter_mm, abs=1.5)
        assert row["volume_ml"] == pytest.approx(np.pi * row["equivalent_diameter_mm"] ** 3 / 6000, rel=1e-2)
        assert row["long_axis_mm"] >= row["short_axis_mm"] > 0
        assert row["type"] == truth.kind and -800 < row["mean_hu"] < 100
        assert row["lung_rads_size_category"] == lung_rads_size_category(
            row["type"], row["mean_diameter_mm"], row["solid_mean_diameter_mm"])
        assert row["lung_rads_note"] == LUNG_RADS_NOTE == "size only, not a diagnosis"

    # The widget's slider: a threshold just above the lowest score hides exactly the nodules at that score.
    display = nodes["segmentation"].GetDisplayNode()
    cut = scores[-1] + 1e-6
    shown = [score >= cut for score in scores]
    assert module.show_above(nodes, cut) == sum(shown) < len(rows)
    assert [display.GetSegmentVisibility(segmentation.GetNthSegmentID(n)) for n in range(len(rows))] == shown
    assert [bool(centers.GetNthControlPointVisibility(n)) for n in range(len(rows))] == shown

    # A route to each phantom nodule from its table row, through AirwaySeg's planner on the phantom's airway.
    airway_module = load_module("AirwaySeg")
    airway = segmentation_node_from_labelmap(app_scene, chest.lumen.with_array(
        (np.asarray(chest.lumen.array) > 0).astype(np.uint8)), [AIRWAY], reference_volume_node=ct)
    airway_logic, logic = airway_module.AirwaySegLogic(), module.NoduleSegLogic()
    for row in matched:
        n = rows.index(row)
        planned = logic.planRouteToNodule(centers, n, airway, 1.0, airwayLogic=airway_logic)
        route = planned["metrics"]["route"]
        end = slicer.util.arrayFromMarkupsControlPoints(planned["route"][0], world=True)[-1]
        target = ras([row[f"center_lps_{a}_mm"] for a in "xyz"])
        # The route ends at the airway point nearest the nodule (within the planner's 40 mm reach).
        assert np.linalg.norm(end - target) == pytest.approx(route["remaining_mm"], abs=0.05)
        assert route["remaining_mm"] < 40 and route["path_length_mm"] > 100 and route["scope_stop"] is None
        np.testing.assert_allclose(route["target_lps"], [row[f"center_lps_{a}_mm"] for a in "xyz"], atol=0.006)
    assert app_scene.GetNumberOfNodesByClass("vtkMRMLMarkupsCurveNode") == 1  # each route replaced the last
    # The same scope check as AirwaySeg's: a 4 mm scope stops where the lumen gets narrower.
    first = rows.index(matched[0])
    stop = logic.planRouteToNodule(centers, first, airway, 4.0, airwayLogic=airway_logic)["metrics"]["route"]
    stop = stop["scope_stop"]
    assert stop is not None and stop["lumen_diameter_mm"] < 4.0

    # Remove the weakest phantom nodule, then click it back: the run's path for its blob gives the same row.
    weakest = min(matched, key=lambda r: r["score"])
    logic.removeNodule(nodes["segmentation"], int(weakest["label"]))
    assert len(table_rows(nodes["noduleTable"])) == segmentation.GetNumberOfSegments() == len(rows) - 1
    click = ras([weakest[f"center_lps_{a}_mm"] for a in "xyz"])
    added = logic.addNoduleAt(ct, click, nodes["segmentation"])
    back = table_rows(added["noduleTable"])[-1]
    assert added["label"] == len(rows) + 1 and centers.GetNumberOfControlPoints() == len(rows)
    for key in ("voxels", "volume_ml", "long_axis_mm", "short_axis_mm", "mean_hu", "type", "score"):
        assert back[key] == pytest.approx(weakest[key], abs=1e-4) if isinstance(back[key], float) else \
            back[key] == weakest[key], key


def test_real_child_without_nodules_still_gives_the_table(load_module, app_scene, clinseg_home):
    """The same chest without nodules, and a threshold of 1: "no nodule above threshold", an empty segmentation,
    table and points."""
    from clinseg.phantoms import generate_chest
    from clinseg.post.nodules import TABLE_COLUMNS

    module = load_module("NoduleSeg")
    empty = generate_chest(seed=2, preset="small", with_vessels=False, n_nodules=0, n_distractors=0)
    ct = volume_node_from_volume(app_scene, empty.ct, name="clear chest")
    nodes = module.NoduleSegLogic().process(ct, engine="auto", device="CPU", minScore=1.0, timeout=300)
    assert nodes["metrics"]["count"] == 0 and nodes["metrics"]["candidates"] > 0
    assert module.noduleSummary(nodes["metrics"]) == "no nodule above threshold"
    table = nodes["noduleTable"].GetTable()
    assert table.GetNumberOfRows() == 0
    assert [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())] == TABLE_COLUMNS
    assert nodes["segmentation"].GetSegmentation().GetNumberOfSegments() == 0
    assert nodes["centers"].GetNumberOfControlPoints() == 0
    assert module.show_above(nodes, 0.5) == 0


# -- click to add, remove --------------------------------------------------------------------------------------
def test_nodules_are_added_by_a_click_and_removed_with_their_segment_row_and_point(load_module, app_scene, chest):
    from clinseg.tasks.nodule.interactive import nodule_at

    module = load_module("NoduleSeg")
    logic = module.NoduleSegLogic()
    ct = volume_node_from_volume(app_scene, chest.ct, name="chest")
    first, second = chest.nodules[0], chest.nodules[2]
    nodes = logic.addNoduleAt(ct, ras(first.center_lps))  # no result yet: one is started
    segmentation = nodes["segmentation"]
    assert nodes["label"] == 1 and segmentation.GetName() == "chest nodules"
    nodes = logic.addNoduleAt(ct, ras(second.center_lps) + [0.8, -0.5, 0.3], segmentationNode=segmentation)
    assert nodes["label"] == 2
    rows = table_rows(nodes["noduleTable"])
    assert [int(r["label"]) for r in rows] == [1, 2] and isinstance(rows[1]["volume_ml"], float)
    expected = nodule_at(chest.ct, second.center_lps, label=2).measurement  # the core, on the same click
    assert rows[1]["volume_ml"] == pytest.approx(expected.volume_ml, rel=1e-4)
    assert rows[1]["type"] == expected.kind and rows[1]["lung_rads_size_category"] == expected.lung_rads
    seg = segmentation.GetSegmentation()
    assert [seg.GetNthSegment(n).GetName() for n in range(2)] == ["Nodule 1", "Nodule 2"]
    assert seg.GetNthSegment(1).GetTerminology() == NODULE.terminology_entry()
    voxels = np.count_nonzero(np.asarray(labelmap_of(segmentation, seg.GetNthSegmentID(1), chest.ct).array))
    assert voxels == expected.voxels
    centers = nodes["centers"]
    assert [centers.GetNthControlPointLabel(n) for n in range(2)] == ["Nodule 1", "Nodule 2"]
    position = [0.0, 0.0, 0.0]
    centers.GetNthControlPointPositionWorld(1, position)
    np.testing.assert_allclose(position, ras(expected.center_lps), atol=0.01)

    with pytest.raises(InputError, match="already in the table as Nodule 1"):
        logic.addNoduleAt(ct, ras(first.center_lps) + [1.0, 0.0, 0.0], segmentationNode=segmentation)
    with pytest.raises(InputError, match="lies outside the CT"):
        logic.addNoduleAt(ct, (0.0, 0.0, -900.0), segmentationNode=segmentation)

    nodes = logic.removeNodule(segmentation, 1)
    assert seg.GetNumberOfSegments() == 1 and seg.GetNthSegment(0).GetName() == "Nodule 2"
    assert [int(r["label"]) for r in table_rows(nodes["noduleTable"])] == [2]
    assert centers.GetNumberOfControlPoints() == 1 and centers.GetNthControlPointLabel(0) == "Nodule 2"
    with pytest.raises(InputError, match="nodule 1: is not in this result"):
        logic.removeNodule(segmentation, 1)
    # Labels are never reused: the next click becomes Nodule 3.
    assert logic.addNoduleAt(ct, ras(first.center_lps), segmentationNode=segmentation)["label"] == 3


def test_a_click_adds_to_an_empty_result(nodule, app_scene, chest):
    """An empty run's table has untyped columns: the first added row gives them their types."""
    from clinseg.post.nodules import nodule_table

    ct = volume_node_from_volume(app_scene, chest.ct, name="chest")
    empty = chest.ct.with_array(np.zeros(chest.ct.shape, np.uint8))
    result = Result("nodule", empty, [], tables=[nodule_table(empty, chest.ct, {})], metrics={"count": 0})
    nodes = nodule.NODULE.import_result(app_scene, result, nodule.ImportRequest(ct))
    assert nodes["noduleTable"].GetTable().GetNumberOfRows() == 0
    nodes = nodule.NoduleSegLogic().addNoduleAt(ct, ras(chest.nodules[2].center_lps), nodes["segmentation"])
    table = nodes["noduleTable"].GetTable()
    assert table.GetNumberOfRows() == 1 and nodes["label"] == 1
    assert isinstance(table.GetColumnByName("score"), vtk_data_array())
    assert table_rows(nodes["noduleTable"])[0]["score"] > 0.5
    assert nodes["centers"].GetNumberOfControlPoints() == 1


def labelmap_of(segmentation, segment_id, reference):
    from ClinicalSegLib.mrml_segmentation import labelmap_from_segmentation_node

    return labelmap_from_segmentation_node(segmentation, [segment_id], reference=reference)[0]


def vtk_data_array():
    import vtk

    return vtk.vtkDataArray
