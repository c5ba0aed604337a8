"""clinseg stroke: acute phantoms segmented, companions aligned or refused, wrong inputs refused, CLI outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clinseg.cli import main
from clinseg.errors import Cancelled, InputError
from clinseg.io import read_segmentation, write_volume
from clinseg.metrics.lesion import case_metrics
from clinseg.phantoms.brain import generate_brain
from clinseg.progress import CancelToken
from clinseg.tasks.stroke import SequenceInput, StrokeOptions, assign_sequences, run_stroke
from clinseg.tasks.stroke.classical import adc_to_micro
from clinseg.tasks.stroke.sequences import sequence_from_text, sidecar_hints
from clinseg.volume import Volume

CLASSICAL = StrokeOptions(engine="classical")


@pytest.fixture(scope="module")
def acute():
    return generate_brain(11, spacing=(2.0, 2.0, 2.0), contrasts=("DWI", "ADC"), lesion="mca")


@pytest.fixture(scope="module")
def acute_run(acute):
    return run_stroke({"dwi": acute.images["DWI"], "adc": acute.images["ADC"]}, CLASSICAL)


def test_acute_phantom_lesion_dice_and_volume(acute, acute_run):
    m = case_metrics(acute_run.labelmap.array, acute.lesion.array, acute.lesion.spacing)
    assert m["dice"] >= 0.75  # measured 0.78 on this small (7.7 ml) MCA infarct at 2 mm
    # Measured 10.3 vs 7.7 ml: the classical engine's edge follows the blurred DWI one voxel out.
    assert acute_run.metrics["lesion_volume_ml"] == pytest.approx(acute.lesion_volume_ml, rel=0.4)
    assert acute_run.metrics["mode"] == "acute" and acute_run.metrics["engine"] == "classical"
    assert acute_run.labelmap.same_grid(acute.images["DWI"])  # the DWI's native space
    assert acute_run.segments[0].type[1] == "55641003"  # SNOMED infarct


def test_lesion_table_rows_match_the_mask(acute, acute_run):
    table = acute_run.tables[0]
    assert table.name == "lesions" and table.n_rows == acute_run.metrics["lesion_count"] >= 1
    assert sum(table.columns["volume_ml"]) == pytest.approx(acute_run.metrics["lesion_volume_ml"], abs=1e-3)
    largest = table.rows()[0]
    # Restricted diffusion: the phantom's core is ~450e-6, normal tissue 720-850e-6 (measured mean 653e-6).
    assert largest["mean_adc_1e-6_mm2_s"] < 700
    # The centre lies on the phantom's lesion side (LPS +x is the patient's left).
    assert np.sign(largest["center_lps_x_mm"]) == (1 if acute.side == "left" else -1)


def test_adc_on_another_grid_is_resampled(acute, acute_run):
    adc = acute.images["ADC"]
    coarse = Volume(adc.array[:, ::2, ::2].copy(), (4.0, 4.0, 2.0), tuple(np.add(adc.origin, (1.0, 1.0, 0.0))))
    result = run_stroke({"dwi": acute.images["DWI"], "adc": coarse}, CLASSICAL)
    assert result.metrics["engine_report"]["adc_resampled"] is True
    m = case_metrics(result.labelmap.array, acute.lesion.array, acute.lesion.spacing)
    assert m["dice"] >= 0.55  # measured 0.62 from a 4 mm ADC (0.78 from the native one)


def test_adc_that_does_not_overlap_is_refused(acute):
    adc = acute.images["ADC"]
    far = Volume(adc.array, adc.spacing, tuple(np.add(adc.origin, (0.0, 0.0, 400.0))), name="adc")
    with pytest.raises(InputError, match="do not overlap"):
        run_stroke({"dwi": acute.images["DWI"], "adc": far}, CLASSICAL)


@pytest.mark.parametrize("scale", [1e3, 1.0, 1e-3])
def test_adc_units_are_recognised(acute, scale):
    adc = acute.images["ADC"].array  # phantom ADC is in 1e-3 mm2/s
    brain = adc > 0
    micro, unit = adc_to_micro(adc * scale, brain)
    assert np.allclose(micro, adc * 1e3, rtol=1e-4)
    assert unit == {1e3: "1e-6 mm2/s", 1.0: "1e-3 mm2/s", 1e-3: "mm2/s"}[scale]
    with pytest.raises(InputError, match="does not look like an ADC"):
        adc_to_micro(adc * 50.0, brain)


def test_no_lesion_gives_an_empty_valid_result():
    ph = generate_brain(12, spacing=(2.0, 2.0, 2.0), contrasts=("DWI", "ADC"), lesion=None)
    result = run_stroke({"dwi": ph.images["DWI"], "adc": ph.images["ADC"]}, CLASSICAL)
    assert result.metrics["lesion_count"] == 0 and result.metrics["lesion_volume_ml"] == 0.0
    assert result.tables[0].n_rows == 0 and "volume_ml" in result.tables[0].columns


def test_ct_is_refused():
    rng = np.random.default_rng(0)
    ct = np.full((40, 96, 96), -1000.0, np.float32)
    ct[5:35, 15:80, 15:80] = 40.0 + rng.normal(0, 10, (30, 65, 65))
    with pytest.raises(InputError, match="looks like a CT"):
        run_stroke({"dwi": Volume(ct, (2.0, 2.0, 2.0), name="head CT")}, CLASSICAL)


def test_non_brain_mri_is_refused():
    # A trunk-sized bright ellipse (a body MRI), 300 x 220 mm across: no brain fits in it.
    k, j, i = np.ogrid[:40, :128, :160]
    body = (((i - 80) / 75.0) ** 2 + ((j - 64) / 55.0) ** 2 <= 1) & (k > 2) & (k < 38)
    image = np.where(body, 300.0, 0.0).astype(np.float32) + np.random.default_rng(1).random(body.shape)
    with pytest.raises(InputError, match="does not look like a brain MRI"):
        run_stroke({"dwi": Volume(image, (2.0, 2.0, 4.0), name="abdomen")}, CLASSICAL)


def test_missing_primary_sequence_is_named():
    with pytest.raises(InputError, match="acute mode needs a DWI"):
        run_stroke({"adc": Volume(np.ones((20, 20, 20), np.float32))}, StrokeOptions(mode="acute"))


def test_sequences_from_names_and_sidecars(tmp_path):
    assert sequence_from_text("ep2d_diff_ADC") == "adc"
    assert sequence_from_text("DWI b1000 TRACEW") == "dwi"
    assert sequence_from_text("t2_tirm_tra_dark-fluid") == "flair"
    assert sequence_from_text("sub-01_T1w") == "t1"
    assert sequence_from_text("st1x localiser") is None
    (tmp_path / "s1.json").write_text(json.dumps({"ImageType": ["ORIGINAL", "ADC"], "DiffusionBValue": 0}))
    (tmp_path / "s2.json").write_text(json.dumps({"DiffusionBValue": 800.0}))
    assert sidecar_hints(tmp_path / "s1.nii.gz")[0] == "ADC"
    assert sidecar_hints(tmp_path / "s2.nii.gz")[0] == "DWI"
    vol = Volume(np.zeros((4, 4, 4)))
    found = assign_sequences([SequenceInput(vol, "s2.nii.gz", sidecar_hints(tmp_path / "s2.nii.gz")),
                              SequenceInput(vol, "s1.nii.gz", sidecar_hints(tmp_path / "s1.nii.gz"))])
    assert sorted(found) == ["adc", "dwi"]
    with pytest.raises(InputError, match="--sequences"):
        assign_sequences([SequenceInput(vol, "series7.nii.gz")])
    explicit = assign_sequences([SequenceInput(vol, "a"), SequenceInput(vol, "b")], ["adc", "dwi"])
    assert list(explicit) == ["adc", "dwi"]


def test_cancel_stops_between_stages(acute):
    token = CancelToken()

    def cancel_after_brain(event):
        if event.stage == "align":
            token.cancel()

    with pytest.raises(Cancelled):
        run_stroke({"dwi": acute.images["DWI"], "adc": acute.images["ADC"]}, CLASSICAL, cancel_after_brain, token)


def test_cli_writes_every_output(acute, tmp_path, capsys):
    dwi = write_volume(acute.images["DWI"], tmp_path / "in" / "case_b1000.nii.gz")
    adc = write_volume(acute.images["ADC"], tmp_path / "in" / "case_map.nii.gz")
    out = tmp_path / "out"
    code = main(["stroke", str(dwi), str(adc), "--sequences", "dwi,adc", "-o", str(out), "--engine", "classical",
                 "--progress", "jsonl"])
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "result" and {"brain", "segmentation"} <= {e.get("stage") for e in events}
    assert {p.name for p in out.iterdir()} == {"stroke.seg.nrrd", "lesions.csv", "summary.json", "preview.png"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["lesion_count"] >= 1
    labels, segments = read_segmentation(out / "stroke.seg.nrrd")
    assert segments[0].name == "Stroke lesion" and labels.array.sum() > 0
    assert (out / "lesions.csv").read_text().splitlines()[0].startswith("label,volume_ml,center_lps_x_mm")
    # Names alone cannot tell these two inputs apart: a one-line error asks for --sequences.
    code = main(["stroke", str(dwi), str(adc), "-o", str(tmp_path / "again"), "--no-preview"])
    assert code == 2 and "--sequences" in capsys.readouterr().err
    code = main(["stroke", str(dwi), str(adc), "--sequences", "dwi,adc", "-o", str(out), "--no-preview"])
    assert code == 2 and "not empty" in capsys.readouterr().err


def test_chronic_t1_finds_the_cavity():
    ph = generate_brain(201, spacing=(2.0, 2.0, 2.0), contrasts=("T1",), stage="chronic", lesion="mca")
    result = run_stroke({"t1": ph.images["T1"]}, CLASSICAL)
    assert result.metrics["mode"] == "chronic"
    assert result.labelmap.same_grid(ph.images["T1"])
    m = case_metrics(result.labelmap.array, ph.lesion.array, ph.lesion.spacing)
    assert m["dice"] >= 0.6  # measured 0.68 (mean of six chronic phantoms 0.45: the weak mode, see bench)
