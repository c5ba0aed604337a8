"""AirwaySeg: airway tree from chest CT, branch table and bronchoscope route planning.

The widget only wires Qt to the logic; the logic only wires the scene to ``AirwaySegLib`` (run, import,
routes, models), which holds everything testable without the Slicer application.
"""

import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np

# From a source checkout (this folder added to Slicer's module paths) the shared package and the core
# sit beside the module folder rather than in qt-scripted-modules: make them importable the same way.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "ClinicalSegLib" / "ClinicalSegLib").is_dir():
    sys.path[:0] = [p for p in (str(_checkout / "ClinicalSegLib"), str(_checkout)) if p not in sys.path]

import qt  # noqa: E402
import slicer  # noqa: E402
import vtk  # noqa: E402
from AirwaySegLib import jobs, models, outputs, routes  # noqa: E402
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode  # noqa: E402
from slicer.parameterNodeWrapper import Choice, Default, WithinRange, parameterNodeWrapper  # noqa: E402
from slicer.ScriptedLoadableModule import ScriptedLoadableModule  # noqa: E402

from ClinicalSegLib import dependencies, mrml, taskmodule, widgets  # noqa: E402
from ClinicalSegLib import runner as taskrunner  # noqa: E402
from clinseg.errors import InputError  # noqa: E402

TASK_TITLE = "Airway segmentation"


class AirwaySeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        taskmodule.describeModule(
            self.parent,
            title="Airway Segmentation",
            helpText=(
                "Segments the bronchial airway tree in chest CT (a registered model, or a classical region-growing "
                "engine that needs no weights), then derives its centerlines (nested curves with the lumen radius "
                "per point), a table of branches with generation, length and diameter, and a route from the trachea "
                "to a target point (for example a peripheral nodule) that a bronchoscope of the given diameter can "
                "follow. The run happens in a background process with progress and Cancel. The segmentation can be "
                "edited in Segment Editor and the tree and route rebuilt from it with 'Update from segmentation'."
            ),
            acknowledgementText=(
                "Task definition and evaluation follow the MICCAI 2022 Airway Tree Modeling challenge (ATM'22) "
                "and an SJTU thesis on bronchial segmentation in non-contrast lung CT (3D U-Net with attention "
                "distillation and feature re-learning)."
            ),
        )


@parameterNodeWrapper
class AirwaySegParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    device: Annotated[str, Choice(list(widgets.DEVICE_CHOICES)), Default(widgets.DEFAULT_DEVICE)]
    outputSegmentation: vtkMRMLSegmentationNode
    targetPoint: vtkMRMLMarkupsFiducialNode
    # Outer diameter of the bronchoscope: branches narrower than this are not followed by the route.
    scopeDiameter: Annotated[float, WithinRange(1.0, 10.0), Default(4.0)]


def _placedTarget(targetNode):
    """The fiducial node when it has a point to aim at, else None (no route is planned)."""
    if targetNode is None or targetNode.GetNumberOfControlPoints() == 0:
        return None
    return targetNode


