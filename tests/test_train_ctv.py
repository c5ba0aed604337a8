"""``clinseg train ctv`` on the shared loop (``clinseg.train.loop``): the exported weights keep the shipped
model's keys, the schedule (epochs of steps, lr /10 at 80 %), resume, and learning on a trivial case."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from helpers_airway import one_torch_thread  # noqa: F401  (autouse: one torch thread per test)
from safetensors.torch import load_file

from clinseg.cli import main
from clinseg.nets.ctv_unet import CTVUNet
from clinseg.registry import get_registry
from clinseg.tasks.oar.ctv import DEFAULT_CTV_MODEL
from clinseg.train import ctv as ctv_training
from clinseg.train.ctv import CtvTask, CtvTrainConfig, network_kwargs
from clinseg.train.loop import LoopConfig, train


def _rows(out: Path) -> list[dict]:
    with open(out / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def _shipped() -> dict[str, torch.Tensor]:
    registry = get_registry()
    card = registry.card(DEFAULT_CTV_MODEL)
    return load_file(str(registry.model_dir(DEFAULT_CTV_MODEL) / card.files[0].name))


def test_shipped_card_still_loads_its_weights():
    network = get_registry().load_network(DEFAULT_CTV_MODEL, torch.device("cpu"))
    assert isinstance(network, CTVUNet)
    reference = CTVUNet(**network_kwargs(CtvTrainConfig()))
    assert set(network.state_dict()) == set(reference.state_dict()) == set(_shipped())


def test_run_on_the_shared_loop_exports_the_shipped_keys_drops_the_rate_and_resumes(tmp_path, monkeypatch):
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["train", "ctv", "--out", str(out), "--seeds", "100", "101", "--patch", "8", "32", "32", "--threads", "1",
            "--cache", str(cache), "--device", "cpu", "--precision", "float32", "--steps-per-epoch", "2"]
    loops = []
    monkeypatch.setattr(ctv_training, "train", lambda model, task, loop: loops.append(loop) or train(model, task, loop))
    assert main([*args, "--steps", "5", "--max-minutes", "30"]) == 0
    # --max-minutes also drops the rate at 80 % of it (the loop's opt-in time milestone; test_train_loop_options).
    assert [(lp.epochs, lp.milestones, lp.time_milestones, lp.max_minutes) for lp in loops] == [(3, (0.8,), True, 30)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["epochs"] == 3 and summary["cases"] == ["phantom100"]
    # 80 % of 5 steps: the old step loop dropped the rate for step 5; here epoch 3 (its fifth step) runs at 1e-4.
    rows = _rows(out)
    assert [(r["epoch"], r["iterations"], r["lr"]) for r in rows] == [
        ("1", "2", "0.001"), ("2", "2", "0.001"), ("3", "1", "0.0001")]
    assert all(np.isfinite(float(r["train_loss"])) for r in rows)
    weights = load_file(str(out / "model.safetensors"))
    shipped = _shipped()
    assert weights.keys() == shipped.keys()
    assert all(weights[k].shape == shipped[k].shape for k in shipped)  # default widths: the shipped shapes
    config = CtvTrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in summary["config"].items()})
    CTVUNet(**network_kwargs(config)).load_state_dict(weights)  # strict
    assert (out / "checkpoints" / "last.pt").is_file()

    assert main([*args, "--steps", "7", "--max-minutes", "30", "--resume"]) == 0
    resumed = _rows(out)
    assert resumed[:3] == rows
    # Epoch 4 holds steps 7-8 of the schedule, cut to step 7; the short epoch 3 is not refilled.
    assert [(r["epoch"], r["iterations"], r["lr"]) for r in resumed[3:]] == [("4", "1", "0.0001")]
    assert json.loads((out / "summary.json").read_text())["steps"] == 6
    assert main([*args, "--steps", "7", "--resume", "--lr", "0.01"]) == 2  # another setting than the run


def test_resume_without_a_run_is_refused(tmp_path, capsys):
    assert main(["train", "ctv", "--out", str(tmp_path / "none"), "--seeds", "100", "101", "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def _trivial_case(seed: int) -> tuple[str, np.ndarray, np.ndarray]:
    """Soft tissue (40 HU) with one brighter box (140 HU): the CTV is the box."""
    rng = np.random.default_rng(seed)
    hu = np.full((16, 64, 64), 40, np.int16)
    ctv = np.zeros(hu.shape, np.uint8)
    k, j, i = rng.integers(2, 6), rng.integers(8, 40), rng.integers(8, 40)
    ctv[k:k + 8, j:j + 16, i:i + 16] = 1
    hu[ctv > 0] = 140
    return f"box{seed}", hu, ctv


def test_loss_falls_on_a_trivial_case(tmp_path):
    config = CtvTrainConfig(widths=(4, 8, 8, 8, 8), patch=(8, 32, 32), steps=40, steps_per_epoch=10, lr=1e-2,
                            augment=False, fg_fraction=1.0)
    torch.manual_seed(0)
    net = CTVUNet(**network_kwargs(config))
    summary = train(net, CtvTask([_trivial_case(s) for s in range(3)], config),
                    LoopConfig(tmp_path, 4, lr=config.lr, milestones=(0.8,), amp=False, log=lambda line: None))
    losses = [float(r["train_loss"]) for r in summary.rows]
    dice = [float(r["train_dice"]) for r in summary.rows]
    assert losses[-1] < 0.5 * losses[0]
    assert dice[-1] > 0.8
