"""NoduleSeg: lung nodule detection, false-positive reduction and segmentation in chest CT.

Built on the shared task-module base (``ClinicalSegLib.taskmodule``): this file states the task
(``NoduleSegLib.task.NODULE``), its extra parameters and widgets (score threshold, nodule table, route to
a nodule through AirwaySeg) and its self-test.
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
from ClinicalSegLib.mrml_result import ImportRequest  # noqa: E402
from NoduleSegLib.task import (  # noqa: E402
    NODULE,
    add_nodule,
    next_label,
    nodule_nodes,
    remove_nodule,
    show_above,
    table_rows,
)
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode  # noqa: E402
from slicer.parameterNodeWrapper import Choice, Default, WithinRange, parameterNodeWrapper  # noqa: E402
from slicer.ScriptedLoadableModule import ScriptedLoadableModule  # noqa: E402

from ClinicalSegLib import mrml, taskmodule, widgets  # noqa: E402
from clinseg.errors import InputError  # noqa: E402


class NoduleSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        taskmodule.describeModule(
            self.parent,
            title="Nodule Segmentation",
            helpText="""Detects lung nodules in chest CT, removes false positives and segments each nodule,
                giving one segment, one centre point and one table row (position, long and short axis, volume,
                type, score, Lung-RADS size category for information only) per nodule. The score threshold shows
                or hides nodules; clicking a row centres the views on it; a nodule can be handed to Airway
                Segmentation as a route target. A nodule the run missed is added by a click on it (segmented and
                measured as the others), and a selected one removed. The run happens in a background process with
                progress and Cancel.""",
            acknowledgementText="""Follows a NoduleNet-style multi-task detector (Tang et al., MICCAI 2019),
                implemented from its description, with LIDC-IDRI as the reference data set.""",
        )


@parameterNodeWrapper
class NoduleSegParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    device: Annotated[str, Choice(list(widgets.DEVICE_CHOICES)), Default(widgets.DEFAULT_DEVICE)]
    outputSegmentation: vtkMRMLSegmentationNode
    # The run keeps the nodules scoring at least this; raising it afterwards hides the weaker ones (segments, points).
    minScore: Annotated[float, WithinRange(0.0, 1.0), Default(0.5)]
    airwaySegmentation: vtkMRMLSegmentationNode
    scopeDiameter: Annotated[float, WithinRange(1.0, 10.0), Default(4.0)]


def noduleSummary(metrics):
    """The run's one-line answer ("3 nodule(s) at score >= 0.5", "no nodule above threshold") for the status line."""
    return str(metrics.get("message", ""))


class NoduleSegLogic(taskmodule.TaskModuleLogic):
    """``process(volumeNode, engine="auto", minScore=0.5)`` returns the segmentation (one segment per nodule),
    the nodule table and the centre points."""

    task = NODULE
    parameterNodeClass = NoduleSegParameterNode

    def planRouteToNodule(self, centersNode, index, airwaySegmentationNode, scopeDiameterMm=None, airwayLogic=None):
        """A bronchoscopic route to nodule ``index`` through AirwaySeg's route planner (same tree, same scope
        check). The modules meet only through MRML and Slicer's module registry: no import of AirwaySeg."""
        if centersNode is None or not 0 <= index < centersNode.GetNumberOfControlPoints():
            raise InputError("nodule", "select a nodule in the table first")
        if airwaySegmentationNode is None:
            raise InputError("airway segmentation", "select one (run Airway Segmentation on this CT first)")
        airwayLogic = airwayLogic or slicer.util.getModuleLogic("AirwaySeg")
        ras = [0.0, 0.0, 0.0]
        centersNode.GetNthControlPointPositionWorld(index, ras)
        return airwayLogic.planRoute(airwaySegmentationNode, tuple(ras), scopeDiameterMm)

    def _searchSpace(self, volumeNode):
        """The CT and its nodule search region (``clinseg.tasks.nodule.interactive.search_space``), kept for the
        last volume until its voxels change: the first click on a CT pays for the lungs, the next ones do not."""
        from clinseg.tasks.nodule.interactive import search_space

        if volumeNode is None or volumeNode.GetImageData() is None:
            raise InputError("volume", "select the chest CT the nodules are on")
        key = (volumeNode.GetID(), volumeNode.GetImageData().GetMTime(), volumeNode.GetMTime())
        cached = getattr(self, "_space", None)
        if cached is None or cached[0] != key:
            self._space = (key, search_space(mrml.volume_from_volume_node(volumeNode)))
        return self._space[1]

    def addNoduleAt(self, volumeNode, pointRAS, segmentationNode=None):
        """Segment the nodule at ``pointRAS`` (a click) with the detector's own segmenter and measurements, and add
        it to the result of ``segmentationNode`` (a segment, a table row and a centre point); without a result,
        start one. Returns the result's nodes with the new nodule's ``label``. A click off a nodule, or on one
        already in the table, raises a one-line ``InputError``."""
        from clinseg.tasks.nodule.interactive import clicked_result, nodule_at

        space = self._searchSpace(volumeNode)
        ras = np.asarray(pointRAS, dtype=float).reshape(-1)
        if ras.shape != (3,):
            raise InputError("point", f"expected three RAS coordinates, got {pointRAS!r}")
        lps = np.array([-ras[0], -ras[1], ras[2]])
        nodes = nodule_nodes(segmentationNode) if segmentationNode is not None else None
        if nodes is None or nodes["noduleTable"] is None or nodes["centers"] is None:
            clicked = nodule_at(space, lps, label=1)
            request = ImportRequest(volumeNode, segmentationNode, overwrite=False)
            nodes = NODULE.import_result(self.scene, clicked_result(space.ct, clicked, 1), request)
            return {**nodes, "label": 1}
        label = next_label(nodes)
        clicked = nodule_at(space, lps, label=label)
        for row in table_rows(nodes["noduleTable"]):
            centre = np.array([row[f"center_lps_{a}_mm"] for a in "xyz"], float)
            if np.linalg.norm(centre - clicked.measurement.center_lps) < max(row["equivalent_diameter_mm"] / 2, 1.0):
                raise InputError("point", f"this nodule is already in the table as Nodule {int(row['label'])}")
        add_nodule(nodes, clicked, space.ct)
        return {**nodes, "label": label}

    def removeNodule(self, segmentationNode, label):
        """Remove nodule ``label`` (its segment, table row and centre point together); returns the result's nodes."""
        nodes = nodule_nodes(segmentationNode)
        remove_nodule(nodes, int(label))
        return nodes


