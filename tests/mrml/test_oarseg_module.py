"""OARSeg.py loaded as Slicer loads it, on the shared base, on a headless scene.

A stand-in runner plays the ``clinseg oar`` child: it returns the phantom's organ labels and grows a CTV from the
GTV file it was given by the margin it was given, writing a real output folder with ``write_result``. This file
checks the module's own part: the GTV segmentation reaching the child as a label map on the CT's grid, the margin,
the organ segments and table, the self-test on the generated head and neck CT, and the RTSTRUCT export's inputs
(the CT's own DICOM slices, the structures on its grid) with a stand-in ``clinseg rt export``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (headless MRML) is not installed")

from ClinicalSegLib.mrml import segmentation_node_from_labelmap, volume_node_from_volume  # noqa: E402
from scipy import ndimage  # noqa: E402
from stand_in_child import WritingChild  # noqa: E402

from clinseg.errors import InputError  # noqa: E402
from clinseg.io import read_volume  # noqa: E402
from clinseg.result import Result  # noqa: E402
from clinseg.tasks.oar.organs import organ_table, with_containment  # noqa: E402
from clinseg.terminology import CTV, Segment  # noqa: E402

GTV = Segment(1, "GTV", (1.0, 0.0, 0.0))


@functools.cache
def phantom():
    """The phantom of OARSegTest.makeInput (same seed, spacing and margin)."""
    from clinseg.phantoms.headneck import generate_headneck

    return generate_headneck(seed=4, spacing=(3.0, 3.0, 3.0), margin_mm=8.0)


def organs_and_ctv(gtv_file: str | None, margin_mm: float) -> Result:
    truth = phantom()
    labels = truth.labels.array.copy()
    segments = list(truth.organs)
    metrics = {"model": "stand-in", "organs": len(segments), "ctv_volume_ml": None, "warnings": []}
    if gtv_file is not None:
        gtv = read_volume(gtv_file)
        assert gtv.shape == truth.ct.shape  # on the CT's grid
        outside = ndimage.distance_transform_edt(gtv.array == 0, sampling=gtv.spacing[::-1])
        ctv = outside <= margin_mm
        labels[ctv & (labels == 0)] = CTV.label  # as the CLI: the CTV keeps the voxels no organ holds
        segments.append(CTV)
        metrics["ctv_volume_ml"] = float(np.count_nonzero(ctv)) * float(np.prod(gtv.spacing)) / 1000.0
    labelmap = truth.labels.with_array(labels.astype(np.uint8), name="organs")
    return Result("oar", labelmap, segments, tables=[organ_table(labelmap, segments)], metrics=metrics)


class OrganRunner(WritingChild):
    """Stands in for the child: reads its --gtv file and --margin, writes the output folder; honours cancel."""

    def result(self):
        return organs_and_ctv(self.option("--gtv"), float(self.option("--margin") or 0.0))


@pytest.fixture
def oar(load_module, app_scene):
    module = load_module("OARSeg")
    assert module.OARSegLogic.task.available
    module.OARSegLogic.runnerFactory = staticmethod(OrganRunner)
    return module


def test_options_become_gtv_and_margin_arguments(load_module):
    load_module("OARSeg")
    from OARSegLib.task import DEFAULT_MARGIN_MM, OAR, oar_options, organ_summary

    from clinseg.tasks.oar import pipeline

    assert DEFAULT_MARGIN_MM == pipeline.DEFAULT_MARGIN_MM and OAR.default_model() == pipeline.DEFAULT_MODEL

    assert oar_options({}) == []
    assert oar_options({"gtv": Path("/w/gtv.nrrd"), "marginMm": 7.5}) == ["--gtv", "/w/gtv.nrrd", "--margin", "7.5"]
    assert oar_options({"gtv": "g.nrrd"}) == ["--gtv", "g.nrrd"]
    for options, message in (({"marginMm": 5.0}, "needs a GTV"), ({"gtv": "g.nrrd", "marginMm": 45}, r"\[0, 30\]"),
                             ({"gtv": 3}, "expected a segmentation node"), ({"minScore": 1}, "takes no option")):
        with pytest.raises(InputError, match=message):
            oar_options(options)
    assert organ_summary({"organs": 20, "ctv_volume_ml": 61.04}) == "20 organ(s) segmented. CTV 61.0 ml."
    assert organ_summary({"organs": 3}) == "3 organ(s) segmented." and organ_summary({}) == ""


def test_organs_and_the_ctv_from_a_drawn_gtv(oar, app_scene):
    truth = phantom()
    ct = volume_node_from_volume(app_scene, truth.ct, name="CT")
    gtv = segmentation_node_from_labelmap(app_scene, truth.gtv, [GTV], name="GTV", reference_volume_node=ct)
    logic = oar.OARSegLogic()
    job = logic.process(ct, engine="model", device="CPU", gtv=gtv, marginMm=8.0, waitForCompletion=False)
    args = job.runner.args
    assert args[0] == "oar" and args[-4:-2] == ["--gtv", str(job.work_dir / "gtv.nrrd")] and args[-2:] == [
        "--margin", "8"]
    written = read_volume(job.work_dir / "gtv.nrrd")  # the drawn GTV as the child reads it
    np.testing.assert_array_equal(written.array > 0, truth.gtv.array > 0)
    nodes = job.finish()
    segmentation = nodes["segmentation"]
    assert segmentation.GetName() == "CT organs"
    names = [segmentation.GetSegmentation().GetNthSegment(n).GetName()
             for n in range(segmentation.GetSegmentation().GetNumberOfSegments())]
    assert names == [s.name for s in truth.organs] + ["CTV"]
    brainstem = segmentation.GetSegmentation().GetNthSegment(1)
    assert "^12738006^" in segmentation.GetSegmentation().GetNthSegment(0).GetTerminology()  # brain's code kept
    np.testing.assert_allclose(brainstem.GetColor(), truth.organs[1].color, atol=1e-6)
    table = nodes["organTable"].GetTable()
    assert table.GetNumberOfRows() == len(names) and table.GetColumnByName("organ").GetValue(len(names) - 1) == "CTV"
    ctv_ml = nodes["metrics"]["ctv_volume_ml"]
    assert ctv_ml > truth.gtv.array.sum() * 27 / 1000  # grown beyond the GTV (voxels of 27 mm^3)
    assert oar.organ_summary(nodes["metrics"]) == f"{len(truth.organs)} organ(s) segmented. CTV {ctv_ml:.1f} ml."

    plain = logic.process(ct)  # no GTV: organs only, and no margin argument
    assert plain["segmentation"].GetSegmentation().GetNumberOfSegments() == len(truth.organs)
    with pytest.raises(InputError, match="already holds 21 segment"):
        logic.process(ct, outputSegmentationNode=segmentation)
    empty = app_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty GTV")
    with pytest.raises(InputError, match="holds no segment: draw the GTV first"):
        logic.process(ct, gtv=empty, marginMm=5.0)
    with pytest.raises(InputError, match="needs a GTV"):
        logic.process(ct, marginMm=5.0)
    with pytest.raises(InputError, match="unknown engine 'classical'"):  # organs need the network
        logic.process(ct, engine="classical")


def test_self_test_passes_headless(oar, app_scene):
    """The module's own self-test (run with the drawn GTV, refusal, cancel) with the stand-in child."""
    test = oar.OARSegTest()
    test.runTest()
    assert app_scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 1  # its CT
    assert app_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0  # the cancelled run added none


