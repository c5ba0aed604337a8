"""The real ISLES'22 case (../shared/data/isles22): the lesion is found on DWI + ADC (+ FLAIR on its own grid)."""

from __future__ import annotations

import json

import pytest

from clinseg.cli import main
from clinseg.io import read_segmentation, read_volume
from clinseg.metrics.lesion import case_metrics

CASE = "sub-strokecase0009_ses-0001"


@pytest.fixture(scope="module")
def isles(shared):
    folder = shared / "data" / "isles22"
    if not (folder / f"{CASE}_dwi.nii.gz").is_file():
        pytest.skip("the ISLES'22 sample case is absent")
    return folder


def test_real_case_lesion_found_from_sidecars(isles, tmp_path, capsys):
    inputs = [str(isles / f"{CASE}_{kind}.nii.gz") for kind in ("flair", "adc", "dwi")]  # any order
    out = tmp_path / "out"
    assert main(["stroke", *inputs, "-o", str(out), "--engine", "classical", "--no-preview"]) == 0
    summary = json.loads((out / "summary.json").read_text())["metrics"]
    assert summary["mode"] == "acute" and summary["engine_report"]["adc_unit"] == "1e-3 mm2/s"
    assert summary["engine_report"]["flair_registered"] is True
    labels, _ = read_segmentation(out / "stroke.seg.nrrd")
    truth = read_volume(isles / f"{CASE}_msk.nii.gz")
    assert labels.same_grid(truth)  # the DWI's native grid
    m = case_metrics(labels.array, truth.array, truth.spacing)
    # Measured: DSC 0.591, 3.72 ml against 4.18 ml (issue targets: DSC > 0.5, volume within 30 %).
    assert m["dice"] > 0.5
    assert m["pred_ml"] == pytest.approx(m["gt_ml"], rel=0.3)
