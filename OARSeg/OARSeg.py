"""OARSeg: head and neck organs at risk in planning CT, and the CTV grown from a drawn GTV.

Built on the shared task-module base (``ClinicalSegLib.taskmodule``): this file states the task
(``OARSegLib.task.OAR``), its extra parameters (GTV segmentation, CTV margin), the organ table and its self-test
on a generated head and neck CT.
"""

import os
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
from ClinicalSegLib.runner import SlicerTaskRunner  # noqa: E402
from OARSegLib.rtexport import RtExportJob, dicom_files_of, rt_export_available, rt_runner  # noqa: E402
from OARSegLib.task import DEFAULT_MARGIN_MM, MAX_MARGIN_MM, OAR, organ_summary  # noqa: E402
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode  # noqa: E402
from slicer.parameterNodeWrapper import Choice, Default, WithinRange, parameterNodeWrapper  # noqa: E402
from slicer.ScriptedLoadableModule import ScriptedLoadableModule  # noqa: E402

from ClinicalSegLib import mrml, taskmodule, widgets  # noqa: E402
from clinseg.errors import InputError  # noqa: E402


class OARSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        taskmodule.describeModule(
            self.parent,
            title="Organs at Risk Segmentation",
            helpText="""Contours head and neck organs at risk (brain, brainstem, spinal cord, mandible, eyes,
                lenses, optic nerves and chiasm, parotid and submandibular glands, cochleae...) in radiotherapy
                planning CT, one segment per organ with its volume in a table. Given a GTV segmentation, it also
                grows the clinical target volume by the chosen margin. The run happens in a background process
                with progress and Cancel.""",
            acknowledgementText="""Follows an XJTU thesis on head and neck CT segmentation with a two-stage 3D
                U-Net, a Tsinghua thesis on target-volume delineation with noisy labels (Pick-and-Learn, MICCAI
                2019), and the MICCAI 2015 head and neck auto-segmentation challenge.""",
        )


@parameterNodeWrapper
class OARSegParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    gtvSegmentation: vtkMRMLSegmentationNode
    marginMm: Annotated[float, WithinRange(0.0, MAX_MARGIN_MM), Default(DEFAULT_MARGIN_MM)]
    learnedCtv: Annotated[bool, Default(False)]  # without a GTV: add the learned CTV (ctv-unet-phantom)
    device: Annotated[str, Choice(list(widgets.DEVICE_CHOICES)), Default(widgets.DEFAULT_DEVICE)]
    outputSegmentation: vtkMRMLSegmentationNode


class OARSegLogic(taskmodule.TaskModuleLogic):
    """``process(ctNode, engine="classical", gtv=gtvSegmentationNode, marginMm=5.0)`` returns the segmentation (one
    segment per organ, plus the CTV when a GTV is given) and the organ table."""

    task = OAR
    parameterNodeClass = OARSegParameterNode
    rtRunnerFactory = staticmethod(rt_runner)  # `clinseg rt export` (no progress events); replaced in tests

    def createJob(self, inputVolume, *args, **options):
        gtv = options.get("gtv")
        if isinstance(gtv, vtkMRMLSegmentationNode) and gtv.GetSegmentation().GetNumberOfSegments() == 0:
            raise InputError(gtv.GetName(), "holds no segment: draw the GTV first, or select none")
        return super().createJob(inputVolume, *args, **options)

    def createRtExportJob(self, segmentationNode, ctNode, outputPath, overwrite: bool = False, dicomFiles=None):
        """The (unstarted) export of ``segmentationNode`` as an RTSTRUCT on ``ctNode``'s DICOM series; the slice
        files come from Slicer's DICOM database unless given. An existing ``outputPath`` needs ``overwrite``."""
        if dicomFiles is None:
            dicomFiles = dicom_files_of(ctNode, getattr(slicer, "dicomDatabase", None))
        return RtExportJob(segmentationNode, ctNode, outputPath, dicomFiles, overwrite,
                           runner_factory=self.rtRunnerFactory)

    def exportRtStruct(self, segmentationNode, ctNode, outputPath, overwrite: bool = False, dicomFiles=None,
                       timeout=None):
        """Write the RTSTRUCT and return its path (blocking; raises ``RunError`` with the command's reason)."""
        job = self.createRtExportJob(segmentationNode, ctNode, outputPath, overwrite, dicomFiles)
        return job.run(timeout=timeout, on_event=self.logEvent)