class AirwaySegLogic(taskmodule.TaskModuleLogic):
    """Batch use from the Python console::

        nodes = slicer.util.getModuleLogic("AirwaySeg").process(volumeNode, engine="classical", targetPoint=(x, y, z))

    ``targetPoint`` is RAS (or a markups fiducial node); ``nodes`` holds the segmentation, the centerline
    curves, the branch table, the route and its table.
    """

    taskTitle = TASK_TITLE
    parameterNodeClass = AirwaySegParameterNode

    def __init__(self):
        super().__init__()
        self.routePlanner = routes.RoutePlanner()

    def process(self, inputVolumeNode, engine="auto", modelId=None, device="auto", targetPoint=None,
                scopeDiameterMm=None, outputSegmentationNode=None, waitForCompletion=True, overwrite=False,
                showClosedSurface=False, applyButton=None, progressBar=None, statusLabel=None, onFinished=None):
        """Segment the airway of ``inputVolumeNode`` with ``clinseg airway`` in a child process.

        With ``waitForCompletion`` returns the dict of created nodes; otherwise returns the started
        ``SlicerTaskRunner`` (its ``cancel()`` kills the process tree) and calls ``onFinished(nodes or None)``
        once the results are in the scene. A non-empty ``outputSegmentationNode`` is refused unless ``overwrite``.
        """
        job = jobs.AirwayJob(slicer.mrmlScene, inputVolumeNode, engine, modelId, device, targetPoint,
                             scopeDiameterMm, outputSegmentationNode, overwrite, closed_surface=showClosedSurface)
        if waitForCompletion:
            started = time.time()
            nodes = job.run(on_event=self._logEvent)
            slicer.util.showStatusMessage(f"{TASK_TITLE} done in {time.time() - started:.1f} s", 3000)
            return nodes

        def finished(success):
            job.cleanup()
            if onFinished is not None:
                onFinished(job.nodes if success else None)

        taskRunner = taskrunner.SlicerTaskRunner(applyButton, progressBar, statusLabel,
                                                 onResult=job.import_outputs, onFinished=finished)
        try:
            taskRunner.run(job.prepare())
        except Exception:
            job.cleanup()
            raise
        return taskRunner

    @staticmethod
    def _logEvent(event):
        if event["event"] == "progress":
            percent, label = taskrunner.progress_text(event)
            slicer.util.showStatusMessage(f"{TASK_TITLE}: {label} ({percent}%)")
            slicer.app.processEvents()
        elif event["event"] == "log" and event.get("message"):
            print(event["message"])

    def planRoute(self, segmentationNode, targetPoint, scopeDiameterMm=None, referenceVolumeNode=None):
        """Route to ``targetPoint`` (fiducial node or RAS) in the segmentation's airway; keeps the centerlines."""
        return self.routePlanner.plan_route(slicer.mrmlScene, segmentationNode, targetPoint, scopeDiameterMm,
                                            referenceVolumeNode)

    def updateFromSegmentation(self, segmentationNode, targetPoint=None, scopeDiameterMm=None,
                               referenceVolumeNode=None):
        """Rebuild centerlines, branch table and (with a target) route from the edited segmentation."""
        return self.routePlanner.update_from_segmentation(slicer.mrmlScene, segmentationNode, targetPoint,
                                                          scopeDiameterMm, referenceVolumeNode)