# -- RTSTRUCT export -------------------------------------------------------------------------------------------
class Database:
    """Slicer's DICOM database as the export uses it: the file of each SOP instance UID."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def fileForInstance(self, uid: str) -> str:  # noqa: N802 (Slicer's name)
        return str(self.files.get(uid, ""))


class ExportRunner:
    """Stands in for ``clinseg rt export``: checks what it was given and writes the output file."""

    def __init__(self, args) -> None:
        self.args, self.finished, self.returncode, self.seen = list(args), False, None, {}

    def start(self) -> None:
        from clinseg.io import read_segmentation

        ct_folder = Path(self.args[self.args.index("--ct") + 1])
        self.seen = {"slices": sorted(p.resolve() for p in ct_folder.iterdir()),
                     "segmentation": read_segmentation(self.args[2])}
        Path(self.args[self.args.index("-o") + 1]).write_bytes(b"RTSTRUCT")
        self.finished, self.returncode = True, 0

    def poll(self) -> list[dict]:
        return []

    def wait(self, timeout=None, on_event=None) -> dict:
        return {"event": "result"}


@pytest.fixture
def dicom_ct(app_scene, tmp_path):
    """The phantom CT as a DICOM series on disk and as the node Slicer's DICOM loader makes of it."""
    from clinseg.io.dicom_write import write_dicom_series

    written = write_dicom_series(phantom().ct, tmp_path / "dicom", patient_id="OARSEG")
    ct = volume_node_from_volume(app_scene, read_volume(written.folder), name="CT")
    ct.SetAttribute("DICOM.instanceUIDs", " ".join(written.instance_uids))
    return ct, written


