"""StrokeSeg: ischemic stroke lesions in brain MRI (acute on DWI/ADC, chronic on T1), with FLAIR where given.

Built on the shared task-module base (``ClinicalSegLib.taskmodule``): this file states the task
(``StrokeSegLib.task.STROKE``), its multi-sequence case (primary volume, optional ADC and FLAIR, lesion stage),
the lesion table and its self-test on a generated brain.
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
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode  # noqa: E402
from slicer.parameterNodeWrapper import Choice, Default, parameterNodeWrapper  # noqa: E402
from slicer.ScriptedLoadableModule import ScriptedLoadableModule  # noqa: E402
from StrokeSegLib.task import PRIMARY, STROKE, case_inputs, guess_sequences, lesion_summary  # noqa: E402

from ClinicalSegLib import mrml, taskmodule, widgets  # noqa: E402


class StrokeSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        taskmodule.describeModule(
            self.parent,
            title="Stroke Lesion Segmentation",
            helpText="""Segments ischemic stroke lesions in brain MRI: acute infarcts on DWI (with the ADC map
                where available), chronic ones on T1-weighted images, FLAIR added where given. The result is
                one lesion segment, a table with one row per lesion (volume, centre, mean ADC) and the total
                lesion volume and count. Volumes named like DWI, ADC, FLAIR or T1 are pre-selected. The run
                happens in a background process with progress and Cancel.""",
            acknowledgementText="""Follows an Anhui University thesis on stroke lesion segmentation (D-UNet,
                AGMR-Net, TSRL-Net), implemented from its description, with the ATLAS and ISLES 2022 data
                sets as references.""",
        )


@parameterNodeWrapper
class StrokeSegParameterNode:
    mode: Annotated[str, Choice(["Acute", "Chronic"]), Default("Acute")]
    inputVolume: vtkMRMLScalarVolumeNode  # DWI (acute) or T1 (chronic): the segmentation's grid
    adcVolume: vtkMRMLScalarVolumeNode
    flairVolume: vtkMRMLScalarVolumeNode
    device: Annotated[str, Choice(list(widgets.DEVICE_CHOICES)), Default(widgets.DEFAULT_DEVICE)]
    outputSegmentation: vtkMRMLSegmentationNode


class StrokeSegLogic(taskmodule.TaskModuleLogic):
    """``processCase(dwiNode, adcNode, mode="acute", engine="classical")`` returns the lesion segmentation, the
    lesion table and the summary metrics (``process`` takes the volumes as a list with ``sequences=[...]``)."""

    task = STROKE
    parameterNodeClass = StrokeSegParameterNode

    def processCase(self, primary, adc=None, flair=None, mode: str = "acute", **kwargs):
        """One case: the primary volume (DWI when acute, T1 when chronic) and the optional ADC and FLAIR."""
        volumes, options = case_inputs(mode, primary, adc, flair)
        return self.process(volumes, **options, **kwargs)

    @staticmethod
    def preselectInputs(parameterNode, volumeNodes) -> None:
        """Fill the empty selectors from the volumes' names (DWI/T1 as primary per the stage, ADC, FLAIR); the
        primary falls back to the first volume no other selector took. Selections already made are kept."""
        volumeNodes = list(volumeNodes)
        found = guess_sequences([node.GetName() for node in volumeNodes])
        for field, sequence in (("adcVolume", "adc"), ("flairVolume", "flair")):
            if getattr(parameterNode, field) is None and sequence in found:
                setattr(parameterNode, field, volumeNodes[found[sequence]])
        if parameterNode.inputVolume is None:
            primary = PRIMARY[parameterNode.mode.lower()]
            taken = {parameterNode.adcVolume, parameterNode.flairVolume}
            rest = [node for node in volumeNodes if node not in taken]
            if primary in found:
                parameterNode.inputVolume = volumeNodes[found[primary]]
            elif rest:
                parameterNode.inputVolume = rest[0]


class StrokeSegWidget(taskmodule.TaskModuleWidget):
    logicClass = StrokeSegLogic
    runsOnSeries = False  # a case is several sequences of one session, not one series

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        self.logic.preselectInputs(self._parameterNode, slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"))

    def inputVolumes(self, parameterNode):
        return case_inputs(parameterNode.mode, parameterNode.inputVolume, parameterNode.adcVolume,
                           parameterNode.flairVolume)[0]

    def taskOptions(self, parameterNode):
        return case_inputs(parameterNode.mode, parameterNode.inputVolume, parameterNode.adcVolume,
                           parameterNode.flairVolume)[1]

    def resultText(self, metrics):
        return lesion_summary(metrics)

    def showResults(self, nodes):
        if nodes.get("lesionTable") is not None:
            self.ui.lesionTableView.setMRMLTableNode(nodes["lesionTable"])
            self.ui.lesionsCollapsibleButton.collapsed = False
        super().showResults(nodes)


class StrokeSegTest(taskmodule.TaskModuleTest):
    """End to end on a generated brain with an acute MCA infarct (``clinseg.phantoms.brain``, small slab at 2 mm):
    background run on DWI + ADC + FLAIR, refusal of a filled output, cancel (from the base)."""

    logicClass = StrokeSegLogic
    runOptions = {"engine": "classical", "device": "CPU", "sequences": ["dwi", "adc", "flair"], "mode": "acute"}

    def makeInput(self):
        from clinseg.phantoms.brain import generate_brain

        self.delayDisplay("Generating a synthetic brain MRI (DWI, ADC, FLAIR) with an acute infarct")
        phantom = generate_brain(seed=5, spacing=(2.0, 2.0, 2.0), preset="small", contrasts=("DWI", "ADC", "FLAIR"))
        volumes = [mrml.volume_node_from_volume(slicer.mrmlScene, phantom.images[name], name=f"StrokeSegTest{name}")
                   for name in ("DWI", "ADC", "FLAIR")]
        return volumes, phantom

    def checkResult(self, nodes, phantom):
        from ClinicalSegLib.mrml_segmentation import labelmap_from_segmentation_node

        segmentation = nodes["segmentation"]
        self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 1)
        self.assertIn("^55641003^", segmentation.GetSegmentation().GetNthSegment(0).GetTerminology())  # infarct
        found = labelmap_from_segmentation_node(segmentation, reference=phantom.lesion)[0].array > 0
        truth = phantom.lesion.array > 0
        dice = 2.0 * np.count_nonzero(found & truth) / (np.count_nonzero(found) + np.count_nonzero(truth))
        self.assertGreater(dice, 0.5, f"lesion Dice {dice:.2f}")
        table = nodes["lesionTable"].GetTable()
        self.assertGreaterEqual(table.GetNumberOfRows(), 1)
        volume = nodes["metrics"]["lesion_volume_ml"]
        self.assertAlmostEqual(volume, phantom.lesion_volume_ml, delta=0.5 * phantom.lesion_volume_ml)
