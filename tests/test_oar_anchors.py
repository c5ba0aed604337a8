"""Anchored stage-2 crops: the rule learnt from masks, crop placement (mirrored for the right side), the same
placement at inference, on a head & neck phantom."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinseg.errors import InputError
from clinseg.nets.oar_unet import OARCascade
from clinseg.phantoms.headneck import generate_headneck
from clinseg.preprocess import resample, resample_to, window
from clinseg.tasks.oar.anchors import AnchorRule, anchor_point, crop_grid, organ_centroids
from clinseg.tasks.oar.model import _stage2, stage2_input, stage2_order
from clinseg.terminology import HN_ORGANS
from clinseg.train.oar_stage2 import (
    DEFAULT_SPECS,
    AnchorCase,
    Stage2Spec,
    anchored_crops,
    learn_rules,
    load_case,
    save_case,
    stage2_model_kwargs,
    stage2_ops,
)
from clinseg.volume import Volume

VALUE = {s.name: s.label for s in HN_ORGANS}
LENS = Stage2Spec("lens", {"Lens L": ("Eye L",), "Lens R": ("Eye R",)}, (16, 32, 32))


@pytest.fixture(scope="module")
def phantom():
    return generate_headneck(3, spacing=(1.0, 1.0, 2.5), with_tumour=False)


@pytest.fixture(scope="module")
def case(phantom) -> AnchorCase:
    names = ("Eye L", "Eye R", "Lens L", "Lens R")
    cents = organ_centroids(phantom.labels, VALUE, names)
    return AnchorCase("p", phantom.ct, phantom.labels, cents, {})


def test_crop_grid_is_centred_and_mirrors_the_i_axis():
    ct = Volume(np.zeros((20, 40, 40), np.int16), (1.0, 1.0, 2.0), (-20.0, -20.0, 0.0), np.eye(3), "ct")
    ct.array[10, 20, 30] = 1000  # a point at x = +10 of the centre (0, 0, 20)
    centre = np.array([0.0, 0.0, 20.0])
    for mirror, sign in ((False, 1.0), (True, -1.0)):
        grid = crop_grid(ct, centre, (1.0, 1.0, 2.0), (9, 17, 25), mirror)
        assert np.allclose(grid.index_to_physical(np.array([12.0, 8.0, 4.0])), centre)
        seen = resample_to(ct, grid, order=0).array
        assert (seen == 1000).sum() == 1
        k, j, i = np.argwhere(seen == 1000)[0]
        assert (i - 12, j - 8, k - 4) == (sign * 10, 0, 0)  # the mirrored crop shows patient left at low i
        assert np.allclose(grid.index_to_physical(np.array([i, j, k], float)), [10.0, 0.0, 20.0])


def test_rules_pool_both_sides_in_the_left_frame(case):
    rules, spread = learn_rules([case], LENS)
    left, right = rules["Lens L"], rules["Lens R"]
    assert not left.mirror and right.mirror
    assert left.offset_mm[0] == pytest.approx(-right.offset_mm[0]) and left.offset_mm[1:] == right.offset_mm[1:]
    # the lens lies in front of its eye (-y in LPS), a few mm from the eye's centre
    assert -12.0 < left.offset_mm[1] < -3.0
    truth_l = case.reference["Lens L"] - case.reference["Eye L"]
    truth_r = case.reference["Lens R"] - case.reference["Eye R"]
    assert np.allclose(left.offset_mm, (truth_l + truth_r * [-1, 1, 1]) / 2)
    assert spread[0] == pytest.approx(abs(truth_l[0] + truth_r[0]) / 2, abs=0.01)
    op = stage2_ops([LENS], {"lens": rules})[1]
    assert op["organ"] == "Lens R" and op["key"] == "lens" and op["label"] == VALUE["Lens R"]
    assert AnchorRule.from_op(op) == AnchorRule(("Eye R",), tuple(round(v, 2) for v in right.offset_mm), True)


def test_training_crops_hold_the_lens_at_the_same_place_on_both_sides(case):
    rules, _ = learn_rules([case], LENS)
    crops = anchored_crops(case, rules, (1.0, 1.0, 1.5), LENS.patch, jitter_mm=6.0)
    assert len(crops) == 2  # one per side (no stage-1 centroids in this case)
    assert crops[0][0].shape == (1, 16 + 2 * 4, 32 + 12, 32 + 12)  # the CT only
    centres = [np.argwhere(mask).mean(0) for _, mask in crops]
    for (_, mask), c in zip(crops, centres):
        assert mask.sum() > 20
        assert np.all(np.abs(c - (np.array(mask.shape) - 1) / 2) < [3, 4, 4])  # near the crop centre
    # mirrored right crop and left crop put the lens at the same place (the phantom is near symmetric)
    assert np.abs(centres[0] - centres[1]).max() < 3.0


class _Card:
    inputs = {"intensity": {"clip": [-1000.0, 600.0]}}


def _organ_everywhere(key: str, in_channels: int = 1) -> OARCascade:
    """A cascade whose stage-2 model ``key`` says 'organ' at every voxel of its crop."""
    torch.manual_seed(0)
    cascade = OARCascade({"out_channels": len(HN_ORGANS) + 1, "width": 2, "dropout": 0.0},
                         {key: {"width": 2, "dropout": 0.0, "in_channels": in_channels}})
    with torch.no_grad():
        cascade.stage2[key].convs["conv15"].bias[:] = torch.tensor([-20.0, 20.0])
    return cascade.eval()


def test_inference_pastes_the_organ_where_the_rule_puts_the_crop(case, phantom):
    """A stage-2 model that says 'organ' everywhere fills exactly its crop: the crop sits at eye + offset."""
    rules, _ = learn_rules([case], LENS)
    cascade = _organ_everywhere("lens")

    for op in stage2_ops([LENS], {"lens": rules}):
        labels = phantom.labels.array.copy()
        labels[labels == op["label"]] = 0  # stage 1 missed the lens: the eye anchors the crop anyway
        assert _stage2(phantom.ct, labels, cascade, op, _Card(), torch.device("cpu"), case.reference)
        filled = np.argwhere(labels == op["label"])
        centre = phantom.ct.index_to_physical(filled.mean(0)[::-1])
        expected = anchor_point(AnchorRule.from_op(op), case.reference)
        assert np.abs(centre - expected).max() < 1.5
        extent = (filled.max(0) - filled.min(0) + 1)[::-1] * np.array(phantom.ct.spacing)
        assert np.allclose(extent, np.array(op["patch"][::-1]) * op["spacing"], atol=3.0)


def test_an_organ_longer_than_its_crop_keeps_stage_1_outside_the_crop(phantom):
    """The cord's stage 2 (op replace = crop) redraws the cord inside its crop only: stage 1's cord above and below
    survives, while an ordinary op would have cleared it."""
    cord = Stage2Spec("spinal_cord", {"Spinal cord": ("Spinal cord",)}, (8, 16, 16), (1.5, 1.5, 4.0), within_crop=True)
    reference = organ_centroids(phantom.labels, VALUE, ("Spinal cord",))
    rules, _ = learn_rules([AnchorCase("p", phantom.ct, phantom.labels, reference, {})], cord)
    (op,) = stage2_ops([cord], {"spinal_cord": rules})
    assert op["replace"] == "crop"
    cascade = _organ_everywhere("spinal_cord")

    value = op["label"]
    rows = np.nonzero((phantom.labels.array == value).any((1, 2)))[0]
    for replace in ("crop", None):
        labels = phantom.labels.array.copy()
        assert _stage2(phantom.ct, labels, cascade, {**op, "replace": replace}, _Card(), torch.device("cpu"),
                       reference)
        kept = np.nonzero((labels == value).any((1, 2)))[0]
        crop_rows = 8 * 4.0 / phantom.ct.spacing[2]
        if replace == "crop":  # the whole stage-1 length is still there, and more than the crop's 32 mm
            assert kept.min() == rows.min() and kept.max() == rows.max()
            assert len(kept) > crop_rows + 4
            # in one piece: stage 1 is cleared only where the crop reaches (clearing the whole covering box left an
            # empty row at each end of the crop, and the largest-component step then dropped two of three pieces)
            assert len(kept) == kept.max() - kept.min() + 1
        else:
            assert len(kept) <= crop_rows + 2


def test_train_oar_stage2_command_refuses_an_unknown_model_in_one_line(tmp_path, capsys):
    from clinseg.cli import main

    code = main(["train", "oar-stage2", "--data", str(tmp_path), "--out", str(tmp_path / "out"),
                 "--models", "lens,spleen"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "--models" in err[0] and "spleen" in err[0] and "lacrimal" in err[0]
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_stage2_paints_large_crops_first_so_the_lens_stays_inside_the_eye():
    ops = [{"organ": "Lens L", "patch": [16, 32, 32], "spacing": [1.0, 1.0, 1.5]},
           {"organ": "Eye L", "patch": [24, 40, 40], "spacing": [1.0, 1.0, 1.5]},
           {"organ": "Lens R", "patch": [16, 32, 32], "spacing": [1.0, 1.0, 1.5]},
           {"organ": "Spinal cord", "patch": [56, 32, 32], "spacing": [1.5, 1.5, 4.0]}]
    assert [op["organ"] for op in stage2_order(ops)] == ["Spinal cord", "Eye L", "Lens L", "Lens R"]
    # equal crops: the organ inside another (op refill) after its container, whatever the card's order (the canal
    # model painted after the cord's took cord voxels: cord 0.767 -> 0.744 on the 7 validation phantoms)
    cord = {"organ": "Spinal cord", "patch": [56, 32, 32], "spacing": [1.5, 1.5, 4.0], "refill": "Spinal canal"}
    canal = {"organ": "Spinal canal", "patch": [56, 32, 32], "spacing": [1.5, 1.5, 4.0]}
    assert [op["organ"] for op in stage2_order([cord, canal, ops[0]])] == ["Spinal canal", "Spinal cord", "Lens L"]


SUBMANDIBULAR = next(s for s in DEFAULT_SPECS if s.key == "submandibular_prob")


def _stage1_like(phantom, organs) -> dict[str, Volume]:
    """Stand-ins for stage 1's probability maps: each organ's mask on a 3 x 3 x 4.5 mm grid (trilinear)."""
    return {organ: resample(phantom.labels.with_array((phantom.labels.array == VALUE[organ]).astype(np.float32)),
                            (3.0, 3.0, 4.5), order=1) for organ in organs}


def test_a_ct_only_op_sees_exactly_the_windowed_ct(phantom):
    """The shipped ops have no ``inputs``: their model's input is the windowed CT alone, as before the option, and
    their networks keep one input channel."""
    grid = crop_grid(phantom.ct, phantom.ct.index_to_physical(np.array([100.0, 90.0, 30.0])), (1.0, 1.0, 1.5),
                     (16, 32, 32), mirror=True)
    x = stage2_input(phantom.ct, grid, {"organ": "Lens R"}, (-1000.0, 600.0), probability=None)
    expected = window(resample_to(phantom.ct, grid, order=1, default_value=-1000.0).array, -1000.0, 600.0)
    assert x.shape == (1, 16, 32, 32) and x.dtype == np.float32 and np.array_equal(x[0], expected)
    ops = [{"key": "lens", "organ": "Lens L"}, {"key": "gland", "organ": "Submandibular L",
                                                 "inputs": ["ct", "stage1_prob"]}]
    assert stage2_model_kwargs(ops, {"width": 8}) == {"lens": {"width": 8}, "gland": {"width": 8, "in_channels": 2}}


def test_stage1_probability_channel_follows_the_organ_on_both_sides(phantom, tmp_path):
    """With ``stage1_prob`` the crops carry stage 1's probability of their own organ as a second channel, mirrored
    with the right-side crop; it survives the case cache; a case without it is refused in one line."""
    organs = ("Submandibular L", "Submandibular R")
    reference = organ_centroids(phantom.labels, VALUE, organs)
    case = AnchorCase("p", phantom.ct, phantom.labels, reference, {}, _stage1_like(phantom, organs))
    save_case(case, tmp_path / "p.npz")
    loaded = load_case(tmp_path / "p.npz")
    assert np.array_equal(loaded.probabilities["Submandibular R"].array, case.probabilities["Submandibular R"].array)
    rules, _ = learn_rules([loaded], SUBMANDIBULAR)
    crops = anchored_crops(loaded, rules, SUBMANDIBULAR.spacing, SUBMANDIBULAR.patch, 6.0, SUBMANDIBULAR.inputs)
    ct_only = anchored_crops(loaded, rules, SUBMANDIBULAR.spacing, SUBMANDIBULAR.patch, 6.0)
    assert len(crops) == len(ct_only) == 2
    for (image, mask), (plain, plain_mask) in zip(crops, ct_only):
        assert image.shape == (2, *mask.shape) and mask.sum() > 500
        assert np.array_equal(image[:1], plain) and np.array_equal(mask, plain_mask)  # the CT channel unchanged
        found = image[1] > 0.5
        assert 2 * (found & (mask > 0)).sum() / (found.sum() + mask.sum()) > 0.8  # the channel lies on the gland
    (op,) = [o for o in stage2_ops([SUBMANDIBULAR], {SUBMANDIBULAR.key: rules}) if o["organ"] == "Submandibular R"]
    assert op["inputs"] == ["ct", "stage1_prob"]
    with pytest.raises(InputError, match="Submandibular"):
        anchored_crops(AnchorCase("q", phantom.ct, phantom.labels, reference, {}), rules, SUBMANDIBULAR.spacing,
                       SUBMANDIBULAR.patch, 6.0, SUBMANDIBULAR.inputs)


def test_inference_feeds_the_probability_to_a_two_channel_model(phantom):
    """A two-channel stage-2 model runs on the crop with stage 1's probability; without a probability map the
    channel is zero, not an error."""
    organs = ("Submandibular L", "Submandibular R")
    reference = organ_centroids(phantom.labels, VALUE, organs)
    rules, _ = learn_rules([AnchorCase("p", phantom.ct, phantom.labels, reference, {})], SUBMANDIBULAR)
    probs = _stage1_like(phantom, organs)
    cascade = _organ_everywhere(SUBMANDIBULAR.key, in_channels=2)
    for op in stage2_ops([SUBMANDIBULAR], {SUBMANDIBULAR.key: rules}):
        grid = crop_grid(phantom.ct, reference[op["organ"]], op["spacing"], op["patch"], op["anchor"]["mirror"])
        x = stage2_input(phantom.ct, grid, op, (-1000.0, 600.0), probs[op["organ"]])
        assert x.shape == (2, *op["patch"]) and x[1].max() > 0.9
        assert not stage2_input(phantom.ct, grid, op, (-1000.0, 600.0), None)[1].any()
        labels = phantom.labels.array.copy()
        assert _stage2(phantom.ct, labels, cascade, op, _Card(), torch.device("cpu"), reference, probs[op["organ"]])
        assert (labels == op["label"]).sum() > (phantom.labels.array == op["label"]).sum()


def test_a_two_channel_model_trains_on_probability_crops(phantom, tmp_path):
    """train_models builds the spec's model with one input channel per input and steps through its crops."""
    from clinseg.train.oar import OarTrainConfig
    from clinseg.train.oar_stage2 import train_models

    organs = ("Submandibular L", "Submandibular R")
    case = AnchorCase("p", phantom.ct, phantom.labels, organ_centroids(phantom.labels, VALUE, organs), {},
                      _stage1_like(phantom, organs))
    rules, _ = learn_rules([case], SUBMANDIBULAR)
    crops = {SUBMANDIBULAR.key: anchored_crops(case, rules, SUBMANDIBULAR.spacing, SUBMANDIBULAR.patch, 3.0,
                                               SUBMANDIBULAR.inputs)}
    config = OarTrainConfig(batch=2, iters_per_epoch=2, stage2_width=2, norm="batch")
    trained = train_models(crops, [SUBMANDIBULAR], config, tmp_path, epochs=1, lr=1e-3, dice_weight=1.0,
                           max_minutes=None, log=lambda _: None)
    model = trained[SUBMANDIBULAR.key]["model"]
    assert model.convs["conv1"].weight.shape[1] == 2
    assert trained[SUBMANDIBULAR.key]["summary"].epochs_done == 1


