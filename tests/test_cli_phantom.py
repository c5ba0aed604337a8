"""``clinseg phantom`` in every layout, read back with the dataset readers; ``clinseg gallery``; the DICOM writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clinseg.cli import main
from clinseg.volume import Volume

CHEST = ["--seed", "3", "--shape", "56,56,44", "--spacing", "2.5,2.5,2.5", "--nodules", "3"]
HEADNECK = ["--seed", "1", "--spacing", "2,2,3", "--preset", "small"]
BRAIN = ["--seed", "2", "--preset", "small", "--spacing", "4,4,4"]


def _result_event(stdout: str) -> dict:
    """The one result event among the JSON lines a command printed."""
    events = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    [result] = [e for e in events if e["event"] == "result"]
    return result


def _run(capsys, *argv: str) -> dict:
    """Run the command with JSON lines on stdout; return its result event."""
    capsys.readouterr()
    assert main([*argv, "--progress", "jsonl"]) == 0
    return _result_event(capsys.readouterr().out)


def _same_volume(a: Volume, b: Volume) -> None:
    assert a.shape == b.shape
    assert np.allclose(a.spacing, b.spacing, atol=1e-9) and np.allclose(a.origin, b.origin, atol=1e-6)
    assert np.allclose(a.direction, b.direction, atol=1e-9)
    assert np.array_equal(a.array, b.array)


def _same_files(folder: Path, volumes: dict[str, Volume]) -> None:
    """Each ``<folder>/<name>.nii.gz`` holds exactly the volume given under that name."""
    from clinseg.io import read_volume

    for name, volume in volumes.items():
        _same_volume(read_volume(folder / f"{name}.nii.gz"), volume)


def _png_ok(path: str | Path) -> None:
    import matplotlib.image as mpimg

    path = Path(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = mpimg.imread(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and float(pixels[..., :3].std()) > 0.01


# --- chest ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chest():
    from clinseg.phantoms import generate_chest

    return generate_chest(3, spacing=(2.5, 2.5, 2.5), shape=(56, 56, 44), n_nodules=3)


def _quiet(*argv: str) -> dict:
    """``_run`` for module fixtures, which cannot use capsys."""
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main([*argv, "--progress", "jsonl"]) == 0
    return _result_event(buffer.getvalue())


@pytest.fixture(scope="module")
def chest_plain(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("chest") / "plain"
    return out, _quiet("phantom", "chest", *CHEST, "--out", str(out), "--gallery")


@pytest.fixture(scope="module")
def headneck_rt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hn") / "rt"
    _quiet("phantom", "headneck", *HEADNECK, "--out", str(out), "--layout", "rtstruct")
    return out


def test_chest_plain_with_gallery(chest_plain, chest):
    out, result = chest_plain
    assert result["layout"] == "plain" and result["info"]["n_nodules"] == len(chest.nodules)
    _same_files(out, {"ct": chest.ct, "airway": chest.airway, "lungs": chest.lungs, "vessels": chest.vessels,
                      "nodules": chest.nodule_labels})
    assert len(json.loads((out / "branches.json").read_text())["branches"]) == len(chest.branches)
    for name in ("slices", "airway_3d", "vessels_3d", "nodule"):
        _png_ok(out / "gallery" / f"phantom_3_{name}.png")
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_chest_atm22_adds_cases_and_refuses_clashes(tmp_path, capsys, chest):
    from clinseg.datasets import read_atm22
    from clinseg.io import read_volume

    out = tmp_path / "atm"
    _run(capsys, "phantom", "chest", *CHEST, "--out", str(out), "--layout", "atm22")
    [case] = read_atm22(out)
    assert case.id == "phantom_3"
    _same_volume(read_volume(case.image_path), chest.ct)
    _same_volume(read_volume(case.label_path), chest.airway)
    _same_volume(read_volume(out / "extras" / "phantom_3" / "lungs.nii.gz"), chest.lungs)
    # The same case again is refused before any work; another seed joins the dataset.
    assert main(["phantom", "chest", *CHEST, "--out", str(out), "--layout", "atm22"]) == 2
    assert "phantom_3_0000.nii.gz" in capsys.readouterr().err
    _run(capsys, "phantom", "chest", *CHEST, "--out", str(out), "--layout", "atm22", "--case-id", "second")
    assert [c.id for c in read_atm22(out)] == ["phantom_3", "second"]
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 2
    _same_volume(read_volume(read_atm22(out)[0].image_path), chest.ct)  # the first case is untouched


def test_chest_luna16_annotations_in_world_coordinates(tmp_path, capsys, chest):
    from clinseg.datasets.luna16 import Luna16, nodule_voxels, read_candidates
    from clinseg.io import read_volume

    out = tmp_path / "luna"
    result = _run(capsys, "phantom", "chest", *CHEST, "--out", str(out), "--layout", "luna16", "--subset", "2")
    uid = result["case"]
    data = Luna16(out)
    assert data.series_uids == [uid] and data.subset_of(uid) == 2
    ct = data.read_ct(uid)
    _same_volume(ct, chest.ct)
    labels = read_volume(out / "extras" / uid / "nodules.nii.gz").array
    nodules = data.nodules(uid)
    assert len(nodules) == len(chest.nodules) == 3
    for spec, annotated, ijk in zip(chest.nodules, nodules, nodule_voxels(ct, nodules)):
        centroid = np.argwhere(labels == spec.label).mean(0)[::-1]
        assert np.all(np.abs(ijk - centroid) <= 0.5), (ijk, centroid)
        assert annotated.diameter_mm == pytest.approx(spec.diameter_mm, rel=1e-6)
    candidates = read_candidates(out / "candidates.csv")
    assert sum(c.label for c in candidates) == 3 and len(candidates) == 3 + len(chest.distractors)
    # A second scan merges its rows into the root CSV files.
    _run(capsys, "phantom", "chest", *CHEST, "--out", str(out), "--layout", "luna16", "--case-id", "1.2.3")
    data = Luna16(out)
    assert sorted(data.series_uids) == sorted([uid, "1.2.3"]) and len(data.nodules(uid)) == 3
    assert len(data.nodules("1.2.3")) == 3


# --- head & neck -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def headneck():
    from clinseg.phantoms.headneck import generate_headneck

    return generate_headneck(1, (2.0, 2.0, 3.0), "small")


def test_headneck_plain(tmp_path, capsys, headneck):
    from clinseg.io import read_segmentation

    out = tmp_path / "hn"
    result = _run(capsys, "phantom", "headneck", *HEADNECK, "--out", str(out), "--gallery")
    _same_files(out, {"ct": headneck.ct, "ctv": headneck.ctv})
    labelmap, segments = read_segmentation(out / "organs.seg.nrrd")
    _same_volume(labelmap, headneck.labels)
    assert [(s.name, s.label) for s in segments] == [(s.name, s.label) for s in headneck.organs]
    assert result["info"]["gtv_ml"] == pytest.approx(headneck.gtv.array.sum() * 12 / 1000, abs=1e-3)
    _png_ok(result["files"]["gallery_slices"])
    # A non-empty plain folder is refused, then replaced with --overwrite.
    assert main(["phantom", "headneck", *HEADNECK, "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    _run(capsys, "phantom", "headneck", *HEADNECK, "--no-tumour", "--out", str(out), "--overwrite")
    assert not (out / "gtv.nii.gz").exists() and not (out / "gallery").exists()


def test_headneck_pddca(tmp_path, capsys, headneck):
    from clinseg.datasets.pddca import PDDCA_NAMES, list_pddca, read_pddca_case

    out = tmp_path / "pddca"
    _run(capsys, "phantom", "headneck", *HEADNECK, "--out", str(out), "--layout", "pddca", "--case-id", "0522c0001")
    [folder] = list_pddca(out)
    case = read_pddca_case(folder)
    _same_volume(case.image, headneck.ct)
    # One file per organ plus GTV and CTV; every organ reads back under its own name.
    assert len(list((folder / "structures").glob("*.nrrd"))) == len(headneck.organs) + 2
    assert set(PDDCA_NAMES) <= set(case.structures)
    assert set(case.structures) == {s.name for s in headneck.organs}
    for name, mask in case.structures.items():
        assert np.array_equal(mask.array > 0, headneck.mask(name)), name


def test_headneck_rtstruct_dicom_round_trip(headneck_rt, headneck):
    from clinseg.datasets.hn_oar import dice
    from clinseg.datasets.rtstruct import read_rtstruct
    from clinseg.io import list_series, read_volume

    ct_folder = headneck_rt / "phantom_1" / "CT"
    [series] = list_series(ct_folder)
    assert series.modality == "CT" and series.n_slices == headneck.ct.shape[0]
    ct = read_volume(ct_folder)
    _same_volume(ct, headneck.ct)
    structures = read_rtstruct(headneck_rt / "phantom_1" / "RTSTRUCT" / "rtstruct.dcm", ct)
    expected = {s.name: headneck.mask(s.name) for s in headneck.organs}
    expected.update(GTV=headneck.gtv.array > 0, CTV=headneck.ctv.array > 0)
    assert [s.name for s in structures] == list(expected)
    assert {s.name: s.roi_type for s in structures}["CTV"] == "CTV"
    for s in structures:
        assert dice(s.mask.array, expected[s.name]) >= 0.95, s.name


def test_headneck_from_masks_keeps_the_masks(tmp_path, capsys, headneck):
    from clinseg.io import read_segmentation, write_volume

    scan = tmp_path / "0522c0001"
    names = {"Brain": "Brain", "Brainstem": "Brainstem", "Parotid L": "Parotid-Lt", "Parotid R": "Parotid-Rt",
             "Mandible": "Mandible", "Spinal canal": "Spinal-Canal"}
    for organ, file_name in names.items():
        write_volume(headneck.labels.with_array(headneck.mask(organ).astype(np.uint8)),
                     scan / "oncologist" / f"{file_name}.nrrd")
    out = tmp_path / "from_masks"
    result = _run(capsys, "phantom", "headneck", "--from-masks", str(scan), "--seed", "4", "--out", str(out))
    assert result["info"]["gtv_ml"] is None  # no tumour by default around real masks
    labelmap, segments = read_segmentation(out / "organs.seg.nrrd")
    assert labelmap.same_grid(headneck.labels)
    by_name = {s.name: s.label for s in segments}
    assert set(by_name) == set(names)
    for organ in ("Brain", "Parotid L", "Mandible"):
        assert np.array_equal(labelmap.array == by_name[organ], headneck.mask(organ)), organ
    assert main(["phantom", "headneck", "--from-masks", str(scan), "--annotator", "nobody",
                 "--out", str(tmp_path / "x")]) == 2
    assert "annotator 'nobody'" in capsys.readouterr().err
    assert main(["phantom", "headneck", "--from-masks", str(tmp_path / "missing"), "--out", str(tmp_path / "y")]) == 2
    assert "missing: folder not found" in capsys.readouterr().err


# --- brain ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def brain():
    from clinseg.phantoms.brain import generate_brain

    return generate_brain(2, (4.0, 4.0, 4.0), "small")


def test_brain_plain(tmp_path, capsys, brain):
    from clinseg.phantoms.brain import CONTRASTS

    out = tmp_path / "brain"
    result = _run(capsys, "phantom", "brain", *BRAIN, "--out", str(out), "--gallery")
    _same_files(out, {**{name: brain.images[name] for name in CONTRASTS}, "labels": brain.labels,
                      "lesion": brain.lesion})
    assert result["info"]["lesion_volume_ml"] == pytest.approx(brain.lesion_volume_ml, abs=1e-3)
    _png_ok(result["files"]["gallery_slices"])


@pytest.mark.parametrize("layout, images, case_id", [
    ("atlas", ("T1",), "sub-r001s003_ses-1"),
    ("isles2015", ("T1", "T2", "FLAIR", "DWI"), "3"),
    ("isles2022", ("DWI", "ADC", "FLAIR"), "sub-strokecase0003_ses-0001"),
])
def test_brain_dataset_layouts(tmp_path, capsys, layout, images, case_id):
    from clinseg.datasets.stroke import list_stroke_cases
    from clinseg.phantoms.brain import generate_brain

    brain = generate_brain(2, (4.0, 4.0, 4.0), "small", contrasts=images)  # noise depends on the contrasts drawn

    out = tmp_path / layout
    result = _run(capsys, "phantom", "brain", *BRAIN, "--out", str(out), "--layout", layout)
    assert result["case"] == case_id and result["info"]["contrasts"] == list(images)
    [files] = list_stroke_cases(out, layout)
    case = files.load()
    assert case.case_id == case_id and set(case.images) == set(images)
    for name in images:
        _same_volume(case.images[name], brain.images[name])
    _same_volume(case.lesion, brain.lesion)
    # The same case number is refused; the next one joins the dataset.
    assert main(["phantom", "brain", *BRAIN, "--out", str(out), "--layout", layout]) == 2
    capsys.readouterr()
    _run(capsys, "phantom", "brain", *BRAIN, "--out", str(out), "--layout", layout, "--case", "4",
         "--lesion", "none")
    cases = [f.load() for f in list_stroke_cases(out, layout)]
    assert len(cases) == 2 and sorted(int(c.lesion.array.sum()) == 0 for c in cases) == [False, True]


def test_brain_layout_needs_its_contrasts(tmp_path, capsys):
    assert main(["phantom", "brain", *BRAIN, "--out", str(tmp_path / "b"), "--layout", "isles2022",
                 "--contrasts", "DWI,FLAIR"]) == 2
    assert "needs ADC" in capsys.readouterr().err


# --- gallery and DICOM writer -----------------------------------------------------------------------------------------
def test_gallery_of_folders_and_files(tmp_path, capsys, chest_plain, headneck):
    from clinseg.io import write_volume

    result = _run(capsys, "gallery", str(chest_plain[0]), "--out", str(tmp_path / "g1"))
    assert set(result["files"]) == {"plain_slices", "plain_airway_3d", "plain_vessels_3d"}
    for path in result["files"].values():
        _png_ok(path)
    # One image and label files on another grid (resampled for display), a named 3-D tree.
    image = write_volume(headneck.ct, tmp_path / "hn_ct.nrrd")
    coarse = Volume(headneck.mask("Parotid L")[::2].astype(np.uint8), (2.0, 2.0, 6.0), headneck.ct.origin)
    label = write_volume(coarse, tmp_path / "parotid.nii.gz")
    result = _run(capsys, "gallery", str(image), "--labels", str(label), "--tree", "parotid",
                  "--window=-160,240", "--out", str(tmp_path / "g2"))
    assert set(result["files"]) == {"hn_ct_slices", "hn_ct_parotid_3d"}
    for path in result["files"].values():
        _png_ok(path)
    assert main(["gallery", str(tmp_path / "g2"), "--out", str(tmp_path / "g3")]) == 2  # PNGs only: no layout
    assert "no recognised" in capsys.readouterr().err


def test_gallery_of_rtstruct_and_stroke_folders(tmp_path, capsys, headneck_rt):
    rt, isles = headneck_rt, tmp_path / "isles"
    _run(capsys, "phantom", "brain", *BRAIN, "--out", str(isles), "--layout", "isles2022")
    result = _run(capsys, "gallery", str(rt), "--out", str(tmp_path / "g_rt"))
    assert result["cases"] == ["phantom_1"]
    result2 = _run(capsys, "gallery", str(isles), "--out", str(tmp_path / "g_isles"))
    assert result2["cases"] == ["sub-strokecase0003_ses-0001_FLAIR"]
    for path in [*result["files"].values(), *result2["files"].values()]:
        _png_ok(path)


def test_dicom_series_writer_geometry_and_encodings(tmp_path):
    from scipy.spatial.transform import Rotation

    from clinseg.io import read_volume
    from clinseg.io.dicom_write import write_dicom_series

    rng = np.random.default_rng(0)
    hu = rng.integers(-1024, 3000, (6, 12, 10)).astype(np.int16)
    oblique = Rotation.from_euler("xyz", [10, 20, 30], degrees=True).as_matrix()
    vol = Volume(hu, (0.7, 0.8, 1.25), (-94.25, -129.5, 108.0), oblique)
    written = write_dicom_series(vol, tmp_path / "a", patient_id="P1")
    back = read_volume(tmp_path / "a")
    assert np.array_equal(back.array, hu) and np.allclose(back.direction, oblique, atol=1e-9)
    assert np.allclose(back.spacing, vol.spacing) and np.allclose(back.origin, vol.origin)
    assert len(set(written.instance_uids)) == 6 and len(written.files) == 6
    wide = rng.integers(-3000, 3000, (3, 5, 4)).astype(np.int16)  # below -1024: signed storage
    write_dicom_series(Volume(wide), tmp_path / "b")
    assert np.array_equal(read_volume(tmp_path / "b").array, wide)
    signal = rng.normal(0, 50, (3, 5, 4)).astype(np.float32)  # float: 16-bit quantisation
    write_dicom_series(Volume(signal), tmp_path / "c")
    back = read_volume(tmp_path / "c").array
    assert back.dtype == np.float32 and np.abs(back - signal).max() <= (np.ptp(signal) / 65535) * 0.51 + 1e-4
    flipped = Volume(hu, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), np.diag([1.0, 1.0, -1.0]))  # left-handed
    write_dicom_series(flipped, tmp_path / "d")
    back = read_volume(tmp_path / "d")
    assert np.array_equal(back.array, hu[::-1])
    assert np.allclose(back.index_to_physical(np.zeros(3)), flipped.index_to_physical([0, 0, 5]))
