"""H&N dataset adapters: PDDCA layout, hn_oar masks (real, two annotators), RTSTRUCT round trips."""

from __future__ import annotations

import numpy as np
import pytest

from clinseg.datasets.hn_oar import crop_to_organs, dice, interobserver_dice, read_hn_oar
from clinseg.datasets.pddca import list_pddca, read_pddca_case, write_pddca_case
from clinseg.datasets.rtstruct import ReferenceSeries, read_rtstruct, write_rtstruct
from clinseg.errors import InputError
from clinseg.io import read_volume
from clinseg.phantoms import hn_anatomy as hn
from clinseg.phantoms.headneck import generate_headneck, generate_headneck_from_masks
from clinseg.volume import Volume


@pytest.fixture(scope="module")
def small():
    return generate_headneck(11, (2.0, 2.0, 3.0), "small", with_tumour=False)


@pytest.fixture(scope="module")
def hn_root(shared):
    root = shared / "data" / "hn_oar_masks"
    if not root.is_dir():
        pytest.skip("hn_oar_masks absent")
    return root


def test_pddca_round_trip(tmp_path, small):
    masks = {name: small.labels.with_array(small.mask(name).astype(np.uint8)) for name in
             ("Brainstem", "Parotid L", "Optic chiasm", "Submandibular R", "Eye L")}
    write_pddca_case(tmp_path / "0522c0001", small.ct, masks)
    assert (tmp_path / "0522c0001" / "structures" / "Submandible_R.nrrd").is_file()
    assert (tmp_path / "0522c0001" / "structures" / "Chiasm.nrrd").is_file()
    assert list_pddca(tmp_path) == [tmp_path / "0522c0001"]
    case = read_pddca_case(tmp_path / "0522c0001")
    assert np.array_equal(case.image.array, small.ct.array) and case.image.same_grid(small.ct)
    assert set(case.structures) == set(masks)
    for name, vol in masks.items():
        assert np.array_equal(case.structures[name].array, vol.array)
    with pytest.raises(InputError):
        read_pddca_case(tmp_path)


def test_hn_oar_reader_and_interobserver_dice(hn_root):
    cases = read_hn_oar(hn_root)
    assert len(cases) == 23 and {c.split for c in cases} == {"validation", "test"}
    case = next(c for c in cases if c.name == "0522c0014")
    assert case.annotators == ["oncologist", "radiographer"]
    assert len(case.organs("oncologist")) == 21 and "Parotid L" in case.organs("radiographer")
    organs = ["Brainstem", "Parotid L", "Parotid R", "Mandible", "Optic nerve L", "Lens R"]
    scores = interobserver_dice(case, organs)
    print("inter-observer Dice 0522c0014:", {k: round(v, 3) for k, v in scores.items()})
    assert set(scores) == set(organs)
    assert scores["Mandible"] > 0.85 and scores["Brainstem"] > 0.75 and scores["Parotid L"] > 0.7
    assert all(0.0 < v <= 1.0 for v in scores.values())
    masks = case.load("oncologist", ["Parotid L", "Parotid R"])
    left = masks["Parotid L"].index_to_physical(np.argwhere(masks["Parotid L"].array).mean(0)[::-1])
    right = masks["Parotid R"].index_to_physical(np.argwhere(masks["Parotid R"].array).mean(0)[::-1])
    assert left[0] > 0 > right[0]