def test_voxels_stage_2_takes_from_the_cord_go_back_to_the_canal(phantom):
    """An op with ``refill`` (written for organs inside another) gives the container the stage-1 voxels of the organ
    that stage 2 does not keep, so a thinner cord leaves no hole in the canal."""
    spec = next(s for s in DEFAULT_SPECS if s.key == "spinal_cord_prob")
    reference = organ_centroids(phantom.labels, VALUE, ("Spinal cord",))
    rules, _ = learn_rules([AnchorCase("p", phantom.ct, phantom.labels, reference, {})], spec)
    (op,) = stage2_ops([spec], {spec.key: rules})
    assert op["refill"] == "Spinal canal" and op["inputs"] == ["ct", "stage1_prob"]
    assert "refill" not in stage2_ops([SUBMANDIBULAR], {SUBMANDIBULAR.key: learn_rules(
        [AnchorCase("p", phantom.ct, phantom.labels, organ_centroids(phantom.labels, VALUE, VALUE), {})],
        SUBMANDIBULAR)[0]})[0]
    cascade = _organ_everywhere(spec.key, in_channels=2)
    cord, canal = VALUE["Spinal cord"], VALUE["Spinal canal"]
    outside = phantom.labels.array == cord  # stage 1's cord: an ordinary op clears it all, then paints its crop
    for refill, expected in ((0, 0), (canal, canal)):
        labels = phantom.labels.array.copy()
        short = {**op, "replace": None, "patch": [8, 16, 16]}  # 32 mm: much of stage 1's cord lies outside
        assert _stage2(phantom.ct, labels, cascade, short, _Card(), torch.device("cpu"), reference, None, refill)
        freed = outside & (labels != cord)
        assert freed.sum() > 100 and np.all(labels[freed] == expected)
