"""NoduleNet training (``clinseg train nodule --network nodulenet``) and NoduleNet as the engine's detector: the 1 mm
input and its geometry, crops that keep boxes and masks together, a loss that falls, and the pack run by
``clinseg nodule --engine model``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers_cli import cli_result

from clinseg.cli import main
from clinseg.nets.nodulenet import NoduleNet
from clinseg.phantoms.chest import generate_chest
from clinseg.registry import get_registry
from clinseg.tasks.nodule.nodulenet_engine import PAD_VALUE, NoduleNetDetector, network_image, to_network_units
from clinseg.train.nodulenet import training_loss
from clinseg.train.nodulenet_data import HARD_EDGE_MM, prepare_case, random_crop
from clinseg.volume import Volume

TINY = ["--max-steps", "2", "--log-every", "1", "--crop", "32", "--width", "0.1", "--threads", "1",
        "--progress", "jsonl"]


@pytest.fixture(scope="module")
def case():
    ph = generate_chest(3, preset="small", shape=(112, 112, 80), n_nodules=4, n_distractors=0)
    return prepare_case("seed3", ph.ct, [(n.center_lps, n.diameter_mm) for n in ph.nodules], ph.nodule_labels,
                        [n.label for n in ph.nodules])


def test_prepared_case_boxes_sit_on_their_nodules(case):
    assert case.image.dtype == np.uint8 and case.grid.spacing == (1.0, 1.0, 1.0)
    assert len(case.boxes) == 4 and case.labels.shape == case.image.shape
    for box, value in zip(case.boxes, case.box_labels):
        k, j, i = np.rint(box[:3]).astype(int)
        assert case.labels[k, j, i] == value  # the box centre is inside its own nodule's mask
        assert case.image[k, j, i] != PAD_VALUE  # and inside the search region
    assert (case.image == PAD_VALUE).mean() > 0.3  # body outside the lungs and air around it are padded


def test_network_units_and_grid():
    assert to_network_units(np.array([-2000.0, -1200.0, -300.0, 600.0, 3000.0])).tolist() == [0, 0, 128, 255, 255]
    ct = np.full((20, 30, 40), -800.0, np.float32)
    ct[10, 15, 20] = 100.0
    volume = Volume(ct, (0.7, 0.7, 2.0), (5.0, -3.0, 11.0))
    image = network_image(volume, np.ones(ct.shape, bool))
    peak = np.unravel_index(np.argmax(image.array), image.array.shape)
    # the bright voxel is at the same physical place on the 1 mm grid (within a voxel)
    assert np.linalg.norm(image.index_to_physical(np.array(peak[::-1], float))
                          - volume.index_to_physical(np.array([20.0, 15.0, 10.0]))) <= 1.0


def test_random_crops_keep_boxes_and_masks_together(case):
    rng = np.random.default_rng(0)
    for _ in range(12):
        crop = random_crop(case, rng, 48, positive=True)
        assert crop.image.shape == (48, 48, 48) and len(crop.boxes) >= 1
        for box, value in zip(crop.boxes, crop.box_labels):
            k, j, i = np.rint(box[:3]).astype(int)
            assert crop.labels[k, j, i] == value  # flips and axis permutations move boxes with the voxels


def test_hard_crops_hold_their_false_positive(case):
    from dataclasses import replace

    assert not (case.image == 1).any()
    marked = case.image.copy()
    point = np.array([40, 50, 60])
    marked[tuple(point)] = 1  # a value the image has nowhere else
    hard = replace(case, grid=Volume(marked, case.grid.spacing, case.grid.origin, case.grid.direction),
                   hard_points=point[None].astype(np.float32))
    rng = np.random.default_rng(0)
    for _ in range(20):
        crop = random_crop(hard, rng, 48, positive=False, hard=True)
        where = np.argwhere(crop.image == 1)
        assert len(where) == 1 and np.all(where[0] >= HARD_EDGE_MM - 1) and np.all(where[0] <= 48 - HARD_EDGE_MM)


def test_mining_keeps_the_best_boxes_off_the_nodules(case):
    from dataclasses import replace

    from clinseg.train.nodulenet import mine_false_positives

    on_nodule = case.boxes[0, :3]
    off = [on_nodule + [0, 0, case.boxes[0, 3] / 2 + 3], np.array([20.0, 30.0, 40.0]), np.array([25.0, 30.0, 40.0])]

    class Fixed(NoduleNetDetector):
        def detect(self, image):  # best first, as the network's
            centres = np.array([on_nodule, off[0], off[1], off[2]])
            return centres, np.full(4, 5.0), np.array([0.9, 0.8, 0.7, 0.6])

    cases = [replace(case)]
    assert mine_false_positives(Fixed("test", NoduleNet(width=0.1)), cases, per_case=2) == 2
    assert np.allclose(cases[0].hard_points, off[:2])  # the nodule's own box is not a false positive


def test_training_loss_falls_on_one_batch(case):
    torch.manual_seed(0)
    net = NoduleNet(width=0.1, pad_value=float(PAD_VALUE))
    rng, generator = np.random.default_rng(1), torch.Generator().manual_seed(1)
    crops = [random_crop(case, rng, 32, positive=True) for _ in range(2)]
    image = torch.from_numpy(np.stack([c.image for c in crops])[:, None]).float()
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = training_loss(net, image, crops, generator)
        optimiser.zero_grad()
        loss.total.backward()
        optimiser.step()
        losses.append(float(loss.total.detach()))
    assert all(np.isfinite(losses)) and float(loss.mask.detach()) > 0  # the phantom's masks reach the mask head
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3])


def test_detector_candidates_land_on_the_ct_grid():
    ct = np.full((30, 40, 50), -800.0, np.float32)
    volume = Volume(ct, (0.7, 0.8, 1.5))
    target_kji = np.array([12.0, 20.0, 30.0])
    lps = volume.index_to_physical(target_kji[::-1])

    class OneBox(NoduleNetDetector):
        def detect(self, image):
            centre = image.physical_to_index(lps)[::-1]
            return centre[None], np.array([6.0]), np.array([0.9])

    cands, scores = OneBox("test", NoduleNet(width=0.1)).candidates(ct, np.ones(ct.shape, bool), volume.spacing)
    assert scores == [0.9] and len(cands) == 1
    assert np.allclose(cands[0].kji, target_kji, atol=1e-3) and cands[0].radius_mm == pytest.approx(3.0)


def test_cli_trains_packs_and_the_engine_runs_it(tmp_path, capsys, clinseg_home):
    out = tmp_path / "run"
    result = cli_result(capsys, "train", "nodule", "--network", "nodulenet", "--seeds", "3", "--val-seeds", "4",
                     "--out", str(out), "--cosine", "--hard-negatives", "0.5", *TINY)
    assert result["steps"] == 2 and result["cases"] == 1
    record = json.loads((out / "record.json").read_text())
    assert record["cosine"] is True and record["hard_share"] == 0.5 and record["mined_false_positives"] >= 0
    assert 0.0 <= result["validation"]["val_cpm"] <= 1.0
    card = json.loads((out / "model" / "card.json").read_text())
    assert card["architecture"] == {"class": "nodulenet:NoduleNet", "kwargs": {"width": 0.1, "pad_value": 170.0}}
    assert card["parameter_count"] == sum(p.numel() for p in NoduleNet(width=0.1).parameters())
    assert {d["setting"] for d in card["document"]["deviations"]} >= {"width", "training crops", "training data"}
    installed = get_registry().import_file(result["pack"])
    ph = tmp_path / "ph"
    assert main(["phantom", "chest", "--seed", "5", "--preset", "small", "--shape", "112,112,80", "--nodules", "3",
                 "--out", str(ph), "--progress", "none"]) == 0
    run = cli_result(capsys, "nodule", str(ph / "ct.nii.gz"), "-o", str(tmp_path / "seg"), "--engine", "model",
                  "--model", installed.id, "--min-score", "0", "--no-preview", "--progress", "jsonl")
    assert run["metrics"]["model"] == installed.id and run["metrics"]["engine"] == "model"
    rows = (tmp_path / "seg" / "nodules.csv").read_text().splitlines()
    assert len(rows) - 1 == run["metrics"]["count"]  # whatever an untrained network finds is measured and tabled


@pytest.mark.parametrize("extra, word", [(["--crop", "40"], "--crop"), (["--seeds", "200"], "held-out"),
                                         (["--hard-negatives", "1.5"], "--hard-negatives"),
                                         (["--spacing", "1,1,1"], "--spacing")])
def test_cli_refuses_bad_arguments(tmp_path, capsys, extra, word):
    capsys.readouterr()
    assert main(["train", "nodule", "--network", "nodulenet", "--seeds", "3", "--out", str(tmp_path / "r"),
                 "--max-steps", "1", "--progress", "none", *extra]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and word in err[0]
    assert not (tmp_path / "r").exists()  # refused before anything is prepared or written


def test_balanced_weights_give_each_class_half():
    from clinseg.train.nodule_losses import balanced_weights

    labels = torch.tensor([[1, 0, 0, 0, -1], [0, 0, -1, -1, -1]])
    w = balanced_weights(labels)
    assert float(w[labels == 1].sum()) == pytest.approx(0.5) and float(w[labels == 0].sum()) == pytest.approx(0.5)
    assert float(w[labels == -1].abs().sum()) == 0.0
    only_negatives = balanced_weights(torch.tensor([0, 0, -1]))
    assert only_negatives.tolist() == [0.5, 0.5, 0.0]  # no positive in the batch: the negatives carry the term
