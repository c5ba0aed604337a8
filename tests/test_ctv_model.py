"""The shipped learned CTV model (``ctv-unet-phantom``): card and hash, Dice on a held-out phantom, ``clinseg oar
--ctv-model``, refusals, and ``clinseg train ctv`` end to end on a tiny run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clinseg.cli import main
from clinseg.datasets.hn_oar import dice
from clinseg.errors import InputError, ModelError
from clinseg.io import read_segmentation, write_volume
from clinseg.io.rtstruct import roi_type_for
from clinseg.nets.counting import count_parameters
from clinseg.nets.ctv_unet import CTVUNet
from clinseg.phantoms.headneck import generate_headneck
from clinseg.registry import get_registry
from clinseg.registry.store import Registry, sha256_file
from clinseg.tasks.oar import OarOptions, run_oar
from clinseg.tasks.oar import ctv as ctv_module
from clinseg.tasks.oar import model as oar_model
from clinseg.tasks.oar.ctv import DEFAULT_CTV_MODEL, predict_ctv
from clinseg.terminology import CTV
from clinseg.train.ctv import HELDOUT_SEEDS, TRAIN_SEEDS

# bench/ctv.py on the shipped 0.1.0: held-out seed 500 (the first held-out case) scored FLOOR_MEASURED;
# the floor leaves room for BLAS and resampling differences between machines.
FLOOR_MEASURED = 0.653
FLOOR = FLOOR_MEASURED - 0.1


@pytest.fixture(scope="module")
def heldout():
    assert HELDOUT_SEEDS[0] not in TRAIN_SEEDS
    return generate_headneck(HELDOUT_SEEDS[0], margin_mm=8.0)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_shipped_card_hash_and_size():
    registry = get_registry()
    card = registry.card(DEFAULT_CTV_MODEL)
    assert card.task == "ctv" and card.synthetic and "phantoms only" in card.data["description"]
    entry = card.files[0]
    path = registry.model_dir(DEFAULT_CTV_MODEL) / entry.name
    assert sha256_file(path) == entry.sha256 and path.stat().st_size == entry.size < 5 * 2**20
    assert registry.verify(DEFAULT_CTV_MODEL) == []
    net = registry.load_network(DEFAULT_CTV_MODEL)
    assert isinstance(net, CTVUNet) and net.recurrent and net.n_iterations == 2
    assert count_parameters(net).full == card.parameter_count
    figures = card.figures
    assert figures["heldout_dice_mean"] > 0 and figures["margin_tool_dice_mean"] > 0
    assert {d["setting"] for d in card.data["document"]["deviations"]} >= {"training data", "widths", "loss"}


def test_a_tampered_weight_file_is_refused(tmp_path):
    source = get_registry().model_dir(DEFAULT_CTV_MODEL)
    folder = tmp_path / "models" / DEFAULT_CTV_MODEL
    shutil.copytree(source, folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256"):
        Registry(home=tmp_path).load_network(DEFAULT_CTV_MODEL)


def test_learned_ctv_on_a_heldout_phantom(heldout):
    pred = predict_ctv(heldout.ct, DEFAULT_CTV_MODEL, "cpu")
    assert pred.same_grid(heldout.ct)
    found = pred.array > 0
    assert dice(found, heldout.ctv.array > 0) >= FLOOR
    assert (found & (heldout.gtv.array > 0)).any()


def test_a_model_of_another_task_is_refused(heldout):
    with pytest.raises(InputError, match="not a CTV model"):
        predict_ctv(heldout.ct, "oar-unet-phantom")
    with pytest.raises(ModelError, match="unknown model"):
        predict_ctv(heldout.ct, "no-such-ctv")


def test_cli_writes_the_learned_ctv_segment(heldout, tmp_path, capsys):
    ct_path = write_volume(heldout.ct, tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    assert main(["oar", str(ct_path), "-o", str(out), "--ctv-model", "--device", "cpu", "--no-preview"]) == 0
    labels, segments = read_segmentation(out / "oar.seg.nrrd")
    by_name = {s.name: s for s in segments}
    assert by_name["CTV"].label == CTV.label and by_name["CTV"].type == CTV.type
    assert roi_type_for(by_name["CTV"].name) == "CTV"  # RT export's interpreted type, as the margin tool's CTV
    ctv = labels.array == CTV.label
    assert (ctv & (heldout.ctv.array > 0)).sum() > 0.5 * ctv.sum()  # mostly inside the true CTV
    metrics = json.loads((out / "summary.json").read_text())["metrics"]
    assert metrics["ctv_model"] == DEFAULT_CTV_MODEL and metrics["ctv_volume_ml"] > 0
    assert main(["oar", str(ct_path), "-o", str(tmp_path / "o2"), "--gtv", str(ct_path), "--ctv-model"]) == 2
    assert "choose one CTV source" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_nothing_found_is_a_warning_and_no_segment(heldout, monkeypatch):
    def no_organs(ct, *args, **kwargs):
        return oar_model.OrganPrediction(ct.with_array(np.zeros(ct.shape, np.uint8)))

    monkeypatch.setattr(oar_model, "predict_organs", no_organs)
    monkeypatch.setattr(ctv_module, "predict_ctv", lambda ct, *a: ct.with_array(np.zeros(ct.shape, np.uint8)))
    result = run_oar(heldout.ct, OarOptions(ctv_model=DEFAULT_CTV_MODEL))
    assert "CTV" not in [s.name for s in result.segments] and result.metrics["ctv_volume_ml"] is None
    assert any("CTV: not found" in w for w in result.metrics["warnings"])
    with pytest.raises(InputError, match="choose one CTV source"):
        run_oar(heldout.ct, OarOptions(ctv_model=DEFAULT_CTV_MODEL, gtv=heldout.gtv))


def test_train_ctv_tiny_run(tmp_path):
    out = tmp_path / "run"
    args = ["train", "ctv", "--out", str(out), "--seeds", "100", "101", "--steps", "2", "--patch", "8", "32", "32",
            "--threads", "1", "--cache", str(tmp_path / "cache")]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["cases"] == ["phantom100"]
    net = CTVUNet(widths=summary["config"]["widths"], n_iterations=summary["config"]["n_iterations"])
    net.load_state_dict(load_file(str(out / "model.safetensors")))
    assert list(Path(tmp_path / "cache").glob("phantom100__*.npz"))


@pytest.mark.parametrize("extra, message", [(["--patch", "10", "64", "64"], "multiple of 8"),
                                            (["--widths", "8", "16"], "5 widths"),
                                            (["--steps", "0"], "at least 1")])
def test_train_ctv_bad_options(tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    assert main(["train", "ctv", "--out", str(out), "--seeds", "100", "101", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
