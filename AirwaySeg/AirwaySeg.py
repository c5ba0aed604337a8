"""AirwaySeg: airway tree from chest CT, branch table and bronchoscope route planning.

Built on the shared task-module base (``ClinicalSegLib.taskmodule``): this file states the task
(``AirwaySegLib.task.AIRWAY``), its extra parameters and widgets (target point, scope diameter, route and
update buttons, branch table) and its self-test; ``AirwaySegLib.routes`` plans routes in-process.
"""

import sys
from pathlib import Path
from typing import Annotated

import numpy as np

# From a source checkout (this folder added to Slicer's module paths) the shared package and the core
# sit beside the module folder rather than in qt-scripted-modules: make them importable the same way.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "ClinicalSegLib" / "ClinicalSegLib").is_dir():
    sys.path[:0] = [p for p in (str(_checkout / "ClinicalSegLib"), str(_checkout)) if p not in sys.path]

import slicer  # noqa: E402
from AirwaySegLib import routes  # noqa: E402
from AirwaySegLib.task import AIRWAY  # noqa: E402
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode  # noqa: E402
from slicer.parameterNodeWrapper import Choice, Default, WithinRange, parameterNodeWrapper  # noqa: E402
from slicer.ScriptedLoadableModule import ScriptedLoadableModule  # noqa: E402

from ClinicalSegLib import mrml, taskmodule, widgets  # noqa: E402


class AirwaySeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        taskmodule.describeModule(
            self.parent,
            title="Airway Segmentation",
            helpText="""Segments the bronchial airway tree in chest CT (a registered model, or a classical
                region-growing engine that needs no weights), then derives its centerlines (nested curves with the
                lumen radius per point), a table of branches with generation, length and diameter, and a route from
                the trachea to a target point (for example a peripheral nodule) that a bronchoscope of the given
                diameter can follow. The run happens in a background process with progress and Cancel. The
                segmentation can be edited in Segment Editor and the tree and route rebuilt from it with 'Update
                from segmentation'.""",
            acknowledgementText="""Task definition and evaluation follow the MICCAI 2022 Airway Tree Modeling
                challenge (ATM'22) and an SJTU thesis on bronchial segmentation in non-contrast lung CT (3D U-Net
                with attention distillation and feature re-learning).""",
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
    """``process(volumeNode, engine="classical", targetPoint=(x, y, z) or a fiducial node, scopeDiameterMm=4)``
    returns the segmentation, the centerline curves, the branch table, the route and its table."""

    task = AIRWAY
    parameterNodeClass = AirwaySegParameterNode

    def __init__(self, scene=None):
        super().__init__(scene)
        self.routePlanner = routes.RoutePlanner()

    def planRoute(self, segmentationNode, targetPoint, scopeDiameterMm=None, referenceVolumeNode=None):
        """Route to ``targetPoint`` (fiducial node or RAS) in the segmentation's airway; keeps the centerlines."""
        return self.routePlanner.plan_route(self.scene, segmentationNode, targetPoint, scopeDiameterMm,
                                            referenceVolumeNode)

    def updateFromSegmentation(self, segmentationNode, targetPoint=None, scopeDiameterMm=None,
                               referenceVolumeNode=None):
        """Rebuild centerlines, branch table and (with a target) route from the edited segmentation."""
        return self.routePlanner.update_from_segmentation(self.scene, segmentationNode, targetPoint,
                                                          scopeDiameterMm, referenceVolumeNode)


def routeText(route):
    """One sentence about a planned route for the status line."""
    end = route["branch_sequence"][-1] if route.get("branch_sequence") else "the last branch"
    text = (f"Route: {route['path_length_mm']:.0f} mm to {end} (generation {route['end_branch']['generation']}), "
            f"{route['remaining_mm']:.0f} mm short of the target; narrowest lumen "
            f"{route['narrowest_diameter_mm']:.1f} mm.")
    stop = route.get("scope_stop")
    if stop:
        text += f" The scope stops at {stop['distance_mm']:.0f} mm (lumen {stop['lumen_diameter_mm']:.1f} mm)."
    return text


class AirwaySegWidget(taskmodule.TaskModuleWidget):
    logicClass = AirwaySegLogic

    def setup(self):
        super().setup()
        self.ui.planRouteButton.connect("clicked(bool)", self.onPlanRoute)
        self.ui.updateFromSegmentationButton.connect("clicked(bool)", self.onUpdateFromSegmentation)

    def taskOptions(self, parameterNode):
        return {"targetPoint": _placedTarget(parameterNode.targetPoint),
                "scopeDiameterMm": parameterNode.scopeDiameter}

    def updateExtraButtons(self, parameterNode, hasSegments):
        idle = hasSegments and not self.busy
        self.ui.updateFromSegmentationButton.enabled = idle
        self.ui.planRouteButton.enabled = idle and _placedTarget(parameterNode.targetPoint) is not None

    def resultText(self, metrics):
        return routeText(metrics["route"]) if metrics.get("route") else ""

    def showResults(self, nodes):
        table = nodes.get("branchTable")
        if table is not None:
            self.ui.branchTableView.setMRMLTableNode(table)
            self.ui.branchesCollapsibleButton.collapsed = False
            selection = slicer.app.applicationLogic().GetSelectionNode()
            selection.SetActiveTableID(table.GetID())
            slicer.app.applicationLogic().PropagateTableSelection()
        super().showResults(nodes)

    def onPlanRoute(self):
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Route planning failed.", waitCursor=True):
            nodes = self.logic.planRoute(node.outputSegmentation, _placedTarget(node.targetPoint),
                                         node.scopeDiameter, node.inputVolume)
            self.ui.statusLabel.text = routeText(nodes["metrics"]["route"])

    def onUpdateFromSegmentation(self):
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Update from segmentation failed.", waitCursor=True):
            nodes = self.logic.updateFromSegmentation(node.outputSegmentation, _placedTarget(node.targetPoint),
                                                      node.scopeDiameter, node.inputVolume)
            self.showResults(nodes)
            tree = nodes["metrics"].get("tree", {})
            text = f"Tree rebuilt: {tree.get('branches', len(nodes['centerlines']))} branches."
            text += " " + self.resultText(nodes["metrics"]) if nodes["metrics"].get("route") else ""
            self.ui.statusLabel.text = text + taskmodule.warningText(nodes["metrics"])


class AirwaySegTest(taskmodule.TaskModuleTest):
    """End to end on a generated chest CT (``clinseg.phantoms``): background run with a route target, overwrite
    protection, cancel (from the base), then route planning and update from the segmentation."""

    logicClass = AirwaySegLogic
    runOptions = {"engine": "classical", "device": "CPU", "scopeDiameterMm": 2.0}

    def makeInput(self):
        from clinseg.phantoms import generate_chest

        self.delayDisplay("Generating a synthetic chest CT")
        phantom = generate_chest(seed=11, preset="small", with_vessels=False, n_nodules=1, n_distractors=0)
        volume = mrml.volume_node_from_volume(slicer.mrmlScene, phantom.ct, name="AirwaySegTestCT")
        x, y, z = phantom.nodules[0].center_lps
        self.runOptions = {**type(self).runOptions, "targetPoint": (-x, -y, z)}  # LPS -> RAS
        return volume, phantom

    def checkResult(self, nodes, phantom):
        segmentation = nodes["segmentation"]
        self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 1)
        found = mrml.labelmap_from_segmentation_node(segmentation, reference=phantom.ct)[0].array > 0
        truth = phantom.lumen.array > 0
        dice = 2.0 * np.count_nonzero(found & truth) / (np.count_nonzero(found) + np.count_nonzero(truth))
        self.assertGreater(dice, 0.5)
        self.assertGreaterEqual(len(nodes["centerlines"]), 3)
        self.assertEqual(nodes["branchTable"].GetNumberOfRows(), len(nodes["centerlines"]))
        self.assertEqual(len(nodes["route"]), 1)

        self.delayDisplay("Route planning and update from the segmentation")
        logic, target = self.logicClass(), self.runOptions["targetPoint"]
        planned = logic.planRoute(segmentation, target, 2.0)
        self.assertEqual(len(planned["route"]), 1)
        self.assertIsNone(slicer.mrmlScene.GetNodeByID(nodes["route"][0].GetID()))  # replaced, not duplicated
        updated = logic.updateFromSegmentation(segmentation, target, 2.0)
        # Same voxels, same tree code: the in-process tree matches the background run's.
        self.assertEqual(len(updated["centerlines"]), len(nodes["centerlines"]))
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLMarkupsCurveNode"),
                         len(updated["centerlines"]) + len(updated["route"]))