class NoduleSegWidget(taskmodule.TaskModuleWidget):
    logicClass = NoduleSegLogic

    def setup(self):
        self._nodes = None
        self._clickNode = self._clickObserver = None
        super().setup()
        self.ui.noduleTableView.connect("clicked(QModelIndex)", self.onNoduleClicked)
        self.ui.planRouteButton.connect("clicked(bool)", self.onPlanRoute)
        self.ui.addNoduleButton.connect("clicked(bool)", self.onAddNodule)
        self.ui.removeNoduleButton.connect("clicked(bool)", self.onRemoveNodule)

    def cleanup(self):
        self._endClick()
        super().cleanup()

    def taskOptions(self, parameterNode):
        # The run keeps the nodules at the slider's score; raising the slider afterwards hides the weaker ones.
        return {"minScore": parameterNode.minScore}

    def updateExtraButtons(self, parameterNode, hasSegments):
        hasNodules = self._nodes is not None and self._nodes.get("centers") is not None
        self.ui.planRouteButton.enabled = hasNodules and parameterNode.airwaySegmentation is not None
        self.ui.addNoduleButton.enabled = not self.busy and parameterNode is not None \
            and parameterNode.inputVolume is not None
        self.ui.removeNoduleButton.enabled = not self.busy and hasNodules
        if hasNodules:
            show_above(self._nodes, parameterNode.minScore)

    def resultText(self, metrics):
        return noduleSummary(metrics)

    def showResults(self, nodes):
        self._nodes = nodes
        if nodes.get("noduleTable") is not None:
            self.ui.noduleTableView.setMRMLTableNode(nodes["noduleTable"])
            self.ui.nodulesCollapsibleButton.collapsed = False
        super().showResults(nodes)

    def _selectedRow(self):
        index = self.ui.noduleTableView.currentIndex()
        return index.row() if index is not None and index.isValid() else -1

    def onNoduleClicked(self, index):
        centers = self._nodes.get("centers") if self._nodes else None
        if centers is not None and 0 <= index.row() < centers.GetNumberOfControlPoints():
            slicer.modules.markups.logic().JumpSlicesToNthPointInMarkup(centers.GetID(), index.row(), True)

    # -- click to add, remove ----------------------------------------------------------------------------
    def onAddNodule(self):
        """Place one point in a slice view; the nodule under it is added when the point lands (onNoduleClick)."""
        self._endClick()
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "NoduleSeg click")
        node.CreateDefaultDisplayNodes()
        self._clickNode = node
        self._clickObserver = node.AddObserver(slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self.onNoduleClick)
        selection = slicer.app.applicationLogic().GetSelectionNode()
        selection.SetReferenceActivePlaceNodeClassName("vtkMRMLMarkupsFiducialNode")
        selection.SetActivePlaceNodeID(node.GetID())
        interaction = slicer.app.applicationLogic().GetInteractionNode()
        interaction.SetPlaceModePersistence(0)
        interaction.SetCurrentInteractionMode(interaction.Place)
        self.ui.statusLabel.text = "Click on the nodule in a slice view."

    def onNoduleClick(self, caller, event):
        import qt  # lazily: the module file loads outside Slicer (headless tests)

        ras = [0.0, 0.0, 0.0]
        caller.GetNthControlPointPositionWorld(caller.GetNumberOfControlPoints() - 1, ras)
        qt.QTimer.singleShot(0, lambda: self._addNoduleAt(ras))  # change the scene after the markups event

    def _addNoduleAt(self, ras):
        self._endClick()
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay("No nodule added.", waitCursor=True):
            segmentation = self._nodes["segmentation"] if self._nodes else node.outputSegmentation
            nodes = self.logic.addNoduleAt(node.inputVolume, ras, segmentation)
            node.outputSegmentation = nodes["segmentation"]
            self.showResults(nodes)
            self.ui.statusLabel.text = f"Nodule {nodes['label']} added."

    def _endClick(self):
        if self._clickNode is not None:
            self._clickNode.RemoveObserver(self._clickObserver)
            if self._clickNode.GetScene() is not None:
                slicer.mrmlScene.RemoveNode(self._clickNode)
        self._clickNode = self._clickObserver = None

    def onRemoveNodule(self):
        row = self._selectedRow()
        with slicer.util.tryWithErrorDisplay("Could not remove the nodule.", waitCursor=True):
            rows = table_rows(self._nodes["noduleTable"]) if self._nodes else []
            if not 0 <= row < len(rows):
                raise InputError("nodule", "select a nodule in the table first")
            label = int(rows[row]["label"])
            self.showResults(self.logic.removeNodule(self._nodes["segmentation"], label))
            self.ui.statusLabel.text = f"Nodule {label} removed."

    def onPlanRoute(self):
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Route planning failed.", waitCursor=True):
            nodes = self.logic.planRouteToNodule(self._nodes.get("centers"), self._selectedRow(),
                                                 node.airwaySegmentation, node.scopeDiameter)
            route = nodes["metrics"]["route"]
            self.ui.statusLabel.text = (f"Route: {route['path_length_mm']:.0f} mm, {route['remaining_mm']:.0f} mm "
                                        "short of the nodule (see Airway Segmentation).")