class AirwaySegWidget(taskmodule.TaskModuleWidget):
    logicClass = AirwaySegLogic

    def setup(self):
        self._taskRunner = None
        self._choices = []
        super().setup()
        self.ui.statusLabel.text = ""  # the pipeline is here: undo the base class's "not available" state
        widgets.setWidgetsEnabled([self.ui.applyButton], True,
                                  toolTip="Run the segmentation in the background (click again to cancel).")
        self.ui.modelSelector.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.modelInstallButton.connect("clicked(bool)", self.onInstallModel)
        self.ui.modelImportButton.connect("clicked(bool)", self.onImportModel)
        self.ui.show3DButton.connect("toggled(bool)", self.onShow3D)
        self.ui.planRouteButton.connect("clicked(bool)", self.onPlanRoute)
        self.ui.updateFromSegmentationButton.connect("clicked(bool)", self.onUpdateFromSegmentation)
        self.refreshModelChoices()
        self._updateButtons()

    def cleanup(self):
        if self._taskRunner is not None and self._taskRunner.running:
            self._taskRunner.cancel()
        super().cleanup()

    # -- parameter node ---------------------------------------------------------------------------
    def setParameterNode(self, parameterNode):
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        super().setParameterNode(parameterNode)
        if self._parameterNode is not None:
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self._updateButtons()

    def _updateButtons(self, caller=None, event=None):
        if not hasattr(self, "ui"):
            return
        node = self._parameterNode
        busy = self._taskRunner is not None and self._taskRunner.running
        segmentation = node.outputSegmentation if node is not None else None
        hasSegments = segmentation is not None and segmentation.GetSegmentation().GetNumberOfSegments() > 0
        self.ui.applyButton.enabled = busy or (node is not None and node.inputVolume is not None)
        self.ui.updateFromSegmentationButton.enabled = hasSegments and not busy
        self.ui.planRouteButton.enabled = (hasSegments and not busy and node is not None
                                           and _placedTarget(node.targetPoint) is not None)
        self.ui.show3DButton.enabled = segmentation is not None

    # -- model choices ----------------------------------------------------------------------------
    def refreshModelChoices(self, selectKey=None):
        current = self.currentChoice()
        selectKey = selectKey or (current.key if current is not None else "auto")
        try:
            self._choices = models.engine_choices()
        except ImportError:  # PyTorch (and with it the model registry) comes with the first run
            self._choices = models.basic_choices(
                "PyTorch is not installed yet: the first run offers to install it, then the models are listed.")
        except Exception as error:  # a broken card in the cache must not take the panel down
            self._choices = models.basic_choices(f"Model list unavailable ({error}).")
        wasBlocked = self.ui.modelSelector.blockSignals(True)
        try:
            self.ui.modelSelector.clear()
            for choice in self._choices:
                self.ui.modelSelector.addItem(choice.label)
            keys = [c.key for c in self._choices]
            self.ui.modelSelector.currentIndex = keys.index(selectKey) if selectKey in keys else 0
        finally:
            self.ui.modelSelector.blockSignals(wasBlocked)
        self.onModelChanged(self.ui.modelSelector.currentIndex)

    def currentChoice(self):
        index = self.ui.modelSelector.currentIndex
        return self._choices[index] if 0 <= index < len(self._choices) else None

    def onModelChanged(self, index):
        choice = self.currentChoice()
        self.ui.modelInfoLabel.text = choice.summary if choice is not None else ""
        installable = choice is not None and choice.model_id is not None and not choice.installed
        busy = self._taskRunner is not None and self._taskRunner.running
        self.ui.modelInstallButton.enabled = installable or (busy and self._taskRunner.applyButton is
                                                            self.ui.modelInstallButton)

    def onInstallModel(self):
        if self._cancelIfRunning(self.ui.modelInstallButton):
            return
        choice = self.currentChoice()
        if choice is None or choice.model_id is None:
            return
        if not slicer.util.confirmOkCancelDisplay(
                f"Download the weights of {choice.model_id}?\n\n{choice.summary}", windowTitle="Install model"):
            return
        with slicer.util.tryWithErrorDisplay("Model installation failed.", waitCursor=True):
            dependencies.ensureDependencies()
            self._taskRunner = taskrunner.SlicerTaskRunner(
                self.ui.modelInstallButton, self.ui.progressBar, self.ui.statusLabel,
                onFinished=lambda success: self._afterInstall(choice.key))
            self._taskRunner.run(models.install_arguments(choice.model_id))
            self._updateButtons()

    def _afterInstall(self, key):
        self.refreshModelChoices(selectKey=key)
        self._updateButtons()

    def onImportModel(self):
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), "Import airway model weights", "",
            "Model weights (*.pth *.pt *.safetensors *.zip);;All files (*)")
        if not path:
            return
        with slicer.util.tryWithErrorDisplay("Model import failed.", waitCursor=True):
            dependencies.ensureDependencies()
            card = models.import_model_file(path)
            self.refreshModelChoices(selectKey=f"model:{card.id}")
            self.ui.statusLabel.text = f"Imported {card.id} {card.version}."

    # -- run --------------------------------------------------------------------------------------
    def _cancelIfRunning(self, button):
        """True when a task is running: cancel it if ``button`` started it, else say to wait."""
        if self._taskRunner is None or not self._taskRunner.running:
            return False
        if self._taskRunner.applyButton is button:
            self._taskRunner.cancel()
        else:
            slicer.util.warningDisplay("Another task is running; wait for it or cancel it first.")
        return True

    def onApplyButton(self):
        if self._cancelIfRunning(self.ui.applyButton):
            return
        with slicer.util.tryWithErrorDisplay(f"{TASK_TITLE} could not start.", waitCursor=True):
            node = self._parameterNode
            output = node.outputSegmentation
            overwrite = False
            if output is not None and output.GetSegmentation().GetNumberOfSegments():
                if not slicer.util.confirmYesNoDisplay(
                        f"'{output.GetName()}' already holds {output.GetSegmentation().GetNumberOfSegments()} "
                        "segment(s). Replace them (and the centerlines and route derived from them)?",
                        windowTitle=TASK_TITLE):
                    return
                overwrite = True
            dependencies.ensureDependencies()
            choice = self.currentChoice() or models.basic_choices()[0]
            self._taskRunner = self.logic.process(
                node.inputVolume, engine=choice.engine, modelId=choice.model_id, device=node.device,
                targetPoint=_placedTarget(node.targetPoint), scopeDiameterMm=node.scopeDiameter,
                outputSegmentationNode=output, overwrite=overwrite, waitForCompletion=False,
                showClosedSurface=self.ui.show3DButton.checked, applyButton=self.ui.applyButton,
                progressBar=self.ui.progressBar, statusLabel=self.ui.statusLabel, onFinished=self.onRunFinished)
            self._updateButtons()

    def onRunFinished(self, nodes):
        self._updateButtons()
        if nodes is None:
            return
        self._parameterNode.outputSegmentation = nodes["segmentation"]
        self._showResults(nodes)
        route = nodes.get("metrics", {}).get("route")
        if route:
            self.ui.statusLabel.text += " " + self._routeText(route)
        self.ui.statusLabel.text += self._warningText(nodes.get("metrics", {}))

    def _showResults(self, nodes):
        table = nodes.get("branchTable")
        if table is not None:
            self.ui.branchTableView.setMRMLTableNode(table)
            self.ui.branchesCollapsibleButton.collapsed = False
            selection = slicer.app.applicationLogic().GetSelectionNode()
            selection.SetActiveTableID(table.GetID())
            slicer.app.applicationLogic().PropagateTableSelection()
        if nodes.get("segmentation") is not None and self.ui.show3DButton.checked:
            outputs.show_3d(nodes["segmentation"], True)
        self._updateButtons()

    @staticmethod
    def _warningText(metrics):
        """What the run kept but could not do (e.g. a tree withheld at a cut carina), so the user sees why."""
        return "".join(f" Warning: {text}" for text in metrics.get("warnings", []))

    @staticmethod
    def _routeText(route):
        end = route["branch_sequence"][-1] if route.get("branch_sequence") else "the last branch"
        text = (f"Route: {route['path_length_mm']:.0f} mm to {end} "
                f"(generation {route['end_branch']['generation']}), {route['remaining_mm']:.0f} mm short of the "
                f"target; narrowest lumen {route['narrowest_diameter_mm']:.1f} mm.")
        stop = route.get("scope_stop")
        if stop:
            text += f" The scope stops at {stop['distance_mm']:.0f} mm (lumen {stop['lumen_diameter_mm']:.1f} mm)."
        return text

    # -- outputs ----------------------------------------------------------------------------------
    def onShow3D(self, checked):
        segmentation = self._parameterNode.outputSegmentation if self._parameterNode is not None else None
        if segmentation is None:
            return
        with slicer.util.tryWithErrorDisplay("Could not show the segmentation in 3D.", waitCursor=True):
            outputs.show_3d(segmentation, checked)

    def onPlanRoute(self):
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Route planning failed.", waitCursor=True):
            nodes = self.logic.planRoute(node.outputSegmentation, _placedTarget(node.targetPoint),
                                         node.scopeDiameter, node.inputVolume)
            self.ui.statusLabel.text = self._routeText(nodes["metrics"]["route"])

    def onUpdateFromSegmentation(self):
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Update from segmentation failed.", waitCursor=True):
            nodes = self.logic.updateFromSegmentation(node.outputSegmentation, _placedTarget(node.targetPoint),
                                                      node.scopeDiameter, node.inputVolume)
            self._showResults(nodes)
            tree = nodes["metrics"].get("tree", {})
            text = f"Tree rebuilt: {tree.get('branches', len(nodes['centerlines']))} branches."
            if nodes["metrics"].get("route"):
                text += " " + self._routeText(nodes["metrics"]["route"])
            self.ui.statusLabel.text = text + self._warningText(nodes["metrics"])