class OARSegWidget(taskmodule.TaskModuleWidget):
    logicClass = OARSegLogic

    def setup(self):
        super().setup()
        self.ui.exportRtStructButton.visible = rt_export_available()
        self.ui.exportRtStructButton.connect("clicked(bool)", self.onExportRtStruct)

    def updateExtraButtons(self, parameterNode, hasSegments):
        exporting = self.busy and self._taskRunner.applyButton is self.ui.exportRtStructButton
        self.ui.exportRtStructButton.enabled = exporting or (hasSegments and not self.busy)

    def onExportRtStruct(self):
        if self._cancelIfRunning(self.ui.exportRtStructButton):
            return
        import qt  # the Slicer application's; absent where the logic runs headless

        node = self._parameterNode
        segmentation = node.outputSegmentation
        # The save dialog asks before an existing file is chosen: only then is it replaced.
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), "Export RTSTRUCT",
                                              f"{segmentation.GetName()}.dcm", "DICOM files (*.dcm)")
        if not path:
            return
        with slicer.util.tryWithErrorDisplay("RTSTRUCT export failed.", waitCursor=True):
            job = self.logic.createRtExportJob(segmentation, node.inputVolume, path, overwrite=os.path.exists(path))
            self._taskRunner = SlicerTaskRunner(job, self.ui.exportRtStructButton, self.ui.progressBar,
                                                self.ui.statusLabel, onFinished=self.onExportFinished)
            self._taskRunner.start()
            self.updateButtons()

    def onExportFinished(self, success, path):
        self.updateButtons()
        if success:
            self.ui.statusLabel.text = f"RTSTRUCT written to {path}."

    def taskOptions(self, parameterNode):
        if parameterNode.gtvSegmentation is None:
            return {"learnedCtv": True} if parameterNode.learnedCtv else {}
        return {"gtv": parameterNode.gtvSegmentation, "marginMm": parameterNode.marginMm}

    def resultText(self, metrics):
        return organ_summary(metrics)

    def showResults(self, nodes):
        if nodes.get("organTable") is not None:
            self.ui.organTableView.setMRMLTableNode(nodes["organTable"])
            self.ui.organsCollapsibleButton.collapsed = False
        super().showResults(nodes)


class OARSegTest(taskmodule.TaskModuleTest):
    """End to end on a generated head and neck CT with an oropharynx tumour (``clinseg.phantoms.headneck``, small
    preset at 3 mm), its GTV drawn as a segmentation: background run, refusal of a filled output, cancel (from
    the base, without the GTV)."""

    logicClass = OARSegLogic
    runOptions = {"engine": "auto", "device": "CPU"}  # the default organ model (it must be installed)
    marginMm = 8.0
    drawGtv = True

    def makeInput(self):
        from clinseg.phantoms.headneck import generate_headneck
        from clinseg.terminology import Segment

        self.delayDisplay("Generating a synthetic head and neck CT with a tumour")
        phantom = generate_headneck(seed=4, spacing=(3.0, 3.0, 3.0), margin_mm=self.marginMm)
        ct = mrml.volume_node_from_volume(slicer.mrmlScene, phantom.ct, name="OARSegTestCT")
        self.runOptions = dict(type(self).runOptions)
        if self.drawGtv:
            gtv = mrml.segmentation_node_from_labelmap(slicer.mrmlScene, phantom.gtv, [Segment(1, "GTV", (1, 0, 0))],
                                                       name="OARSegTestGTV", reference_volume_node=ct)
            self.runOptions.update(gtv=gtv, marginMm=self.marginMm)
        return ct, phantom

    def test_CancelStopsTheRun(self):
        # The base checks that the scene holds no segmentation after the cancelled run: run it without the GTV,
        # which is a segmentation node of its own.
        self.drawGtv = False
        try:
            super().test_CancelStopsTheRun()
        finally:
            self.drawGtv = True

    def checkResult(self, nodes, phantom):
        from ClinicalSegLib.mrml_segmentation import labelmap_from_segmentation_node

        segmentation = nodes["segmentation"].GetSegmentation()
        names = [segmentation.GetNthSegment(n).GetName() for n in range(segmentation.GetNumberOfSegments())]
        labelmap, segments = labelmap_from_segmentation_node(nodes["segmentation"], reference=phantom.ct)
        found = {segment.name: labelmap.array == segment.label for segment in segments}
        for organ in ("Brain", "Mandible", "Parotid L", "Parotid R"):
            self.assertIn(organ, names)
            truth = phantom.mask(organ)
            dice = 2.0 * np.count_nonzero(found[organ] & truth) / (np.count_nonzero(found[organ]) + truth.sum())
            self.assertGreater(dice, 0.5, f"{organ} Dice {dice:.2f}")
        self.assertGreaterEqual(nodes["organTable"].GetTable().GetNumberOfRows(), 4)
        metrics = nodes["metrics"]
        if metrics.get("ctv_volume_ml") is None:  # a core without the margin tool says so rather than guess
            self.assertTrue(any("CTV skipped" in warning for warning in metrics.get("warnings", [])))
            return
        # The CTV label keeps the voxels no organ holds; its full extent is the reported volume.
        self.assertIn("CTV", names)
        gtv_ml = np.count_nonzero(phantom.gtv.array) * float(np.prod(phantom.ct.spacing)) / 1000.0
        self.assertGreater(metrics["ctv_volume_ml"], gtv_ml)  # grown from the GTV
        self.assertGreater(np.count_nonzero(found["CTV"] & (phantom.gtv.array > 0)), 0)
