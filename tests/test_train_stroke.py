"""clinseg train stroke: phantom folders in the ISLES'22 layout prepared as inference sees them, a short run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import load_file

from clinseg.cli import main
from clinseg.errors import InputError
from clinseg.nets.stroke import DUNet
from clinseg.phantoms.brain import generate_brain
from clinseg.train.stroke import StrokeTrainConfig, prepare_case, train_stroke


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("isles")
    for seed in (1, 2):
        code = main(["phantom", "brain", "--seed", str(seed), "--spacing", "3,3,3", "--layout", "isles2022",
                     "--out", str(root), "--progress", "none"])
        assert code == 0
    return root


def test_case_is_padded_and_normalised_like_inference():
    ph = generate_brain(5, spacing=(3.0, 3.0, 3.0), contrasts=("DWI",))
    case = prepare_case(ph.images["DWI"], ph.lesion, "DWI", 2.0, "p5")
    nk, nj, ni = case.image.shape
    assert nj % 16 == 0 and ni % 16 == 0 and nk == ph.lesion.shape[0]
    assert nj >= round(ph.lesion.shape[1] * 1.5) - 1  # 3 mm -> 2 mm in-plane
    brain = case.image > 0
    assert np.median(case.image[brain]) == pytest.approx(1.0, abs=0.05)  # / brain median
    # The lesion keeps its volume through the resampling (2 mm pixels, native 3 mm slices).
    assert case.lesion.sum() * 2 * 2 * 3 / 1000 == pytest.approx(ph.lesion_volume_ml, rel=0.15)
    assert case.lesion_slices.size > 0


def test_short_run_writes_loadable_weights(phantoms, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "stroke", "--data", str(phantoms), "--out", str(out), "--epochs", "1",
                 "--steps-per-epoch", "2", "--batch", "2", "--val-cases", "1", "--threads", "1",
                 "--progress", "jsonl"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["train_cases"] == 1 and result["val_cases"] == 1 and result["parameters"] == 596875
    assert 0.0 <= result["best_val_dice"] <= 1.0
    network = DUNet(width=0.25)
    network.load_state_dict(load_file(str(out / "model.safetensors")))  # strict: every tensor present
    assert (out / "log.csv").read_text().splitlines()[0] == "epoch,loss,val_dice,minutes"


def test_a_folder_without_lesion_masks_is_refused(tmp_path):
    with pytest.raises(InputError):
        train_stroke(tmp_path, tmp_path / "run", StrokeTrainConfig(epochs=1))
