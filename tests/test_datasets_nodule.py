"""LUNA16 layout round trip and LIDC reader-XML parsing, checked against the real LIDC slabs in ../shared."""

from __future__ import annotations

import numpy as np
import pytest

from clinseg.datasets.lidc import (
    ReaderNodule,
    Roi,
    consensus_mask,
    fill_contour,
    group_nodules,
    nodule_mask,
    parse_lidc_xml,
    read_lidc_case,
)
from clinseg.datasets.luna16 import (
    Luna16,
    LunaNodule,
    nodule_sphere_mask,
    nodule_voxels,
    read_annotations,
    write_annotations,
    write_luna16_case,
)
from clinseg.errors import InputError
from clinseg.io import read_volume
from clinseg.volume import Volume

UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.100000000000000000000000000001"


def _ct() -> Volume:
    rng = np.random.default_rng(0)
    array = (rng.normal(-800, 30, (40, 64, 60))).astype(np.int16)
    return Volume(array, (0.7, 0.7, 1.25), (-120.5, -95.25, -310.0), np.eye(3))


def test_luna16_round_trip(tmp_path):
    ct = _ct()
    centre = tuple(ct.index_to_physical(np.array([30.0, 20.0, 18.0])))
    nodule = LunaNodule(UID, centre, 9.0)
    ct.array[nodule_sphere_mask(ct, [nodule])] = 40
    write_luna16_case(tmp_path, 3, UID, ct)
    write_annotations(tmp_path / "annotations.csv", [nodule, LunaNodule("other", (1.5, -2.25, 3.0), 4.2)])
    assert (tmp_path / "subset3" / f"{UID}.raw").is_file()  # uncompressed, as LUNA16 ships it

    data = Luna16(tmp_path)
    assert data.series_uids == [UID] and data.subset_of(UID) == 3
    back = data.read_ct(UID)
    assert back.same_grid(ct) and np.array_equal(back.array, ct.array)
    [read_nodule] = data.nodules(UID)
    assert np.allclose(read_nodule.centre, centre, atol=1e-6) and read_nodule.diameter_mm == 9.0
    ijk = nodule_voxels(back, [read_nodule])[0]
    assert np.allclose(ijk, [30, 20, 18], atol=1e-6)
    assert back.array[18, 20, 30] == 40 and back.array[18, 20, 5] < -500
    # The sphere holds the annotated volume (voxelised within 10 %).
    mask = nodule_sphere_mask(back, [read_nodule])
    expected = 4 / 3 * np.pi * 4.5**3
    assert mask.sum() * np.prod(back.spacing) == pytest.approx(expected, rel=0.1)


def test_luna16_bad_csv(tmp_path):
    (tmp_path / "a.csv").write_text("seriesuid,coordX,coordY\nx,1,2\n")
    with pytest.raises(InputError, match="lacks column"):
        read_annotations(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\nx,1,2,abc,4\n")
    with pytest.raises(InputError, match="line 2: coordZ"):
        read_annotations(tmp_path / "b.csv")


def test_fill_contour_includes_outline_and_hole():
    square = np.array([(2, 2), (6, 2), (6, 6), (2, 6)])  # (x, y) pixels
    mask = fill_contour(square, (10, 10))
    assert mask[2:7, 2:7].all() and mask.sum() == 25  # outline pixels belong to the nodule
    assert fill_contour(square, (10, 10), boundary=False).sum() < 25
    ct = Volume(np.zeros((3, 10, 10), np.int16), (1, 1, 2), (0, 0, -4), np.eye(3))
    hole = np.array([(3, 3), (5, 3), (5, 5), (3, 5)])
    nodule = ReaderNodule("r1", "n1", (Roi(-2.0, "", True, square), Roi(-2.0, "", False, hole)), {"malignancy": 3})
    m = nodule_mask(nodule, ct)
    assert m[1].sum() == 24 and not m[1, 4, 4] and m[1, 3, 3]  # the hole's outline stays, its inside goes
    assert not m[0].any() and not m[2].any()


@pytest.mark.parametrize(
    "case, readers, big, small, non, levels",
    [("LIDC-IDRI-0001", 4, 4, 9, 13, 4), ("LIDC-IDRI-0002", 4, 2, 26, 25, 2)],
)
def test_lidc_reader_counts_match_reference(shared, case, readers, big, small, non, levels):
    folder = shared / "data" / "lidc" / case
    lidc = read_lidc_case(folder)
    reading = lidc.reading
    assert (len(reading.readers), len(reading.nodules), len(reading.small_nodules), len(reading.non_nodules)) == (
        readers, big, small, non)
    assert all("malignancy" in n.characteristics for n in reading.nodules)
    assert all(len(r.points) == 1 for n in reading.small_nodules for r in n.rois)
    count = lidc.reader_count()
    reference = read_volume(next(folder.glob("*_slab_nodule_readers.nii.gz")))
    assert count.same_grid(reference)
    assert int(count.array.max()) == levels
    for level in range(1, levels + 1):
        a, b = count.array >= level, reference.array >= level
        dice = 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))
        assert dice >= 0.95, (level, dice)
    assert np.array_equal(consensus_mask(count, levels).array, (reference.array >= levels).astype(np.uint8))
    union = count.array > 0
    dice = 2 * np.count_nonzero(union & (reference.array > 0)) / (union.sum() + np.count_nonzero(reference.array))
    assert dice >= 0.95


def test_lidc_groups_one_nodule_seen_by_four(shared):
    reading = parse_lidc_xml(shared / "data" / "lidc" / "LIDC-IDRI-0001" / "xml" / "69.xml")
    groups = group_nodules(reading.nodules, pixel_mm=0.703125)
    assert [len(g) for g in groups] == [4]
    assert len({n.reader for n in groups[0]}) == 4


def test_lidc_bad_xml(tmp_path):
    (tmp_path / "x.xml").write_text("<root/>")
    with pytest.raises(InputError, match="not an LIDC read message"):
        parse_lidc_xml(tmp_path / "x.xml")
    (tmp_path / "y.xml").write_text("<LidcReadMessage><oops")
    with pytest.raises(InputError, match="not readable XML"):
        parse_lidc_xml(tmp_path / "y.xml")
