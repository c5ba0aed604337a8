"""Module, logic and self-test bases shared by the four ClinicalSeg modules (Slicer only; the widget base is
in ``taskwidget``).

Slicer finds a module's ``<Name>``, ``<Name>Widget``, ``<Name>Logic`` and ``<Name>Test`` classes by name in
its module file. A module subclasses these bases and states its task as data (a ``TaskSpec``: CLI
arguments, node layout, import hook) plus what is particular to it (extra widgets, its own self-test input).

Modules import this file as a module (``from ClinicalSegLib import taskmodule``), not its classes:
Slicer's unit-test runner collects every TestCase bound to a name in the module file, so an imported
``TaskModuleTest`` would run once more on its own.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, Default, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
)

from . import jobs, series
from .runner import progress_text
from .task import TaskSpec, device_option
from .taskwidget import TaskModuleWidget, warningText
from .widgets import DEFAULT_DEVICE, DEVICE_CHOICES, PipelineUnavailableError, pipeline_unavailable_message

__all__ = ["TaskModuleLogic", "TaskModuleTest", "TaskModuleWidget", "TaskParameterNode", "describeModule",
           "warningText"]

MODULE_CATEGORY = "Segmentation.ClinicalSeg"
MODULE_CONTRIBUTORS = ["ClinicalSeg team"]
SLICER_ACKNOWLEDGEMENT = (
    " Built on 3D Slicer (https://www.slicer.org) and its PyTorch extension (SlicerPyTorch)."
)


def describeModule(parent, title: str, helpText: str, acknowledgementText: str) -> None:
    """Set the metadata every ClinicalSeg module shares (category, contributors) plus its own texts."""
    parent.title = title
    parent.categories = [MODULE_CATEGORY]
    parent.dependencies = []
    parent.contributors = list(MODULE_CONTRIBUTORS)
    parent.helpText = " ".join(helpText.split())
    parent.acknowledgementText = " ".join(acknowledgementText.split()) + SLICER_ACKNOWLEDGEMENT


@parameterNodeWrapper
class TaskParameterNode:
    """Parameters of a module that segments one input volume into one segmentation."""

    inputVolume: vtkMRMLScalarVolumeNode
    device: Annotated[str, Choice(list(DEVICE_CHOICES)), Default(DEFAULT_DEVICE)]
    outputSegmentation: vtkMRMLSegmentationNode


class TaskModuleLogic(ScriptedLoadableModuleLogic):
    """Runs the module's task with ``clinseg <task>`` in a child process and imports its results as nodes.

    Batch use from the Python console or ``Slicer --python-script``::

        nodes = slicer.util.getModuleLogic("AirwaySeg").process(volumeNode, targetPoint=(x, y, z))

    ``process`` blocks and returns the created nodes by role; with ``waitForCompletion=False`` it returns
    the started ``jobs.TaskJob`` (poll it, ``cancel()`` it, ``finish()`` it for the nodes). Keyword
    arguments other than the common ones are the task's own options (see the module's ``TaskSpec``).
    """

    task = TaskSpec("task", "Segmentation", available=False)
    parameterNodeClass = TaskParameterNode
    runnerFactory = staticmethod(jobs.clinseg_runner)  # replaced in tests by a stand-in or a tiny process

    def __init__(self, scene=None) -> None:
        super().__init__()
        self._scene = scene

    @property
    def scene(self):
        return self._scene if self._scene is not None else slicer.mrmlScene

    def getParameterNode(self):
        return self.parameterNodeClass(super().getParameterNode())

    def createJob(self, inputVolume, engine: str = "auto", modelId: str | None = None, device: str = "auto",
                  outputSegmentationNode=None, overwrite: bool = False, showClosedSurface: bool = False,
                  **options: Any) -> jobs.TaskJob:
        """The job for one run, every argument checked (an unshipped pipeline says so, after the same checks)."""
        if not self.task.available:
            jobs.input_nodes(inputVolume)
            device_option(device)
            raise PipelineUnavailableError(self.task.title)
        return jobs.TaskJob(self.scene, self.task, jobs.input_nodes(inputVolume), engine, modelId, device, options,
                            outputSegmentationNode, overwrite, showClosedSurface, runner_factory=self.runnerFactory)

    def process(self, inputVolume, engine: str = "auto", modelId: str | None = None, device: str = "auto",
                outputSegmentationNode=None, overwrite: bool = False, showClosedSurface: bool = False,
                waitForCompletion: bool = True, timeout: float | None = None, **options: Any):
        """Run the task on ``inputVolume`` (a volume node, or a list for multi-sequence tasks).

        A non-empty ``outputSegmentationNode`` is refused unless ``overwrite``. Blocking: returns the dict of
        created nodes; raises ``RunError`` (with the child's one-line reason), ``Cancelled`` or ``TimeoutError``.
        """
        job = self.createJob(inputVolume, engine, modelId, device, outputSegmentationNode, overwrite,
                             showClosedSurface, **options)
        if not waitForCompletion:
            return job.start()
        started = time.monotonic()
        nodes = job.run(timeout=timeout, on_event=self.logEvent)
        self._say(f"{self.task.title} done in {time.monotonic() - started:.1f} s")
        return nodes

    def processSeries(self, volumeNodes, engine: str = "auto", modelId: str | None = None, device: str = "auto",
                      showClosedSurface: bool = False, waitForCompletion: bool = True, timeout: float | None = None,
                      **options: Any):
        """Run the task on each volume node in turn, each into a new segmentation ("run on all selected series").

        Blocking: returns a ``series.SeriesOutcome`` (nodes per series name, one-line reason per failed series; a
        failure does not stop the others). ``waitForCompletion=False`` returns the started ``series.SeriesJob``.
        Each item may also be a list of nodes (one multi-sequence case).
        """
        def makeJob(node) -> jobs.TaskJob:
            return self.createJob(node, engine, modelId, device, None, False, showClosedSurface, **options)

        job = series.SeriesJob(list(volumeNodes), makeJob)
        if not waitForCompletion:
            return job.start()
        outcome = job.run(timeout=timeout, on_event=self.logEvent)
        self._say(f"{self.task.title}: {outcome.summary()}")
        return outcome

    def logEvent(self, event: dict) -> None:
        """Progress of a blocking run on the status bar; the child's log lines on the console."""
        if event["event"] == "progress":
            percent, label = progress_text(event)
            self._say(f"{self.task.title}: {label} ({percent}%)")
        elif event["event"] == "log" and event.get("message"):
            print(event["message"])

    @staticmethod
    def _say(text: str) -> None:
        if getattr(slicer, "app", None) is not None:  # absent on a headless scene
            slicer.util.showStatusMessage(text, 3000)
            slicer.app.processEvents()


class TaskModuleTest(ScriptedLoadableModuleTest):
    """Self-test of a module, downloading nothing: its logic on an input built in the scene.

    A module with a pipeline overrides ``makeInput`` (a generated phantom) and ``checkResult``; the base
    then runs the task to the end, then once more and cancels it. A task marked unavailable checks the plain
    refusal instead.
    """

    logicClass = TaskModuleLogic
    runOptions: dict[str, Any] = {"device": "CPU"}

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_LogicOnGeneratedInput()
        if self.logicClass.task.available:
            self.setUp()
            self.test_CancelStopsTheRun()

    def makeInput(self):
        """The input volume node(s) and whatever ``checkResult`` needs (each module generates its phantom)."""
        raise NotImplementedError(f"{self.__class__.__name__} must build its self-test input")

    def checkResult(self, nodes: dict, truth: Any) -> None:
        self.assertGreater(nodes["segmentation"].GetSegmentation().GetNumberOfSegments(), 0)

    def test_LogicOnGeneratedInput(self) -> None:
        self.delayDisplay("Creating the input volume")
        volume, truth = self.makeInput()
        logic = self.logicClass()
        if not logic.task.available:
            self._checkRefusal(logic, volume)
            return
        self.delayDisplay("Running the task in a background process")
        nodes = logic.process(volume, timeout=600, **self.runOptions)
        self.checkResult(nodes, truth)
        self.delayDisplay("A filled output segmentation is refused without overwrite")
        from clinseg.errors import InputError

        with self.assertRaises(InputError):
            logic.process(volume, outputSegmentationNode=nodes["segmentation"], **self.runOptions)
        self.delayDisplay("Test passed")

    def test_CancelStopsTheRun(self) -> None:
        from clinseg.errors import Cancelled

        volume, _truth = self.makeInput()
        job = self.logicClass().process(volume, waitForCompletion=False, **self.runOptions)
        job.cancel()
        with self.assertRaises(Cancelled):
            job.run(timeout=120)
        self.assertIsNotNone(job.runner.returncode)  # the child is gone
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"), 0)
        self.delayDisplay("Test passed (cancel)")

    def _checkRefusal(self, logic: TaskModuleLogic, volume) -> None:
        outputSegmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        with self.assertRaises(PipelineUnavailableError) as raised:
            logic.process(volume, outputSegmentationNode=outputSegmentation, device="CPU")
        self.assertEqual(str(raised.exception), pipeline_unavailable_message(logic.task.title))
        # No pipeline, no segments: nothing may be made up in its place.
        self.assertEqual(outputSegmentation.GetSegmentation().GetNumberOfSegments(), 0)
        from clinseg.errors import InputError

        with self.assertRaises(InputError):
            logic.process(volume, device="TPU")
        self.delayDisplay("Test passed")
