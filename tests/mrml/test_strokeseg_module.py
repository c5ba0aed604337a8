"""StrokeSeg.py loaded as Slicer loads it, on the shared base, on a headless scene.

A stand-in runner plays the ``clinseg stroke`` child: it reads the input files the job wrote, takes the second
one as the ADC map (so a wrong order shows) and writes a real output folder with ``write_result``. This file
checks the module's own part: sequence names from node names, the case's volumes and ``--sequences``, the
lesion segment and table, the status sentence, and the self-test on the generated brain. The last test runs the
real ``clinseg stroke`` child once on the same brain.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (headless MRML) is not installed")

from ClinicalSegLib.mrml import volume_node_from_volume  # noqa: E402
from scipy import ndimage  # noqa: E402
from stand_in_child import WritingChild  # noqa: E402

from clinseg.errors import InputError  # noqa: E402
from clinseg.io import read_volume  # noqa: E402
from clinseg.result import Result, Table  # noqa: E402
from clinseg.terminology import INFARCT  # noqa: E402
from clinseg.volume import Volume  # noqa: E402


def low_adc_lesions(dwi: Volume, adc: Volume) -> Result:
    """Bright-DWI, low-ADC components of 20 voxels or more: enough of a pipeline to check what reaches the child."""
    bright = dwi.array > np.percentile(dwi.array[dwi.array > 0], 90)
    mask = (adc.array > 0.1) & (adc.array < 0.6) & bright
    labels, count = ndimage.label(mask)
    sizes = ndimage.sum(mask, labels, range(1, count + 1))
    kept = [n + 1 for n in np.flatnonzero(sizes >= 20)]
    lesion = np.isin(labels, kept)
    voxel_ml = float(np.prod(dwi.spacing)) / 1000.0
    rows = {"label": [], "volume_ml": [], "mean_adc_1e-6_mm2_s": []}  # the CLI's columns (less the centre)
    for n, value in enumerate(kept, start=1):
        rows["label"].append(n)
        rows["volume_ml"].append(float(np.count_nonzero(labels == value)) * voxel_ml)
        rows["mean_adc_1e-6_mm2_s"].append(1000.0 * float(adc.array[labels == value].mean()))
    metrics = {"engine": "classical", "lesion_volume_ml": float(np.count_nonzero(lesion)) * voxel_ml,
               "lesion_count": len(kept)}
    labelmap = dataclasses.replace(dwi, array=lesion.astype(np.uint8), name="lesions")
    return Result("stroke", labelmap, [INFARCT], tables=[Table("lesions", rows)], metrics=metrics)


class LesionRunner(WritingChild):
    """Stands in for the child: reads its input files, writes the output folder; honours cancel."""

    def result(self):
        return low_adc_lesions(read_volume(self.inputs[0]), read_volume(self.inputs[1]))


@pytest.fixture
def stroke(load_module, app_scene):
    module = load_module("StrokeSeg")
    assert module.StrokeSegLogic.task.available
    module.StrokeSegLogic.runnerFactory = staticmethod(LesionRunner)
    return module


@pytest.fixture(scope="module")
def brain():
    from clinseg.phantoms.brain import generate_brain

    return generate_brain(seed=5, spacing=(2.0, 2.0, 2.0), preset="small", contrasts=("DWI", "ADC", "FLAIR"))


def test_sequence_names_are_read_from_volume_names(load_module):
    load_module("StrokeSeg")
    from StrokeSegLib.task import MODES, guess_sequences

    from clinseg.tasks.stroke import sequences as pipeline

    expected = {"DWI b1000": "dwi", "ep2d_diff_3scan_trace": "dwi", "ep2d_diff_ADC": "adc", "ADC map": "adc",
                "t2_tirm_tra_dark-fluid": "flair", "AX FLAIR": "flair", "T1w": "t1", "3D MPRAGE": "t1",
                "sub-01_ses-1_DWI": "dwi", "CT head": None, "st1x": None, "T2 TSE": None}
    assert {name: next(iter(guess_sequences([name])), None) for name in expected} == expected
    names = ["localiser", "T1w", "DWI_b1000", "DWI_ADC", "FLAIR", "DWI_b0"]
    assert guess_sequences(names) == {"t1": 1, "dwi": 2, "adc": 3, "flair": 4}  # the first of each wins
    assert set(MODES) < set(pipeline.MODES)  # the module's stages are modes the CLI takes


def test_case_inputs_and_options_name_the_volumes_in_order(load_module):
    load_module("StrokeSeg")
    from StrokeSegLib.task import case_inputs, lesion_summary, stroke_options

    dwi, adc, flair, t1 = object(), object(), object(), object()
    assert case_inputs("Acute", dwi, adc, flair) == ([dwi, adc, flair], {"sequences": ["dwi", "adc", "flair"],
                                                                          "mode": "acute"})
    assert case_inputs("chronic", t1, None, flair) == ([t1, flair], {"sequences": ["t1", "flair"], "mode": "chronic"})
    assert case_inputs("acute", None, adc)[0] == [None, adc]  # the missing primary stays visible
    with pytest.raises(InputError, match="unknown mode 'subacute'"):
        case_inputs("subacute", dwi)
    assert stroke_options({"sequences": ["dwi", "adc"], "mode": "acute"}) == ["--sequences", "dwi,adc", "--mode",
                                                                              "acute"]
    assert stroke_options({"sequences": "T1, FLAIR"}) == ["--sequences", "t1,flair"]
    assert stroke_options({}) == []
    for options, message in (({"sequences": ["dwi", "swi"]}, "unknown sequence"),
                             ({"sequences": ["dwi", "dwi"]}, "named once"), ({"mode": "late"}, "unknown mode"),
                             ({"minScore": 0.5}, "takes no option minScore")):
        with pytest.raises(InputError, match=message):
            stroke_options(options)
    assert lesion_summary({"lesion_volume_ml": 12.345, "lesion_count": 3}) == "Lesion volume 12.3 ml in 3 lesion(s)."
    assert lesion_summary({"engine": "classical"}) == ""


def test_inputs_are_preselected_from_node_names_and_kept_once_chosen(stroke, app_scene):
    def node(name):
        return volume_node_from_volume(app_scene, Volume(np.zeros((2, 3, 4), np.float32), name=name))

    localiser, t1, dwi, adc, flair = (node(n) for n in ("localiser", "T1 MPRAGE", "DWI b1000", "ADC", "FLAIR"))
    volumes = [localiser, t1, dwi, adc, flair]
    fields = dict(inputVolume=None, adcVolume=None, flairVolume=None)
    acute = SimpleNamespace(mode="Acute", **fields)
    stroke.StrokeSegLogic.preselectInputs(acute, volumes)
    assert (acute.inputVolume, acute.adcVolume, acute.flairVolume) == (dwi, adc, flair)
    chronic = SimpleNamespace(mode="Chronic", **fields)
    stroke.StrokeSegLogic.preselectInputs(chronic, volumes)
    assert chronic.inputVolume is t1
    chosen = SimpleNamespace(mode="Acute", inputVolume=localiser, adcVolume=None, flairVolume=dwi)
    stroke.StrokeSegLogic.preselectInputs(chosen, volumes)
    assert (chosen.inputVolume, chosen.adcVolume, chosen.flairVolume) == (localiser, adc, dwi)  # choices kept
    unnamed = SimpleNamespace(mode="Acute", **fields)
    stroke.StrokeSegLogic.preselectInputs(unnamed, [localiser])
    assert unnamed.inputVolume is localiser and unnamed.adcVolume is None  # any volume rather than none


def test_a_case_becomes_a_lesion_segment_and_table(stroke, app_scene, brain):
    dwi, adc, flair = (volume_node_from_volume(app_scene, brain.images[n], name=n) for n in ("DWI", "ADC", "FLAIR"))
    logic = stroke.StrokeSegLogic()
    job = logic.processCase(dwi, adc, flair, mode="acute", engine="classical", device="CPU", waitForCompletion=False)
    args = job.runner.args
    assert args[0] == "stroke" and [Path(p).name for p in job.runner.inputs] == ["input0.nrrd", "input1.nrrd",
                                                                                  "input2.nrrd"]
    assert args[-4:] == ["--sequences", "dwi,adc,flair", "--mode", "acute"]
    nodes = job.finish()
    segmentation = nodes["segmentation"]
    assert segmentation.GetName() == "DWI lesions"
    segment = segmentation.GetSegmentation().GetNthSegment(0)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1 and segment.GetName() == "Stroke lesion"
    assert "^55641003^" in segment.GetTerminology()
    table = nodes["lesionTable"].GetTable()
    assert table.GetNumberOfRows() == nodes["metrics"]["lesion_count"] >= 1
    assert nodes["metrics"]["lesion_volume_ml"] == pytest.approx(brain.lesion_volume_ml, rel=0.1)  # 66.0 ml
    assert 350 < table.GetColumnByName("mean_adc_1e-6_mm2_s").GetValue(0) < 600  # the child read the ADC as ADC
    assert stroke.lesion_summary(nodes["metrics"]).startswith("Lesion volume 6")

    with pytest.raises(InputError, match="already holds 1 segment"):
        logic.processCase(dwi, adc, outputSegmentationNode=segmentation)
    again = logic.processCase(dwi, adc, outputSegmentationNode=segmentation, overwrite=True)
    assert again["segmentation"] is segmentation and app_scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1
    with pytest.raises(InputError, match="input volume"):
        logic.processCase(None, adc)


def test_self_test_passes_headless(stroke, app_scene):
    """The module's own self-test (run, refusal, cancel) with the stand-in child."""
    test = stroke.StrokeSegTest()
    test.runTest()
    assert app_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0  # the cancelled run added none
    assert app_scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 3  # DWI, ADC, FLAIR