def test_rtstruct_export_links_the_ct_series_and_writes_the_structures(oar, app_scene, dicom_ct, tmp_path):
    from OARSegLib.rtexport import dicom_files_of, rt_export_available

    from clinseg.cli import COMMAND_MODULES

    assert rt_export_available() == ("rt" in COMMAND_MODULES)
    ct, written = dicom_ct
    database = Database(dict(zip(written.instance_uids, written.files)))
    assert dicom_files_of(ct, database) == list(written.files)
    truth = phantom()
    # As a run leaves it: the canal and eyes contain the cord and lenses (full extent on a layer of their own).
    structures = segmentation_node_from_labelmap(app_scene, truth.labels, with_containment(truth.organs),
                                                 reference_volume_node=ct)
    logic = oar.OARSegLogic()
    logic.rtRunnerFactory = staticmethod(ExportRunner)
    output = tmp_path / "rs.dcm"
    job = logic.createRtExportJob(structures, ct, output, dicomFiles=dicom_files_of(ct, database))
    assert logic.exportRtStruct(structures, ct, output, dicomFiles=job.dicom_files) == output
    assert output.read_bytes() == b"RTSTRUCT"

    job = logic.createRtExportJob(structures, ct, tmp_path / "second.dcm", dicomFiles=written.files)
    job.run()
    assert job.runner.args[:2] == ["rt", "export"] and "--overwrite" not in job.runner.args
    assert job.runner.seen["slices"] == sorted(p.resolve() for p in written.files)  # exactly the CT's slices
    labelmap, segments = job.runner.seen["segmentation"]
    assert [s.name for s in segments] == [s.name for s in truth.organs]
    contains = {s.name: s.contains for s in segments}  # the export command then writes the full canal and eyes
    assert contains["Spinal canal"] == ("Spinal cord",) and contains["Eye R"] == ("Lens R",)
    np.testing.assert_array_equal(labelmap.array, truth.labels.array)  # on the CT's grid, voxel for voxel
    assert not job.work_dir.exists()  # the work folder went with the run

    with pytest.raises(InputError, match="exists; choose another file"):  # never replaced silently
        logic.createRtExportJob(structures, ct, output, dicomFiles=written.files)
    replaced = logic.createRtExportJob(structures, ct, output, overwrite=True, dicomFiles=written.files)
    replaced.run()
    assert replaced.runner.args[-1] == "--overwrite"

    empty = app_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    with pytest.raises(InputError, match="no segment to export"):
        logic.createRtExportJob(empty, ct, tmp_path / "x.dcm", dicomFiles=written.files)
    ct.RemoveAttribute("DICOM.instanceUIDs")
    with pytest.raises(InputError, match="was not loaded from DICOM"):
        dicom_files_of(ct, database)
    ct.SetAttribute("DICOM.instanceUIDs", " ".join(written.instance_uids))
    written.files[0].unlink()
    with pytest.raises(InputError, match="1 of its 57 DICOM files are not in the DICOM database"):
        dicom_files_of(ct, database)


def rt_registered() -> bool:
    from clinseg.cli import COMMAND_MODULES

    return "rt" in COMMAND_MODULES


@pytest.mark.skipif(not rt_registered(), reason="this core has no `clinseg rt` command")
def test_real_rtstruct_export_reads_back_on_the_ct(oar, app_scene, dicom_ct, tmp_path):
    """``clinseg rt export`` itself in a child process; its RTSTRUCT read back on the CT series."""
    from clinseg.io.rtstruct import read_rtstruct

    ct, written = dicom_ct
    truth = phantom()
    organs = [s for s in truth.organs if s.name in ("Brain", "Mandible", "Parotid L", "Spinal cord")]
    labels = np.where(np.isin(truth.labels.array, [s.label for s in organs]), truth.labels.array, 0)
    structures = segmentation_node_from_labelmap(app_scene, truth.labels.with_array(labels.astype(np.uint8)), organs,
                                                 reference_volume_node=ct)
    output = oar.OARSegLogic().exportRtStruct(structures, ct, tmp_path / "rs.dcm", dicomFiles=written.files,
                                              timeout=120)
    rois = {s.name: s for s in read_rtstruct(output, read_volume(written.folder))}
    assert set(rois) == {s.name for s in organs}
    for segment in organs:
        found, wanted = rois[segment.name].mask.array > 0, labels == segment.label
        dice = 2.0 * np.count_nonzero(found & wanted) / (np.count_nonzero(found) + np.count_nonzero(wanted))
        assert dice >= 0.98, (segment.name, dice)
