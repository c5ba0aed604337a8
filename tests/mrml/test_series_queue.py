""""Run on several series": the logic runs a task on each volume in turn, each into its own segmentation.

A stand-in runner plays the child (it writes a real output folder with ``write_result``), so this checks the
queue: order, one segmentation per series, a failing series reported with its reason while the others go on,
progress labels naming the series, and cancel dropping what has not started.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (headless MRML) is not installed")

from ClinicalSegLib.mrml import labelmap_from_segmentation_node, volume_node_from_volume  # noqa: E402
from ClinicalSegLib.runner import RunError  # noqa: E402
from ClinicalSegLib.series import SeriesJob  # noqa: E402

from clinseg.errors import Cancelled  # noqa: E402
from clinseg.io import read_volume  # noqa: E402
from clinseg.output import write_result  # noqa: E402
from clinseg.result import Result  # noqa: E402
from clinseg.terminology import AIRWAY  # noqa: E402
from clinseg.volume import Volume  # noqa: E402

SHAPE = (20, 24, 28)


class StandInRunner:
    """Writes an airway result whose mask is the input's voxels above 0; a negative input fails like a child."""

    started: list[list[str]] = []

    def __init__(self, args) -> None:
        self.args, self.finished, self.returncode = list(args), False, None
        self._polls = 0

    def start(self) -> None:
        StandInRunner.started.append(self.args)

    def poll(self) -> list[dict]:
        self._polls += 1
        if self._polls < 2:
            return [{"event": "progress", "stage": "segmentation", "done": 1, "total": 2}]
        self.finished, self.returncode = True, 0
        return []

    def cancel(self) -> None:
        self.finished, self.returncode = True, 130

    def wait(self, timeout=None, on_event=None) -> dict:
        if self.returncode == 130:
            raise Cancelled("airway")
        ct = read_volume(self.args[1])
        if ct.array.max() < 0:
            raise RunError("clinseg: error: CT: no airway found", 2)
        out = Path(self.args[self.args.index("-o") + 1])
        write_result(Result("airway", ct.with_array((ct.array > 0).astype(np.uint8)), [AIRWAY]), out)
        return {"event": "result", "out": str(out)}


@pytest.fixture
def airway(load_module, app_scene):
    module = load_module("AirwaySeg")
    module.AirwaySegLogic.runnerFactory = staticmethod(StandInRunner)
    StandInRunner.started = []
    return module


def node(scene, name: str, value: int, size: int):
    array = np.full(SHAPE, -1, np.int16)
    array[5 : 5 + size, 5:15, 5:15] = value
    return volume_node_from_volume(scene, Volume(array, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3), name))


def segment_voxels(segmentation) -> int:
    return int((labelmap_from_segmentation_node(segmentation)[0].array > 0).sum())


def test_each_series_gets_its_own_segmentation_and_a_failure_does_not_stop_the_rest(airway, app_scene):
    volumes = [node(app_scene, "first", 100, 4), node(app_scene, "broken", -5, 4), node(app_scene, "third", 100, 8)]
    outcome = airway.AirwaySegLogic().processSeries(volumes, engine="classical", device="CPU")
    assert [args[0] for args in StandInRunner.started] == ["airway"] * 3
    assert list(outcome.nodes) == ["first", "third"]
    assert outcome.failures == {"broken": "clinseg: error: CT: no airway found"}
    assert not outcome.cancelled
    assert outcome.summary().startswith("2 of 3 series done; failed: broken: ")
    segmentations = [outcome.nodes[name]["segmentation"] for name in ("first", "third")]
    assert segmentations[0] is not segmentations[1]
    assert [segment_voxels(s) for s in segmentations] == [4 * 10 * 10, 8 * 10 * 10]
    assert app_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 2


def test_progress_names_the_series_and_cancel_drops_the_rest(airway, app_scene):
    volumes = [node(app_scene, "a", 100, 4), node(app_scene, "b", 100, 4), node(app_scene, "c", 100, 4)]
    job = airway.AirwaySegLogic().processSeries(volumes, device="CPU", waitForCompletion=False)
    assert isinstance(job, SeriesJob) and job.running
    stages = [e["stage"] for e in job.poll() if e["event"] == "progress"]
    assert stages == ["series 1/3 (a): segmentation"]
    job.poll()  # a finishes; b starts
    assert list(job.outcome.nodes) == ["a"] and len(StandInRunner.started) == 2
    job.cancel()
    job.poll()
    assert job.finished and not job.running
    outcome = job.finish()
    assert list(outcome.nodes) == ["a"] and outcome.cancelled and len(StandInRunner.started) == 2
    assert outcome.summary() == "1 of 1 series done (cancelled)"


def test_a_queue_cancelled_before_any_result_raises_cancelled(airway, app_scene):
    job = airway.AirwaySegLogic().processSeries([node(app_scene, "a", 100, 4)], waitForCompletion=False)
    job.cancel()
    job.poll()
    with pytest.raises(Cancelled):
        job.finish()
    with pytest.raises(ValueError, match="no series"):
        SeriesJob([], lambda n: None)
