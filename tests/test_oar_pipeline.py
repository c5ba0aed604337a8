"""``clinseg oar`` end to end: region check, two-stage inference, table, CLI files, cancel, GTV; phantom Dice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clinseg.cli import main
from clinseg.errors import Cancelled, InputError
from clinseg.io import read_segmentation, write_volume
from clinseg.nets.oar_unet import OARCascade
from clinseg.phantoms.headneck import generate_headneck
from clinseg.progress import CancelToken
from clinseg.tasks.oar import OarOptions, run_oar
from clinseg.tasks.oar.organs import keep_one_component, organ_table
from clinseg.tasks.oar.region import region_evidence, require_head_and_neck
from clinseg.terminology import HN_ORGANS
from clinseg.train.loop import export_safetensors
from clinseg.train.oar import OarTrainConfig
from clinseg.train.oar_card import oar_card, write_model_folder
from clinseg.volume import Volume

TINY_ID = "oar-tiny-test"


@pytest.fixture(scope="module")
def headneck():
    return generate_headneck(4, spacing=(3.0, 3.0, 3.0), with_tumour=True)


def _chest_like() -> Volume:
    """A trunk cross-section repeated over 30 cm: body, two lungs, a vertebral body; no skull."""
    k, j, i = np.mgrid[0:60, 0:128, 0:128].astype(np.float32)
    hu = np.full(k.shape, -1000.0, np.float32)
    hu[((i - 64) / 60) ** 2 + ((j - 64) / 45) ** 2 <= 1] = 40.0
    for cx in (38, 90):
        hu[((i - cx) / 20) ** 2 + ((j - 58) / 30) ** 2 <= 1] = -850.0
    ring = np.hypot(i - 64, j - 96)
    hu[(ring >= 4) & (ring <= 7)] = 700.0  # a vertebra around a small canal (~1 cm^2)
    return Volume(hu.astype(np.int16), (2.5, 2.5, 5.0), (-160.0, -160.0, 0.0), np.eye(3), "chest")


@pytest.fixture(scope="module")
def chest() -> Volume:
    return _chest_like()


@pytest.fixture
def tiny_model(clinseg_home, tmp_path) -> str:
    """An untrained width-2 cascade with one stage-2 organ, installed as a model."""
    torch.manual_seed(0)
    config = OarTrainConfig(width=2, stage2_width=2, stage2_organs=("Lens L",))
    cascade = OARCascade({"out_channels": len(HN_ORGANS) + 1, "width": 2, "dropout": 0.0},
                         {"lens_l": {"width": 2, "dropout": 0.0}})
    with torch.no_grad():  # a strong bias towards the brain label: every run finds one organ
        cascade.stage1.convs["conv15"].bias[1] = 5.0
    weights = export_safetensors(cascade, tmp_path / "model.safetensors", {})
    card = oar_card(cascade, config, {"steps": 0}, {}, weights, model_id=TINY_ID, inference_patch=(64, 96, 64))
    write_model_folder(card, weights, clinseg_home / "models" / TINY_ID)
    return TINY_ID


def test_region_check_passes_head_and_neck_and_refuses_chest(headneck, chest):
    evidence = require_head_and_neck(headneck.ct, "hn")
    assert evidence.skull_area_cm2 > 100 and evidence.lung_slices < 0.2
    chest_evidence = region_evidence(chest)
    assert chest_evidence.skull_area_cm2 < 5 and chest_evidence.lung_slices == 1.0
    with pytest.raises(InputError, match="looks like a chest CT .lungs in 100 % of the slices, no skull."):
        require_head_and_neck(chest, "chest")
    abdomen = chest.with_array(np.where(chest.array < -500, np.int16(40), chest.array))
    abdomen.array[:, :, :3] = -1000
    abdomen.array[:, :3, :] = -1000
    with pytest.raises(InputError, match="shows no skull"):
        require_head_and_neck(abdomen, "abdomen")


def test_keep_one_component_per_organ():
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[1:4, 1:4, 1:4] = 2
    labels[8:10, 8:10, 8:10] = 2  # a smaller island of the same organ goes
    labels[8, 1, 1] = 5  # a single voxel of another organ stays: it is that organ's largest
    out = keep_one_component(labels)
    assert (out == 2).sum() == 27 and (out == 5).sum() == 1 and out[9, 9, 9] == 0


def test_run_oar_result_table_and_stage2(headneck, tiny_model):
    result = run_oar(headneck.ct, OarOptions(model_id=tiny_model))
    assert result.task == "oar" and result.labelmap.same_grid(headneck.ct)
    present = set(np.unique(result.labelmap.array).tolist()) - {0}
    assert {s.label for s in result.segments} == present and 1 in present
    table = result.tables[0]
    assert table.name == "organs" and table.n_rows == len(result.segments)
    row = table.rows()[0]
    expected_ml = float((result.labelmap.array == row["label"]).sum()) * 27.0 / 1000.0
    assert row["volume_ml"] == pytest.approx(expected_ml, abs=1e-3)
    assert row["code"] == "SCT:12738006"  # brain
    assert result.metrics["organs"] == len(result.segments)
    # The lens model runs only where stage 1 found a lens; it did not here, so it is reported.
    assert result.metrics["stage2_organs"] == [] and result.metrics["warnings"] == ["Lens L: not found"]


def test_run_oar_refuses_chest_and_honours_cancel(headneck, chest, tiny_model):
    with pytest.raises(InputError, match="chest CT"):
        run_oar(chest, OarOptions(model_id=tiny_model))
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        run_oar(headneck.ct, OarOptions(model_id=tiny_model), cancel=token)
    with pytest.raises(InputError, match="no 'classical' engine"):
        run_oar(headneck.ct, OarOptions(engine="classical", model_id=tiny_model))


def test_gtv_grows_a_ctv_with_the_margin_tool(headneck, tiny_model):
    result = run_oar(headneck.ct, OarOptions(model_id=tiny_model, gtv=headneck.gtv, margin_mm=5.0))
    gtv_ml = float((headneck.gtv.array != 0).sum()) * float(np.prod(headneck.ct.spacing)) / 1000.0
    assert result.metrics["ctv_volume_ml"] > gtv_ml  # the margin adds tissue around the GTV
    assert "CTV" in [s.name for s in result.segments]
    assert not any("CTV skipped" in w for w in result.metrics.get("warnings", []))


def test_gtv_with_a_margin_tool_adds_a_ctv(headneck, tiny_model, monkeypatch):
    import clinseg.tasks.oar.pipeline as pipeline

    grown = headneck.ctv
    monkeypatch.setattr(pipeline, "grow_ctv", lambda ct, gtv, margin: grown)
    result = run_oar(headneck.ct, OarOptions(model_id=tiny_model, gtv=headneck.gtv, margin_mm=8.0))
    ml = float(grown.array.sum()) * 27.0 / 1000.0
    assert result.metrics["ctv_volume_ml"] == pytest.approx(ml, abs=1e-3)
    assert "CTV" in [s.name for s in result.segments]


def test_cli_writes_files_and_refuses_to_overwrite(headneck, tiny_model, tmp_path, capsys):
    ct_path = write_volume(headneck.ct, tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    assert main(["oar", str(ct_path), "-o", str(out), "--model", tiny_model, "--progress", "jsonl"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["oar.seg.nrrd", "organs.csv", "preview.png", "summary.json"]
    labels, segments = read_segmentation(out / "oar.seg.nrrd")
    assert labels.same_grid(headneck.ct) and segments[0].name == "Brain"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "oar" and summary["metrics"]["model"] == tiny_model
    capsys.readouterr()
    assert main(["oar", str(ct_path), "-o", str(out), "--model", tiny_model]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["oar", str(ct_path), "-o", str(out), "--model", tiny_model, "--overwrite", "--no-preview"]) == 0
    assert not (out / "preview.png").exists()
    assert main(["oar", str(ct_path), "-o", str(tmp_path / "o2"), "--margin", "3"]) == 2
    assert "needs a GTV" in capsys.readouterr().err


def test_cli_cancel_leaves_no_output(headneck, tiny_model, tmp_path, monkeypatch):
    ct_path = write_volume(headneck.ct, tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    def cancelled_run(ct, options, progress, cancel):
        cancel.cancel()
        cancel.check("oar")

    monkeypatch.setattr("clinseg.tasks.oar.run_oar", cancelled_run)
    assert main(["oar", str(ct_path), "-o", str(out), "--model", tiny_model]) == 130
    assert not out.exists()


def test_organ_table_lists_given_segments(headneck):
    segments = [s for s in HN_ORGANS if s.name in ("Brainstem", "Mandible")]
    table = organ_table(headneck.labels, segments)
    assert table.columns["organ"] == ["Brainstem", "Mandible"]
    assert all(v > 0 for v in table.columns["volume_ml"])


SHIPPED = Path(__file__).resolve().parents[1] / "clinseg" / "models" / "oar-unet-phantom" / "card.json"
MASKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "hn_oar_masks"
