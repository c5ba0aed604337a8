"""AirwaySeg.py itself, loaded as Slicer loads it, driven through the shared task-module base on a headless scene.

Real child processes (``python -m clinseg airway``) run the classical engine on a generated chest CT: a run with
a route target, a refused and an allowed re-run into the filled segmentation, a cancelled run, an update from
the edited segmentation, and the module's own self-test. A stand-in runner checks the logic's error path
without a child.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (headless MRML) is not installed")

from ClinicalSegLib.mrml import labelmap_from_segmentation_node, volume_node_from_volume  # noqa: E402
from ClinicalSegLib.runner import RunError  # noqa: E402

from clinseg.errors import Cancelled, InputError  # noqa: E402


@pytest.fixture(scope="module")
def phantom():
    from clinseg.phantoms import generate_chest

    return generate_chest(seed=7, preset="small", with_vessels=False, n_nodules=1, n_distractors=0)


@pytest.fixture
def airway(load_module, app_scene):
    return load_module("AirwaySeg")


def dice(segmentation, phantom) -> float:
    found = labelmap_from_segmentation_node(segmentation, reference=phantom.ct)[0].array > 0
    truth = phantom.lumen.array > 0
    return 2 * float((found & truth).sum()) / float(found.sum() + truth.sum())


def counts(scene) -> dict[str, int]:
    return {c: scene.GetNumberOfNodesByClass(c) for c in
            ("vtkMRMLSegmentationNode", "vtkMRMLMarkupsCurveNode", "vtkMRMLTableNode", "vtkMRMLMarkupsDisplayNode")}


def temp_folders() -> set[Path]:
    import tempfile

    return set(Path(tempfile.gettempdir()).glob("ClinicalSeg-airway-*"))


def test_run_rerun_with_overwrite_and_update_from_the_edited_segmentation(airway, app_scene, phantom, clinseg_home):
    logic = airway.AirwaySegLogic()
    ct = volume_node_from_volume(app_scene, phantom.ct, name="phantom")
    x, y, z = phantom.nodules[0].center_lps
    before = temp_folders()
    events: list[dict] = []
    logic.logEvent = events.append  # what a blocking run reports
    nodes = logic.process(ct, engine="classical", device="CPU", targetPoint=(-x, -y, z), scopeDiameterMm=2.0,
                          timeout=300)
    assert any(e["event"] == "progress" for e in events)
    assert temp_folders() == before  # the work folder is gone once the nodes hold the results
    segmentation = nodes["segmentation"]
    first_dice = dice(segmentation, phantom)
    assert first_dice > 0.5 and segmentation.GetName() == "phantom airway"
    assert len(nodes["centerlines"]) >= 3 and len(nodes["route"]) == 1
    assert nodes["branchTable"].GetTable().GetNumberOfRows() == len(nodes["centerlines"])
    assert nodes["metrics"]["engine"] == "classical" and nodes["metrics"]["route"]["path_length_mm"] > 50
    after_first = counts(app_scene)

    with pytest.raises(InputError, match="already holds 1 segment"):  # before any child starts
        logic.process(ct, engine="classical", device="CPU", outputSegmentationNode=segmentation)
    again = logic.process(ct, engine="classical", device="CPU", outputSegmentationNode=segmentation, overwrite=True,
                          timeout=300)
    assert again["segmentation"] is segmentation and again["folder"] == nodes["folder"]
    assert again["route"] == [] and again["routeTable"] is None  # no target this time: the stale route is gone
    assert all(app_scene.GetNodeByID(n.GetID()) is None for n in nodes["centerlines"] + nodes["route"])
    expected = dict(after_first, vtkMRMLMarkupsCurveNode=after_first["vtkMRMLMarkupsCurveNode"] - 1,
                    vtkMRMLTableNode=after_first["vtkMRMLTableNode"] - 1,
                    vtkMRMLMarkupsDisplayNode=after_first["vtkMRMLMarkupsDisplayNode"] - 1)
    assert counts(app_scene) == expected  # replaced, not duplicated, and no orphaned display nodes
    assert dice(segmentation, phantom) == pytest.approx(first_dice, abs=1e-6)  # same input, same engine

    # The user erases the lower airway on one side in Segment Editor, then updates the tree.
    segment_id = segmentation.GetSegmentation().GetNthSegmentID(0)
    voxels = slicer.util.arrayFromSegmentInternalBinaryLabelmap(segmentation, segment_id)
    k, j, i = np.nonzero(voxels)
    voxels[: int(np.percentile(k, 60)), :, int(np.median(i)):] = 0
    segmentation.GetSegmentation().GetSegment(segment_id).Modified()
    updated = logic.updateFromSegmentation(segmentation, referenceVolumeNode=ct)
    assert 1 <= len(updated["centerlines"]) < len(again["centerlines"])
    assert all(app_scene.GetNodeByID(n.GetID()) is None for n in again["centerlines"])
    assert counts(app_scene)["vtkMRMLMarkupsCurveNode"] == len(updated["centerlines"]) + len(updated["route"])
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1  # the user's edit is kept as it is


def test_cancel_stops_the_child_and_leaves_nothing(airway, app_scene, phantom, clinseg_home):
    ct = volume_node_from_volume(app_scene, phantom.ct, name="phantom")
    before = temp_folders()
    job = airway.AirwaySegLogic().process(ct, engine="classical", device="CPU", waitForCompletion=False)
    while not any(e["event"] == "progress" and e["stage"] != "checks" for e in job.poll()):
        assert not job.finished, job.failure_message()
        time.sleep(0.05)
    job.cancel()  # SIGTERM: the child leaves at its next work unit
    with pytest.raises(Cancelled):
        job.run(timeout=60)
    assert job.runner.returncode == 130  # stopped by itself (cooperatively), not killed
    assert app_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    assert temp_folders() == before


class FailingRunner:
    """A stand-in for ProcessRunner: ends at once with the one-line reason a real child would give."""

    def __init__(self, args) -> None:
        self.args, self.cancelled, self.finished = list(args), False, False

    def start(self) -> None:
        self.finished = True

    def poll(self) -> list[dict]:
        return []

    def wait(self, timeout=None, on_event=None):
        raise RunError(f"{self.args[1]}: is not a CT (intensities 0..255 look like an 8-bit image)", 2)

    def failure_message(self) -> str:
        return "stand-in"


def test_an_injected_runner_gets_the_task_arguments_and_its_error_reaches_the_caller(airway, app_scene):
    logic = airway.AirwaySegLogic()
    logic.runnerFactory = FailingRunner
    volume = volume_node_from_volume(app_scene, _tiny_volume(), name="photo")
    job = logic.process(volume, engine="classical", device="GPU", waitForCompletion=False, scopeDiameterMm=3.0)
    assert job.runner.args[0] == "airway" and job.runner.args[1].endswith("input0.nrrd")
    assert job.runner.args[-2:] == ["--scope-diameter", "3"] and "cuda" in job.runner.args
    with pytest.raises(RunError, match="is not a CT"):
        job.finish()
    assert not job.work_dir.exists() and app_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    with pytest.raises(InputError, match="takes no option"):
        logic.process(volume, scope=3.0)


def _tiny_volume():
    from clinseg.volume import Volume

    return Volume(np.zeros((4, 4, 4), np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3), "tiny")


def test_the_module_self_test_passes_headless(airway, app_scene, clinseg_home):
    """What Testing/run_selftests.py runs inside Slicer: run with a route, refusal, cancel, route and update."""
    airway.AirwaySegTest().runTest()
    assert app_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0  # the cancel test's clean scene
