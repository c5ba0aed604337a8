"""DICOM RT round trip on a head & neck phantom: CT series + label map -> RTSTRUCT (types, UIDs, closed planar
contours) -> re-imported segmentation (Dice per ROI), DICOM SEG readable by pydicom and highdicom, refusals."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from clinseg.cli import main
from clinseg.errors import InputError
from clinseg.io import read_segmentation, write_segmentation
from clinseg.io.dicom_write import write_dicom_series
from clinseg.io.rtstruct import check_roi_type, roi_type_for
from clinseg.phantoms.headneck import generate_headneck
from clinseg.terminology import Segment


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("rt")
    ph = generate_headneck(3, spacing=(2.0, 2.0, 3.0))
    written = write_dicom_series(ph.ct, root / "CT")
    labels = ph.labels.array.copy()
    segments = list(ph.organs)
    for value, name, mask, color in ((40, "CTV", ph.ctv, (1.0, 0.6, 0.0)), (41, "GTV", ph.gtv, (1.0, 0.0, 0.0))):
        labels[mask.array > 0] = value
        segments.append(Segment(value, name, color))
    segments = [s for s in segments if np.any(labels == s.label)]
    seg = write_segmentation(root / "plan.seg.nrrd", ph.ct.with_array(labels, "plan"), segments)
    return root, written, seg, labels, segments


def test_rtstruct_export_references_the_series_and_keeps_types(case, capsys):
    root, written, seg, _, segments = case
    out = root / "rs.dcm"
    assert main(["rt", "export", str(seg), "--ct", str(root / "CT"), "-o", str(out),
                 "--type", "Spinal cord=avoidance"]) == 0
    ds = pydicom.dcmread(out)
    assert ds.Modality == "RTSTRUCT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    assert ds.StudyInstanceUID == written.study_uid and ds.SeriesInstanceUID != written.series_uid
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == written.frame_uid
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == written.series_uid
    assert [c.ReferencedSOPInstanceUID for c in series.ContourImageSequence] == written.instance_uids
    assert all(r.ReferencedFrameOfReferenceUID == written.frame_uid for r in ds.StructureSetROISequence)
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    types = {names[int(o.ReferencedROINumber)]: o.RTROIInterpretedType for o in ds.RTROIObservationsSequence}
    assert types["GTV"] == "GTV" and types["CTV"] == "CTV" and types["Spinal cord"] == "AVOIDANCE"
    assert types["Brainstem"] == "ORGAN" and len(types) == len(segments)
    uids = set(written.instance_uids)
    for rc in ds.ROIContourSequence:
        for c in rc.ContourSequence:
            assert c.ContourGeometricType == "CLOSED_PLANAR"
            assert c.ContourImageSequence[0].ReferencedSOPInstanceUID in uids
            assert len(c.ContourData) == 3 * c.NumberOfContourPoints
    assert "Spinal cord: AVOIDANCE" in capsys.readouterr().out


def test_rtstruct_reimports_with_dice_above_098(case):
    root, _, seg, labels, segments = case
    out, back = root / "rs2.dcm", root / "back.seg.nrrd"
    assert main(["rt", "export", str(seg), "--ct", str(root / "CT"), "-o", str(out)]) == 0
    assert main(["rt", "import", str(out), "--ct", str(root / "CT"), "-o", str(back)]) == 0
    reread, reread_segments = read_segmentation(back)
    by_name = {s.name: s.label for s in reread_segments}
    assert set(by_name) == {s.name for s in segments}
    scores = {s.name: _dice(labels == s.label, reread.array == by_name[s.name]) for s in segments}
    assert min(scores.values()) >= 0.98, scores
    assert reread_segments[0].color != reread_segments[-1].color  # colours travel with the ROIs


def test_refuses_to_overwrite_unless_asked(case, capsys):
    root, _, seg, _, _ = case
    out = root / "taken.dcm"
    out.write_bytes(b"not mine to replace")
    args = ["rt", "export", str(seg), "--ct", str(root / "CT"), "-o", str(out)]
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == b"not mine to replace"
    assert main(args + ["--overwrite"]) == 0 and pydicom.dcmread(out).Modality == "RTSTRUCT"
    back = root / "taken.seg.nrrd"
    back.write_bytes(b"x")
    assert main(["rt", "import", str(out), "--ct", str(root / "CT"), "-o", str(back)]) == 2
    assert back.read_bytes() == b"x"
    assert main(args + ["--overwrite", "--type", "Brainstem=TUMOUR"]) == 2
    assert "not a DICOM term" in capsys.readouterr().err


def test_dicom_seg_readable_by_pydicom_and_highdicom(case):
    hd = pytest.importorskip("highdicom")
    root, written, seg, labels, segments = case
    out = root / "seg.dcm"
    assert main(["rt", "export", str(seg), "--ct", str(root / "CT"), "-o", str(out), "--format", "seg"]) == 0
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and ds.Modality == "SEG"
    assert ds.StudyInstanceUID == written.study_uid and ds.FrameOfReferenceUID == written.frame_uid
    obj = hd.seg.segread(out)
    assert obj.number_of_segments == len(segments)
    described = {obj.get_segment_description(n).SegmentLabel: n for n in obj.segment_numbers}
    assert set(described) == {s.name for s in segments}
    referenced = {r.ReferencedSOPInstanceUID for r in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced <= set(written.instance_uids)
    brainstem = next(s for s in segments if s.name == "Brainstem")
    pixels = obj.get_pixels_by_source_instance(written.instance_uids, segment_numbers=[described["Brainstem"]],
                                               ignore_spatial_locations=True, skip_overlap_checks=True,
                                               assert_missing_frames_are_empty=True)
    assert np.array_equal(pixels[..., 0] > 0, labels == brainstem.label)


def test_interpreted_types_from_names():
    assert [roi_type_for(n) for n in ("GTV", "ctv_high", "PTV 5mm", "Body", "External", "Parotid L")] == [
        "GTV", "CTV", "PTV", "EXTERNAL", "EXTERNAL", "ORGAN"]
    assert check_roi_type("x", "avoidance") == "AVOIDANCE"
    with pytest.raises(InputError, match="not a DICOM term"):
        check_roi_type("x", "TUMOUR")
