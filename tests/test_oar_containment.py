"""Containing structures (spinal canal around the cord, eye around the lens): the real masks' evidence, full masks
from a one-label-per-voxel map, layered .seg.nrrd, volume table, scoring, RTSTRUCT / DICOM SEG round trip."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import nrrd
import numpy as np
import pydicom
import pytest

from clinseg.cli import main
from clinseg.containment import contained_labels, layers, paint_order, segment_mask
from clinseg.io import read_segmentation, write_segmentation
from clinseg.io.dicom_write import write_dicom_series
from clinseg.output import read_result, write_result
from clinseg.result import Result
from clinseg.tasks.oar.organs import CONTAINS, organ_table, score_organs, with_containment
from clinseg.terminology import HN_ORGANS, Segment
from clinseg.volume import Volume

BY_NAME = {s.name: s for s in with_containment(HN_ORGANS)}
CORD, CANAL, EYE, LENS = (BY_NAME[n] for n in ("Spinal cord", "Spinal canal", "Eye L", "Lens L"))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def toy_labels() -> Volume:
    """A 'canal' tube (label 4) with a 'cord' (3) inside, an 'eye' (6) with a 'lens' (8) and a 'brain' (1)."""
    k, j, i = np.mgrid[0:24, 0:40, 0:40]
    labels = np.zeros(k.shape, np.uint8)
    labels[np.hypot(i - 10, j - 10) <= 6] = CANAL.label
    labels[np.hypot(i - 10, j - 10) <= 3] = CORD.label
    labels[np.sqrt((i - 28) ** 2 + (j - 28) ** 2 + (k - 12) ** 2) <= 7] = EYE.label
    labels[np.sqrt((i - 28) ** 2 + (j - 22) ** 2 + (k - 12) ** 2) <= 2] = LENS.label
    labels[:4, 25:, :10] = 1
    return Volume(labels, (1.0, 1.0, 2.0), (-20.0, -20.0, 0.0), np.eye(3), "toy")


def toy_segments(labels: Volume) -> list[Segment]:
    return [s for s in with_containment(HN_ORGANS) if np.any(labels.array == s.label)]


def test_relation_is_data_and_full_masks_include_the_contained_organs():
    assert CONTAINS == {"Spinal canal": ("Spinal cord",), "Eye L": ("Lens L",), "Eye R": ("Lens R",)}
    assert CANAL.contains == ("Spinal cord",) and CORD.contains == ()
    volume = toy_labels()
    segments = toy_segments(volume)
    assert contained_labels(CANAL, segments) == [CORD.label] and contained_labels(CORD, segments) == []
    canal = segment_mask(volume.array, CANAL, segments)
    assert canal[volume.array == CORD.label].all() and np.count_nonzero(canal) == np.count_nonzero(
        np.isin(volume.array, [CORD.label, CANAL.label]))
    nested = [Segment(1, "a", (1, 0, 0), contains=("b",)), Segment(2, "b", (1, 0, 0), contains=("c",)),
              Segment(3, "c", (1, 0, 0), contains=("a",))]  # a cycle ends instead of looping
    assert contained_labels(nested[0], nested) == [2, 3]
    order = [segments[n].name for n in paint_order(segments)]
    assert order.index("Spinal canal") < order.index("Spinal cord") and order.index("Eye L") < order.index("Lens L")


def test_layers_keep_one_label_per_voxel_and_containers_whole():
    volume = toy_labels()
    segments = toy_segments(volume)
    spread = layers(volume.array, segments)
    assert len(spread) == 2  # canal and eye do not overlap: one extra layer holds both
    first, members = spread[0]
    assert {s.name for s in spread[1][1]} == {"Spinal canal", "Eye L"}
    assert not np.isin(first, [CANAL.label, EYE.label]).any() and {s.name for s in members} == {
        "Brain", "Spinal cord", "Lens L"}
    assert np.array_equal(spread[1][0] == CANAL.label, np.isin(volume.array, [CANAL.label, CORD.label]))


def test_layered_seg_nrrd_round_trip(tmp_path):
    volume = toy_labels()
    segments = toy_segments(volume)
    path = write_segmentation(tmp_path / "oar.seg.nrrd", volume, segments)
    data, header = nrrd.read(str(path), index_order="C")
    assert data.shape == (*volume.shape, 2) and header["kinds"][0] == "list"
    canal_field = next(k for k, v in header.items() if isinstance(v, str) and v == "Spinal canal")[:-5]
    assert header[f"{canal_field}_Layer"] == "1"
    assert "ClinicalSeg.Contains:Spinal cord|" in header[f"{canal_field}_Tags"]
    canal_layer = data[..., 1] == CANAL.label
    assert canal_layer[volume.array == CORD.label].all()  # the written canal holds the cord's voxels
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # overlaps explained by containment are no warning
        back, read = read_segmentation(path)
    assert np.array_equal(back.array, volume.array) and read == segments


def test_organ_table_volume_of_a_container_counts_what_it_holds():
    volume = toy_labels()
    rows = {r["organ"]: r for r in organ_table(volume, toy_segments(volume)).rows()}
    both = int(np.isin(volume.array, [CANAL.label, CORD.label]).sum())
    assert rows["Spinal canal"]["voxels"] == both and rows["Spinal cord"]["voxels"] == int(
        (volume.array == CORD.label).sum())
    assert rows["Spinal canal"]["volume_ml"] == pytest.approx(both * 2.0 / 1000.0)


def test_scoring_compares_full_containers():
    """A perfect prediction scores 1; one that misses the cord (canal everywhere) keeps the canal at Dice 1, as a
    clinical reviewer would see it, and loses the cord; the former ring-vs-ring score would have dropped the canal."""
    truth = toy_labels()
    segments = toy_segments(truth)
    perfect = {r["organ"]: r["dice"] for r in score_organs(truth, segments, truth).rows()}
    assert all(v == pytest.approx(1.0) for v in perfect.values())
    no_cord = truth.with_array(np.where(truth.array == CORD.label, CANAL.label, truth.array).astype(np.uint8))
    dice = {r["organ"]: r["dice"] for r in score_organs(no_cord, toy_segments(no_cord), truth).rows()}
    assert dice["Spinal canal"] == pytest.approx(1.0) and dice["Spinal cord"] == 0.0
    ring = _dice(no_cord.array == CANAL.label, truth.array == CANAL.label)
    assert ring < 0.9  # what the exclusive-label comparison gave
    assert dice["mean"] == pytest.approx(np.mean([v for k, v in dice.items() if k != "mean"]))


def test_oar_result_written_and_read_back(tmp_path):
    volume = toy_labels()
    segments = toy_segments(volume)
    write_result(Result("oar", volume, segments, tables=[organ_table(volume, segments)]), tmp_path / "out")
    back = read_result(tmp_path / "out")
    assert np.array_equal(back.labelmap.array, volume.array)
    assert {s.name: s.contains for s in back.segments}["Eye L"] == ("Lens L",)


@pytest.fixture(scope="module")
def dicom_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("rt_contain")
    volume = toy_labels()
    ct = volume.with_array(np.where(volume.array > 0, 40, -1000).astype(np.int16), "ct")
    write_dicom_series(ct, root / "CT")
    seg = write_segmentation(root / "oar.seg.nrrd", volume, toy_segments(volume))
    return root, volume, seg


def test_rtstruct_round_trip_keeps_containers_whole(dicom_case, capsys):
    root, volume, seg = dicom_case
    assert main(["rt", "export", str(seg), "--ct", str(root / "CT"), "-o", str(root / "rs.dcm")]) == 0
    ds = pydicom.dcmread(root / "rs.dcm")
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    types = {names[int(o.ReferencedROINumber)]: o.RTROIInterpretedType for o in ds.RTROIObservationsSequence}
    assert types == {"Brain": "ORGAN", "Spinal cord": "ORGAN", "Spinal canal": "ORGAN", "Eye L": "ORGAN",
                     "Lens L": "ORGAN"}
    back_file = root / "back.seg.nrrd"
    assert main(["rt", "import", str(root / "rs.dcm"), "--ct", str(root / "CT"), "-o", str(back_file)]) == 0
    back, segments = read_segmentation(back_file)
    by_name = {s.name: s for s in segments}
    assert by_name["Spinal canal"].contains == ("Spinal cord",) and by_name["Eye L"].contains == ("Lens L",)
    for s in toy_segments(volume):
        full = segment_mask(volume.array, s, toy_segments(volume))
        assert _dice(segment_mask(back.array, by_name[s.name], segments), full) >= 0.98, s.name
        assert _dice(back.array == by_name[s.name].label, volume.array == s.label) >= 0.98, s.name
    capsys.readouterr()


def test_dicom_seg_export_has_the_full_canal(dicom_case):
    pytest.importorskip("highdicom")
    root, volume, seg = dicom_case
    assert main(["rt", "export", str(seg), "--ct", str(root / "CT"), "-o", str(root / "seg.dcm"),
                 "--format", "seg"]) == 0
    ds = pydicom.dcmread(root / "seg.dcm")
    labels = [str(s.SegmentLabel) for s in ds.SegmentSequence]
    frames = ds.pixel_array  # (frames, rows, columns), frames per segment in slice order
    per_segment = {}
    for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        per_segment.setdefault(labels[number - 1], []).append(frames[index])
    canal_voxels = sum(int(f.sum()) for f in per_segment["Spinal canal"])
    assert canal_voxels == int(np.isin(volume.array, [CANAL.label, CORD.label]).sum())


def test_real_masks_contain_as_declared(shared):
    """Two scans of each split, both annotators: the declared pairs hold completely; the survey runs."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from hn_containment import survey

    from clinseg.datasets.hn_oar import read_hn_oar

    root = shared / "data" / "hn_oar_masks"
    cases = read_hn_oar(root, ("test",))[:1] + read_hn_oar(root, ("validation",))[:1]
    fractions, both = survey(cases)
    for outer, inners in CONTAINS.items():
        for inner in inners:
            assert both[(inner, outer)] == 4 and min(fractions[(inner, outer)]) >= 0.99, (inner, outer)
    assert max(fractions[("Spinal canal", "Spinal cord")]) < 0.5  # the relation is one-way


def test_eval_seg_qa_table_compares_full_containers(tmp_path, capsys):
    """``clinseg eval seg`` against a manual segmentation: the canal is compared at its full extent when a file
    says it contains the cord (a prediction that labels the cord as canal keeps canal Dice 1)."""
    import json

    truth = toy_labels()
    no_cord = truth.with_array(np.where(truth.array == CORD.label, CANAL.label, truth.array).astype(np.uint8))
    gt = write_segmentation(tmp_path / "manual.seg.nrrd", truth, toy_segments(truth))
    pred = write_segmentation(tmp_path / "pred.seg.nrrd", no_cord, toy_segments(no_cord))
    assert main(["eval", "seg", str(pred), str(gt), "--json"]) == 0
    dice = {r["organ"]: r["dice"] for r in json.loads(capsys.readouterr().out)}
    assert dice["Spinal canal"] == pytest.approx(1.0) and dice["Spinal cord"] == 0.0 and dice["Lens L"] == 1.0