class AirwaySegTest(taskmodule.TaskModuleTest):
    """End to end inside Slicer on a synthetic chest CT (``clinseg.phantoms``): background run, cancel,
    overwrite protection, route planning and update from the segmentation."""

    logicClass = AirwaySegLogic

    def runTest(self):
        self.setUp()
        self.test_LogicOnSyntheticInput()
        self.setUp()
        self.test_CancelKillsTheRun()

    def makePhantom(self):
        from clinseg.phantoms import generate_chest

        self.delayDisplay("Generating a synthetic chest CT")
        phantom = generate_chest(seed=11, preset="small", with_vessels=False, n_nodules=1, n_distractors=0)
        volume = mrml.volume_node_from_volume(slicer.mrmlScene, phantom.ct, name="AirwaySegTestCT")
        target = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "AirwaySegTestTarget")
        x, y, z = phantom.nodules[0].center_lps
        target.AddControlPointWorld(-x, -y, z)  # LPS -> RAS
        return phantom, volume, target

    def waitFor(self, taskRunner, finished, timeout=300.0):
        deadline = time.time() + timeout
        while not finished and time.time() < deadline:
            slicer.app.processEvents()
            time.sleep(0.05)
        if not finished:
            taskRunner.cancel()
            self.fail(f"no end after {timeout} s")

    def test_LogicOnSyntheticInput(self):
        phantom, volume, target = self.makePhantom()
        logic = self.logicClass()

        self.delayDisplay("Running the pipeline in the background")
        finished = []
        taskRunner = logic.process(volume, engine="classical", device="CPU", targetPoint=target, scopeDiameterMm=2.0,
                                   waitForCompletion=False, onFinished=finished.append)
        self.waitFor(taskRunner, finished)
        nodes = finished[0]
        self.assertIsNotNone(nodes, "the run failed; see the Python console")

        segmentation = nodes["segmentation"]
        self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 1)
        found = mrml.labelmap_from_segmentation_node(segmentation, reference=phantom.ct)[0].array > 0
        truth = phantom.lumen.array > 0
        dice = 2.0 * np.count_nonzero(found & truth) / (np.count_nonzero(found) + np.count_nonzero(truth))
        self.assertGreater(dice, 0.5)
        self.assertGreaterEqual(len(nodes["centerlines"]), 3)
        self.assertEqual(nodes["branchTable"].GetNumberOfRows(), len(nodes["centerlines"]))
        self.assertEqual(len(nodes["route"]), 1)
        radius = slicer.util.arrayFromMarkupsControlPointData(nodes["centerlines"][0], "Radius")
        self.assertTrue(radius is not None and float(np.min(radius)) > 0)

        self.delayDisplay("A filled output segmentation is refused without overwrite")
        with self.assertRaises(InputError):
            logic.process(volume, engine="classical", outputSegmentationNode=segmentation)

        self.delayDisplay("Route planning and update from the segmentation")
        planned = logic.planRoute(segmentation, target, 2.0, volume)
        self.assertEqual(len(planned["route"]), 1)
        self.assertIsNone(slicer.mrmlScene.GetNodeByID(nodes["route"][0].GetID()))  # replaced, not duplicated
        updated = logic.updateFromSegmentation(segmentation, target, 2.0, volume)
        # Same voxels, same tree code: the in-process tree matches the background run's.
        self.assertEqual(len(updated["centerlines"]), len(nodes["centerlines"]))
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLMarkupsCurveNode"),
                         len(updated["centerlines"]) + len(updated["route"]))

        self.delayDisplay("Blocking run into a new segmentation")
        again = logic.process(volume, engine="classical", device="CPU", waitForCompletion=True)
        self.assertIsNot(again["segmentation"], segmentation)
        self.assertEqual(again["route"], [])
        self.delayDisplay(f"Test passed (airway Dice {dice:.3f}, {len(nodes['centerlines'])} branches)")

    def test_CancelKillsTheRun(self):
        _phantom, volume, _target = self.makePhantom()
        logic = self.logicClass()
        finished = []
        taskRunner = logic.process(volume, engine="classical", device="CPU", waitForCompletion=False,
                                   onFinished=finished.append)
        taskRunner.cancel()
        self.waitFor(taskRunner, finished)
        self.assertIsNone(finished[0])
        self.assertTrue(taskRunner.runner.cancelled)
        self.assertIsNotNone(taskRunner.runner.returncode)  # the child is gone
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"), 0)
        self.delayDisplay("Test passed (cancel)")