def test_real_child_segments_the_phantom_infarct(load_module, app_scene, brain):
    """``clinseg stroke`` itself in a child process (classical engine; about 10 s, mostly imports)."""
    module = load_module("StrokeSeg")
    from ClinicalSegLib.mrml_segmentation import labelmap_from_segmentation_node

    dwi, adc, flair = (volume_node_from_volume(app_scene, brain.images[n], name=n) for n in ("DWI", "ADC", "FLAIR"))
    nodes = module.StrokeSegLogic().processCase(dwi, adc, flair, mode="acute", engine="classical", device="CPU",
                                                timeout=120)
    found = labelmap_from_segmentation_node(nodes["segmentation"], reference=brain.lesion)[0].array > 0
    truth = brain.lesion.array > 0
    dice = 2.0 * np.count_nonzero(found & truth) / (np.count_nonzero(found) + np.count_nonzero(truth))
    assert dice > 0.85
    metrics = nodes["metrics"]
    assert metrics["mode"] == "acute" and metrics["sequences"] == ["adc", "dwi", "flair"]
    assert metrics["lesion_volume_ml"] == pytest.approx(brain.lesion_volume_ml, rel=0.15)
    table = nodes["lesionTable"].GetTable()
    assert table.GetNumberOfRows() == metrics["lesion_count"] >= 1
    assert table.GetColumnByName("volume_ml").GetValue(0) == pytest.approx(metrics["lesion_volume_ml"], rel=0.1)
    assert module.lesion_summary(metrics) == (f"Lesion volume {metrics['lesion_volume_ml']:.1f} ml in "
                                              f"{metrics['lesion_count']} lesion(s).")