class NoduleSegTest(taskmodule.TaskModuleTest):
    """End to end on a generated chest CT with nodules (``clinseg.phantoms``): background run, refusal of a filled
    output, cancel (from the base)."""

    logicClass = NoduleSegLogic
    runOptions = {"engine": "auto", "device": "CPU"}

    def makeInput(self):
        from clinseg.phantoms import generate_chest

        self.delayDisplay("Generating a synthetic chest CT with nodules")
        # Three solid nodules of 4.0-7.1 mm (one juxta-pleural) that the default engine finds at score >= 0.5.
        phantom = generate_chest(seed=2, preset="small", with_vessels=False, n_nodules=3, n_distractors=0)
        return mrml.volume_node_from_volume(slicer.mrmlScene, phantom.ct, name="NoduleSegTestCT"), phantom

    def checkResult(self, nodes, phantom):
        centers = nodes["centers"]
        table = nodes["noduleTable"].GetTable()
        self.assertEqual(centers.GetNumberOfControlPoints(), table.GetNumberOfRows())
        self.assertEqual(nodes["segmentation"].GetSegmentation().GetNumberOfSegments(), table.GetNumberOfRows())
        found = []
        for n in range(centers.GetNumberOfControlPoints()):
            position = [0.0, 0.0, 0.0]
            centers.GetNthControlPointPositionWorld(n, position)
            found.append(np.array(position))
        for nodule in phantom.nodules:
            ras = np.array([-nodule.center_lps[0], -nodule.center_lps[1], nodule.center_lps[2]])
            self.assertTrue(any(np.linalg.norm(f - ras) < nodule.diameter_mm / 2 for f in found),
                            f"nodule of {nodule.diameter_mm:.1f} mm at {ras} not found")

        self.delayDisplay("Remove a nodule, then add it back by a click")
        logic, segmentation = self.logicClass(), nodes["segmentation"]
        rows = table_rows(nodes["noduleTable"])
        last = rows[-1]
        logic.removeNodule(segmentation, int(last["label"]))
        self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), len(rows) - 1)
        volumeNode = slicer.mrmlScene.GetFirstNodeByName("NoduleSegTestCT")
        click = (-last["center_lps_x_mm"], -last["center_lps_y_mm"], last["center_lps_z_mm"])
        added = logic.addNoduleAt(volumeNode, click, segmentation)
        self.assertEqual(centers.GetNumberOfControlPoints(), len(rows))
        self.assertAlmostEqual(table_rows(added["noduleTable"])[-1]["volume_ml"], last["volume_ml"], places=4)