def test_phantom_around_real_masks(hn_root):
    case = next(c for c in read_hn_oar(hn_root, ("validation",)) if c.name == "0522c0014")
    names = [o for o in case.organs("oncologist") if not o.startswith("Lung")]
    masks = crop_to_organs(case.load("oncologist", names), 20.0, [n for n in names if "Spinal" not in n])
    ph = generate_headneck_from_masks(masks, seed=2)
    ref = next(iter(masks.values()))
    assert ph.ct.same_grid(ref)
    for name, vol in masks.items():
        assert np.array_equal(ph.mask(name), vol.array > 0), name
    ct = ph.ct.array.astype(float)
    for name in ("Brain", "Brainstem", "Parotid L", "Parotid R", "Submandibular L", "Eye R"):
        inner = ph.mask(name) & ~hn.near(ph.mask(name), ph.ct.spacing, 3.0, inside=True)
        assert abs(ct[inner].mean() - ph.hu_targets[name]) < 8, name
    assert ct[ph.mask("Mandible")].mean() > 500
    brain = ph.mask("Brain")
    shell = hn.near(brain, ph.ct.spacing, 8.0) & ~hn.near(brain, ph.ct.spacing, 3.0)
    assert np.median(ct[shell & (ph.body.array > 0)]) > 500  # a skull around the real brain
    assert ph.air.array.sum() > 0


def _ball_organ(shape=(40, 60, 60), spacing=(1.0, 1.0, 1.0)) -> Volume:
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(float)
    r = np.sqrt(((zz - 20) * spacing[2]) ** 2 + ((yy - 30) * spacing[1]) ** 2 + ((xx - 28) * spacing[0]) ** 2)
    organ = (r <= 14) & ~(r <= 6)  # a hollow organ: holes must survive
    organ |= ((zz - 20) ** 2 / 4 + (yy - 30) ** 2 / 400 + (xx - 50) ** 2 / 9) <= 1  # a separate island
    return Volume(organ.astype(np.uint8), spacing, (-30.0, -20.0, 10.0))


def test_rtstruct_round_trip(tmp_path):
    vol = _ball_organ()
    series = ReferenceSeries.synthetic(vol)
    path = write_rtstruct(tmp_path / "rs.dcm", {"Parotid L": vol.array, "GTV": vol.array[:, ::-1, :]}, vol,
                          series, colors={"Parotid L": (0.2, 0.8, 0.4)}, roi_types={"GTV": "GTV"})
    structures = read_rtstruct(path, vol)
    assert [s.name for s in structures] == ["Parotid L", "GTV"]
    assert structures[1].roi_type == "GTV"
    assert np.allclose(structures[0].color, (0.2, 0.8, 0.4), atol=0.01)
    for s, expected in zip(structures, (vol.array, vol.array[:, ::-1, :])):
        d = dice(s.mask.array, expected)
        assert d >= 0.95, d
    assert dice(structures[0].mask.array, vol.array) > 0.99
    with pytest.raises(InputError):
        read_rtstruct(tmp_path / "missing.dcm", vol)


def test_rtstruct_on_real_ct_series(tmp_path, shared):
    folder = shared / "data" / "lidc" / "LIDC-IDRI-0001" / "dicom"
    if not folder.is_dir():
        pytest.skip("LIDC DICOM series absent")
    ct = read_volume(folder)
    series = ReferenceSeries.from_dicom(folder, ct)
    assert len(series.instance_uids) == ct.shape[0] and series.frame_uid
    mask = np.zeros(ct.shape, np.uint8)
    c = np.array(ct.shape) // 2
    kk, jj, ii = np.ogrid[: ct.shape[0], : ct.shape[1], : ct.shape[2]]
    mask[((kk - c[0]) * ct.spacing[2]) ** 2 + ((jj - c[1]) * ct.spacing[1]) ** 2
         + ((ii - c[2]) * ct.spacing[0]) ** 2 <= 15**2] = 1
    path = write_rtstruct(tmp_path / "rs.dcm", {"Nodule": mask}, ct, series)
    import pydicom

    ds = pydicom.dcmread(path)
    ref = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == series.series_uid
    assert ds.ROIContourSequence[0].ContourSequence[0].ContourImageSequence[0].ReferencedSOPInstanceUID in \
        series.instance_uids
    back = read_rtstruct(path, ct)[0].mask.array
    assert dice(back, mask) >= 0.95
