"""Stroke dataset layouts (ATLAS, ISLES 2015, ISLES 2022): writer/reader round trips and the real ISLES 2022 case."""

from __future__ import annotations

import numpy as np
import pytest

from clinseg.datasets.stroke import (
    list_atlas,
    list_isles2015,
    list_isles2022,
    list_stroke_cases,
    write_atlas_case,
    write_isles2015_case,
    write_isles2022_case,
)
from clinseg.errors import InputError
from clinseg.phantoms.brain import generate_brain
from clinseg.preprocess import resample, resample_to


@pytest.fixture(scope="module")
def phantom():
    return generate_brain(2, (4.0, 4.0, 4.0), "small", lesion="mca")


def _same(a, b):
    assert a.same_grid(b)
    assert np.allclose(a.array, b.array, atol=1e-3)


def test_atlas_v2_round_trip(tmp_path, phantom):
    write_atlas_case(tmp_path, "sub-r001s002", phantom.images["T1"], phantom.lesion, site="R001")
    write_atlas_case(tmp_path, "sub-r001s001", phantom.images["T1"], phantom.lesion, site="R001")
    cases = list_atlas(tmp_path)
    assert [c.case_id for c in cases] == ["sub-r001s001_ses-1", "sub-r001s002_ses-1"]
    assert (tmp_path / "R001/sub-r001s001/ses-1/anat/sub-r001s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz").is_file()
    case = cases[0].load()
    _same(case.images["T1"], phantom.images["T1"])
    assert np.array_equal(case.lesion.array, phantom.lesion.array)
    assert case.lesion_volume_ml == pytest.approx(phantom.lesion_volume_ml)
    assert list_stroke_cases(tmp_path)[0].dataset == "atlas"
    with pytest.raises(InputError, match="sub-"):
        write_atlas_case(tmp_path, "r001", phantom.images["T1"], phantom.lesion)


def test_atlas_r11_layout_unites_lesion_masks(tmp_path, phantom):
    from clinseg.io import write_volume

    folder = tmp_path / "Site2" / "031768" / "t01"
    write_volume(phantom.images["T1"], folder / "031768_t1w_deface_stx.nii.gz")
    half = phantom.lesion.array.copy()
    half[: half.shape[0] // 2] = 0
    write_volume(phantom.lesion.with_array(half), folder / "031768_LesionSmooth_stx.nii.gz")
    write_volume(phantom.lesion.with_array(phantom.lesion.array - half), folder / "031768_LesionSmooth_1_stx.nii.gz")
    [files] = list_atlas(tmp_path)
    assert files.case_id == "031768" and len(files.lesions) == 2
    assert np.array_equal(files.load().lesion.array, phantom.lesion.array)


def test_isles2015_round_trip(tmp_path, phantom):
    images = {k: phantom.images[k] for k in ("T1", "T2", "FLAIR", "DWI")}
    write_isles2015_case(tmp_path / "SISS2015_Training", 2, images, phantom.lesion)
    write_isles2015_case(tmp_path / "SISS2015_Training", 10, images, phantom.lesion)
    cases = list_isles2015(tmp_path)
    assert [c.case_id for c in cases] == ["2", "10"]
    assert any(p.name.startswith("VSD.Brain.XX.O.MR_Flair.") for p in (tmp_path / "SISS2015_Training/2").iterdir())
    case = cases[0].load()
    assert set(case.images) == {"T1", "T2", "FLAIR", "DWI"}
    for name, image in images.items():
        _same(case.images[name], image)
    assert np.array_equal(case.lesion.array, phantom.lesion.array)


def test_isles2022_round_trip(tmp_path, phantom):
    flair = resample(phantom.images["FLAIR"], (1.0, 1.0, 5.0))  # FLAIR on its own grid, as in ISLES 2022
    write_isles2022_case(tmp_path, 7, phantom.images["DWI"], phantom.images["ADC"], flair, phantom.lesion)
    assert (tmp_path / "rawdata/sub-strokecase0007/ses-0001/anat/sub-strokecase0007_ses-0001_FLAIR.nii.gz").is_file()
    assert (tmp_path / "derivatives/sub-strokecase0007/ses-0001/sub-strokecase0007_ses-0001_msk.nii.gz").is_file()
    [files] = list_isles2022(tmp_path)
    case = files.load()
    _same(case.images["DWI"], phantom.images["DWI"])
    _same(case.images["ADC"], phantom.images["ADC"])
    assert case.images["FLAIR"].spacing == pytest.approx((1.0, 1.0, 5.0))
    assert np.array_equal(case.lesion.array, phantom.lesion.array)
    with pytest.raises(InputError, match="one grid"):
        write_isles2022_case(tmp_path, 8, phantom.images["DWI"], flair, None, phantom.lesion)


def test_unknown_layout_and_empty_folder(tmp_path):
    with pytest.raises(InputError, match="layout"):
        list_stroke_cases(tmp_path, "brats")
    with pytest.raises(InputError, match="holds no"):
        list_stroke_cases(tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        list_isles2022(tmp_path / "missing")


def test_real_isles2022_case(shared):
    [files] = list_stroke_cases(shared / "data" / "isles22")
    assert files.dataset == "isles2022" and files.case_id == "sub-strokecase0009_ses-0001"
    case = files.load()
    assert set(case.images) == {"DWI", "ADC", "FLAIR"}
    mask = case.lesion.array > 0
    assert mask.sum() == 523 and case.lesion_volume_ml == pytest.approx(4.2, abs=0.05)
    assert case.images["DWI"].same_grid(case.lesion) and case.images["ADC"].same_grid(case.lesion)
    assert not case.images["FLAIR"].same_grid(case.lesion)
    dwi, adc = case.images["DWI"].array, case.images["ADC"].array
    brain = (dwi > np.percentile(dwi, 60)) & ~mask
    assert np.median(dwi[mask]) > 1.4 * np.median(dwi[brain])  # acute infarct: restricted diffusion
    assert np.median(adc[mask]) < 0.8 * np.median(adc[brain])
    flair = resample_to(case.images["FLAIR"], case.lesion).array
    assert np.median(flair[mask]) > 1.2 * np.median(flair[brain])
