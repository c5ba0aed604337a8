"""Airway training: losses, augmentation, sampling, schedule, lung crop, and tiny end-to-end runs."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_airway import one_torch_thread  # noqa: F401  (autouse: one torch thread per test)

from clinseg.engine import cpu_has_native_bf16
from clinseg.errors import InputError
from clinseg.io import write_volume
from clinseg.nets.airway_unet import AirwayOutput, AirwayUNet
from clinseg.train.airway import (
    AirwayTrainConfig,
    list_cases,
    lung_crop_box,
    prepare_case,
    run_training,
    split_cases,
)
from clinseg.train.augment import (
    AugmentConfig,
    affine_pair,
    augment_batch,
    gaussian_blur,
    rotation_scale_matrix,
    spatial_augment,
)
from clinseg.train.loop import as_float32, autocast, autocast_precision, finite_gradients, learning_rate
from clinseg.train.losses import (
    airway_loss,
    attention_distillation_loss,
    attention_map,
    skeleton_recall_loss,
    soft_dice_loss,
)
from clinseg.train.sampler import epoch_patches, grid_starts, read_patch, scaled_train_stride, window_starts
from clinseg.volume import Volume

# ---------------------------------------------------------------- losses


def test_dice_loss_values():
    g = torch.zeros(1, 1, 8, 8, 8)
    g[..., :4] = 1  # 256 voxels
    assert float(soft_dice_loss(g, g)) == pytest.approx(0.0, abs=1e-7)
    assert float(soft_dice_loss(1 - g, g)) == pytest.approx(1 - 1 / 513, abs=1e-7)  # disjoint: only eps is left
    p = torch.zeros_like(g)
    p[..., :2] = 1  # half of the target
    assert float(soft_dice_loss(p, g)) == pytest.approx(1 - (2 * 128 + 1) / (128 + 256 + 1))
    assert float(soft_dice_loss(torch.zeros_like(g), torch.zeros_like(g))) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        soft_dice_loss(p[0], g)


def test_attention_map_is_channel_sum_of_squares():
    f = torch.tensor([1.0, -2.0, 3.0]).reshape(1, 3, 1, 1, 1).expand(1, 3, 2, 2, 2)
    assert torch.allclose(attention_map(f), torch.full((1, 1, 2, 2, 2), 14.0))


def test_ad_loss_zero_for_identical_normalised_maps():
    coarse = torch.full((2, 4, 2, 2, 2), 0.7)
    fine = torch.full((2, 3, 4, 4, 4), 2.0)  # other scale, same softmax (uniform)
    assert float(attention_distillation_loss([coarse, fine])) == pytest.approx(0.0, abs=1e-12)
    # A coarse map upsampled x2 (trilinear) is its own teacher.
    torch.manual_seed(0)
    c = torch.rand(1, 2, 2, 2, 2)
    up = torch.nn.functional.interpolate(attention_map(c), scale_factor=2, mode="trilinear").sqrt()
    assert float(attention_distillation_loss([c, up])) == pytest.approx(0.0, abs=1e-10)


def test_ad_loss_positive_weighted_and_differentiable():
    torch.manual_seed(0)
    feats = [torch.randn(2, 8 // 2**i, 2 * 2**i, 2 * 2**i, 2 * 2**i, requires_grad=True) for i in range(4)]
    loss = attention_distillation_loss(feats)
    assert float(loss.detach()) > 0
    doubled = attention_distillation_loss(feats, 0.2).detach()
    assert float(doubled) == pytest.approx(2 * float(loss.detach()), rel=1e-5)
    loss.backward()
    assert all(f.grad is not None and float(f.grad.abs().sum()) > 0 for f in feats)  # teacher not detached
    # One-way distillation: the finest map only teaches.
    for f in feats:
        f.grad = None
    attention_distillation_loss(feats, detach_target=True).backward()
    assert feats[-1].grad is None or float(feats[-1].grad.abs().sum()) == 0
    assert float(feats[0].grad.abs().sum()) > 0
    with pytest.raises(ValueError):
        attention_distillation_loss(feats, [0.1, 0.1])


def test_airway_loss_adds_ad_to_dice():
    torch.manual_seed(0)
    logits = torch.randn(1, 1, 4, 4, 4)
    target = (torch.rand(1, 1, 4, 4, 4) > 0.5).float()
    feats = [torch.randn(1, 2, 2, 2, 2), torch.randn(1, 2, 4, 4, 4)]
    dice = soft_dice_loss(torch.sigmoid(logits), target)
    total = airway_loss(logits, target, feats)
    assert float(total - dice) == pytest.approx(float(attention_distillation_loss(feats)), abs=1e-7)
    assert float(airway_loss(logits, target)) == pytest.approx(float(dice))


def test_skeleton_recall_counts_every_branch_alike():
    """A thin branch missed costs Dice little but skeleton recall in proportion to its length."""
    target = torch.zeros(1, 1, 16, 16, 40)
    target[..., 2:14, 2:14, :20] = 1  # a thick tube, 20 long
    target[..., 7:9, 7:9, 20:] = 1  # a thin one, 20 long
    skeleton = torch.zeros_like(target)
    skeleton[..., 7:9, 7:9, :] = 1  # its centerline: the same length in each
    thick_only = target.clone()
    thick_only[..., 20:] = 0
    assert float(soft_dice_loss(thick_only, target)) < 0.03  # Dice hardly notices the missing thin tube
    assert float(skeleton_recall_loss(thick_only, skeleton)) == pytest.approx(0.5, abs=0.01)
    assert float(skeleton_recall_loss(target, skeleton)) == pytest.approx(0.0, abs=1e-6)
    assert float(skeleton_recall_loss(torch.ones_like(target), torch.zeros_like(target))) == pytest.approx(0.0)
    # in the airway loss: off by default and for weight 0, weighted otherwise
    logits = torch.where(thick_only > 0, 8.0, -8.0)
    dice = float(airway_loss(logits, target))
    assert float(airway_loss(logits, target, skeleton=skeleton)) == pytest.approx(dice)
    with_sr = float(airway_loss(logits, target, skeleton=skeleton, skeleton_weight=2.0))
    assert with_sr - dice == pytest.approx(2 * float(skeleton_recall_loss(torch.sigmoid(logits), skeleton)), rel=1e-5)
    with pytest.raises(ValueError):
        skeleton_recall_loss(target, skeleton[..., :10])


def test_bce_term_charges_every_false_positive():
    target = torch.zeros(1, 1, 8, 8, 8)
    target[..., :2] = 1
    right = torch.where(target > 0, 6.0, -6.0)
    everything = torch.full_like(target, 6.0)  # all airway: the collapse skeleton recall alone allows
    dice_gap = float(airway_loss(everything, target) - airway_loss(right, target))
    with_bce = float(airway_loss(everything, target, bce_weight=1.0) - airway_loss(right, target, bce_weight=1.0))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    assert with_bce - dice_gap == pytest.approx(float(bce(everything, target) - bce(right, target)), rel=1e-5)
    assert with_bce > dice_gap + 4  # 3/4 of the voxels wrong by 6 logits each


# ---------------------------------------------------------------- augmentation


def _blobs(shape=(24, 24, 24), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    field = gaussian_blur(torch.rand(1, *shape, generator=g), 3.0)
    return (field - field.min()) / (field.max() - field.min())


def test_affine_follows_documented_direction():
    x = torch.arange(5 * 5 * 5, dtype=torch.float32).reshape(1, 5, 5, 5)
    image, label = affine_pair(x, x.clone(), rotation_scale_matrix((90, 0, 0), 1.0))
    assert torch.allclose(image, torch.rot90(x, -1, dims=(2, 3)), atol=1e-3)
    assert torch.equal(label, torch.rot90(x, -1, dims=(2, 3)))
    image, _ = affine_pair(x, x.clone(), torch.eye(3, dtype=torch.float64))
    assert torch.allclose(image, x, atol=1e-4)


def test_joint_spatial_transform_keeps_label_on_image():
    image = _blobs()
    t = float(image.median())
    label = (image > t).float()
    matrix = rotation_scale_matrix((12.0, -8.0, 15.0), 1.1)
    new_image, new_label = affine_pair(image, label, matrix)
    assert set(torch.unique(new_label).tolist()) <= {0.0, 1.0}
    assert 0.3 < float(new_label.mean()) < 0.7
    mismatch = (new_image > t) != (new_label > 0.5)
    assert float(mismatch.float().mean()) < 0.06  # only interpolation boundaries differ...
    away = (new_image - t).abs() > 0.1
    assert not bool(mismatch[away].any())
    unmoved = (new_image > t) != (label > 0.5)  # ...whereas a label left as it was is far off
    assert float(unmoved.float().mean()) > 4 * float(mismatch.float().mean())
    # Random flips and affines through the generator-driven path, several draws.
    config = AugmentConfig(flip_p=0.5, affine_p=1.0)
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        a, b = spatial_augment(image, label, g, config)
        assert float(((a > t) != (b > 0.5)).float().mean()) < 0.06


def test_augment_batch_is_reproducible_and_keeps_labels_binary():
    images = torch.stack([_blobs(seed=1), _blobs(seed=2)])
    labels = (images > 0.5).float()
    config = AugmentConfig(affine_p=0.5, gamma_p=1.0, bias_p=1.0, blur_p=1.0, noise_p=1.0)
    a = augment_batch(images, labels, torch.Generator().manual_seed(7), config)
    b = augment_batch(images, labels, torch.Generator().manual_seed(7), config)
    c = augment_batch(images, labels, torch.Generator().manual_seed(8), config)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == images.shape and set(torch.unique(a[1]).tolist()) <= {0.0, 1.0}
    none = augment_batch(images, labels, torch.Generator().manual_seed(7), AugmentConfig.none())
    assert torch.equal(none[0], images) and torch.equal(none[1], labels)


# ---------------------------------------------------------------- sampling and schedule


def test_window_and_grid_cover_the_volume():
    assert window_starts(100, 32, 24) == [0, 24, 48, 68]
    assert window_starts(20, 32, 24) == [0]
    assert len(grid_starts((100, 40, 20), (32, 32, 32), (24, 16, 16))) == 4 * 2 * 1
    assert scaled_train_stride((80, 192, 304)) == (64, 96, 152)
    assert scaled_train_stride((64, 96, 96)) == (51, 48, 48)


def test_read_patch_pads_outside():
    a = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    p = read_patch(a, (-1, 1, 0), (4, 4, 4), fill=-5)
    assert p.shape == (4, 4, 4)
    assert np.all(p[0] == -5) and np.all(p[:, 2:] == -5) and np.all(p[..., 3] == -5)
    assert np.array_equal(p[1:, :2, :3], a[:, 1:, :])


def test_epoch_patches_reproducible_with_foreground_oversampling():
    shapes = [(40, 64, 64), (48, 64, 80)]
    fg = [np.array([[20, 30, 30]]), np.zeros((0, 3), dtype=int)]
    a = epoch_patches(shapes, fg, (16, 32, 32), (16, 32, 32), 50, seed=1, epoch=0, fg_fraction=0.5)
    assert a == epoch_patches(shapes, fg, (16, 32, 32), (16, 32, 32), 50, seed=1, epoch=0, fg_fraction=0.5)
    assert a != epoch_patches(shapes, fg, (16, 32, 32), (16, 32, 32), 50, seed=1, epoch=1, fg_fraction=0.5)
    assert len(a) == 50
    forced = epoch_patches(shapes, fg, (16, 32, 32), (16, 32, 32), 20, seed=1, epoch=0, fg_fraction=1.0)
    for ref in forced:
        assert ref.case == 0
        assert all(s <= c < s + p for s, c, p in zip(ref.start, (20, 30, 30), (16, 32, 32)))
        assert all(0 <= s <= n - p for s, n, p in zip(ref.start, shapes[0], (16, 32, 32)))


def test_step_schedule_matches_thesis():
    lrs = [learning_rate(e, 60, 3e-3) for e in range(60)]
    assert lrs[0] == lrs[9] == 3e-3
    assert lrs[10] == pytest.approx(3e-4) and lrs[19] == pytest.approx(3e-4)
    assert lrs[20] == pytest.approx(3e-5) and lrs[39] == pytest.approx(3e-5)
    assert lrs[40] == pytest.approx(3e-6) and lrs[59] == pytest.approx(3e-6)
    assert learning_rate(0, 2, 3e-3) == 3e-3
    short = [learning_rate(e, 50, 3e-3, (0.6, 0.85)) for e in range(50)]  # the shipped recipe's schedule
    assert short[29] == 3e-3 and short[30] == pytest.approx(3e-4) and short[41] == pytest.approx(3e-4)
    assert short[42] == pytest.approx(3e-5) and short[49] == pytest.approx(3e-5)


def test_non_finite_gradients_are_detected():
    model = torch.nn.Linear(2, 1)
    assert finite_gradients(model)  # no gradients yet
    model(torch.ones(1, 2)).sum().backward()
    assert finite_gradients(model)
    model.weight.grad[0, 0] = float("nan")
    assert not finite_gradients(model)


def test_mixed_precision_choice_and_float32_loss_inputs():
    assert autocast_precision(torch.device("cpu"), amp=False) is None
    assert autocast_precision(torch.device("cuda"), amp=True) == torch.float16
    expected = torch.bfloat16 if cpu_has_native_bf16() else None
    assert autocast_precision(torch.device("cpu"), amp=True) == expected
    output = AirwayOutput(torch.ones(1, dtype=torch.bfloat16), (torch.zeros(2, dtype=torch.bfloat16),))
    converted = as_float32(output)
    assert isinstance(converted, AirwayOutput)
    assert converted.logits.dtype == converted.decoder_features[0].dtype == torch.float32


def _toy_problem() -> tuple[AirwayUNet, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    """A small U-Net, its optimiser, and four blob images labelled above their median (learnable)."""
    torch.manual_seed(0)
    model = AirwayUNet(width=0.25)
    images = torch.stack([_blobs((16, 16, 32), seed=s) for s in range(4)])
    labels = (images > images.flatten(1).median(1).values.reshape(-1, 1, 1, 1, 1)).float()
    return model, torch.optim.Adam(model.parameters(), lr=3e-3), images, labels


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bfloat16")
def test_bfloat16_steps_learn_the_toy_problem_like_float32():
    """Training steps under CPU bfloat16 autocast (the shipped recipe's precision) still learn."""
    model, optimizer, images, labels = _toy_problem()
    before = float(airway_loss(model(images), labels).detach())
    for step in range(30):
        pick = [step % 4, (step + 1) % 4]
        with autocast(torch.device("cpu"), torch.bfloat16):
            logits = model(images[pick])
        assert logits.dtype == torch.bfloat16
        loss = airway_loss(as_float32(logits), labels[pick])
        optimizer.zero_grad()
        loss.backward()
        if finite_gradients(model):  # as the training loop does: a non-finite bfloat16 step is skipped
            optimizer.step()
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    assert float(airway_loss(model(images), labels).detach()) < 0.5 * before


# ---------------------------------------------------------------- lung crop and dataset


def test_lung_crop_box_on_phantom_chest():
    shape = (40, 64, 64)
    z, y, x = np.indices(shape)
    ct = np.full(shape, -1000.0, dtype=np.float32)
    ct[((y - 32) / 28) ** 2 + ((x - 32) / 30) ** 2 < 1] = 40.0
    for cx in (19, 45):
        ct[((z - 20) / 14) ** 2 + ((y - 32) / 14) ** 2 + ((x - cx) / 9) ** 2 < 1] = -850.0
    box = lung_crop_box(Volume(ct, (3.0, 3.0, 3.0)))  # two 200 ml lungs
    lungs = np.argwhere(ct == -850.0)
    # The inference pipeline's 10 mm margin = 4 voxels of 3 mm.
    expected = [(int(lo) - 4, int(hi) + 1 + 4) for lo, hi in zip(lungs.min(0), lungs.max(0))]
    assert [(s.start, s.stop) for s in box] == expected
    assert expected[2][0] > 2 and expected[2][1] < 62  # narrower than the body, so the crop is real
    no_lungs = lung_crop_box(Volume(np.full((8, 16, 16), 40.0, dtype=np.float32)))
    assert [(s.start, s.stop) for s in no_lungs] == [(0, 8), (0, 16), (0, 16)]


def _tiny_dataset(root: Path, n: int = 3, shape=(32, 40, 40)) -> Path:
    """Tubes of air in soft tissue, written in the ATM'22 / nnU-Net layout."""
    rng = np.random.default_rng(0)
    z, y, x = np.indices(shape)
    for i in range(n):
        ct = 40.0 + rng.normal(0, 20, shape).astype(np.float32)
        tube = (y - 18 - 2 * i) ** 2 + (x - 20 + i) ** 2 < 16
        ct[tube] = -950.0
        write_volume(Volume(ct, (0.8, 0.8, 1.0)), root / "imagesTr" / f"ATM_{900 + i}_0000.nii.gz")
        write_volume(Volume(tube.astype(np.uint8), (0.8, 0.8, 1.0)), root / "labelsTr" / f"ATM_{900 + i}.nii.gz")
    return root


def test_list_and_split_cases(tmp_path):
    data = _tiny_dataset(tmp_path / "data")
    cases = list_cases(data)
    assert [c.id for c in cases] == ["ATM_900", "ATM_901", "ATM_902"]
    train, val = split_cases(cases, None, seed=0)
    assert len(train) == 2 and len(val) == 1
    with pytest.raises(InputError):
        split_cases(cases, 3, seed=0)
    with pytest.raises(InputError):
        list_cases(tmp_path / "missing")


# ---------------------------------------------------------------- training runs


def _cli(argv: list[str]) -> int:
    from clinseg.cli import train as train_cli

    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _args(data: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    return [
        "train", "airway", "--data", str(data), "--out", str(out), "--variant", "ad_frl", "--width", "0.25",
        "--patch", "32,32,32", "--epochs", str(epochs), "--iters-per-epoch", "2", "--batch", "2", "--device", "cpu",
        "--seed", "5", "--precision", "float32", *extra,  # exact: bfloat16 steps may be skipped
    ]  # fmt: skip


def _rows(out: Path) -> list[dict]:
    with open(out / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_tiny_training_run_checkpoints_logs_exports_and_resumes(tmp_path, capsys):
    from safetensors import safe_open

    data = _tiny_dataset(tmp_path / "data")
    out = tmp_path / "run"
    assert _cli(_args(data, out, 2)) == 0
    assert (out / "checkpoints" / "last.pt").is_file()
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and {"model", "optimizer", "scaler", "rng"} <= set(state)
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(r["iterations"] == "2" for r in rows)
    assert all(0 <= float(r["train_loss"]) <= 1.5 and 0 <= float(r["val_dice"]) <= 1 for r in rows)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        meta = f.metadata()
        weights = {k: f.get_tensor(k) for k in f.keys()}
    model = AirwayUNet(**json.loads(meta["network_kwargs"]))
    model.load_state_dict(weights)
    assert meta["variant"] == "ad_frl" and meta["epochs"] == "2"

    with pytest.raises(InputError, match="not empty"):
        _cli(_args(data, out, 2))
    with pytest.raises(InputError, match="different settings"):
        _cli([*_args(data, out, 3), "--resume", "--width", "0.5"])

    capsys.readouterr()
    assert _cli([*_args(data, out, 3), "--resume"]) == 0
    printed = capsys.readouterr()
    assert "resumed after epoch 2" in printed.err
    assert "epochs: 3" in printed.out
    resumed = _rows(out)
    assert [r["epoch"] for r in resumed] == ["1", "2", "3"]
    assert resumed[:2] == rows
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 3


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    """Bit-exact in float32 (oneDNN's bfloat16 kernels are not deterministic run to run, resumed or not)."""
    data = _tiny_dataset(tmp_path / "data")
    config = dict(variant="ad", width=0.25, patch=(32, 32, 32), batch=2, iters_per_epoch=2, seed=3, val_count=1)
    cpu = torch.device("cpu")
    run_training(data, tmp_path / "a", AirwayTrainConfig(**config), 2, cpu, amp=False, log=lambda line: None)

    class Interrupt(Exception):
        pass

    def stop_after_first_epoch(line: str) -> None:
        if line.startswith("epoch=1 "):
            raise Interrupt

    with pytest.raises(Interrupt):
        run_training(data, tmp_path / "b", AirwayTrainConfig(**config), 2, cpu, amp=False, log=stop_after_first_epoch)
    assert not (tmp_path / "b" / "model.safetensors").exists()
    run_training(data, tmp_path / "b", AirwayTrainConfig(**config), 2, cpu, resume=True, amp=False,
                 log=lambda line: None)  # fmt: skip
    a, b = _weights(tmp_path / "a" / "model.safetensors"), _weights(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)

    def without_time(rows):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert without_time(_rows(tmp_path / "a")) == without_time(_rows(tmp_path / "b"))


def test_time_budget_stops_after_a_checkpointed_partial_epoch(tmp_path):
    data = _tiny_dataset(tmp_path / "data", n=2)
    config = AirwayTrainConfig(width=0.25, patch=(32, 32, 32), batch=1, iters_per_epoch=3, val_count=1)
    out = tmp_path / "run"
    summary = run_training(data, out, config, 5, torch.device("cpu"), max_minutes=1e-9, log=lambda line: None)
    assert summary.stopped_early and summary.epochs_done == 1
    assert [(r["epoch"], r["iterations"]) for r in _rows(out)] == [("1", "1")]
    assert (out / "model.safetensors").is_file()
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1


def test_bad_arguments_are_input_errors(tmp_path):
    data = _tiny_dataset(tmp_path / "data", n=2)
    cpu = torch.device("cpu")
    for bad in (dict(patch=(32, 32, 40)), dict(variant="unet"), dict(width=0.0), dict(frl="learned")):
        with pytest.raises(InputError):
            run_training(data, tmp_path / "run", AirwayTrainConfig(**bad), 1, cpu, log=lambda line: None)
    with pytest.raises(InputError, match="nothing to resume"):
        run_training(data, tmp_path / "new", AirwayTrainConfig(), 1, cpu, resume=True, log=lambda line: None)
    assert not (tmp_path / "run").exists()


def test_cases_are_resampled_to_the_training_spacing(tmp_path):
    data = _tiny_dataset(tmp_path / "data", n=1)  # 40 x 40 x 32 voxels at 0.8 x 0.8 x 1.0 mm, tube of ~16 px^2
    (case,) = list_cases(data)
    native = prepare_case(case, tmp_path / "cache")
    coarse = prepare_case(case, tmp_path / "cache", (1.6, 1.6, 2.0))
    assert native.image.shape == (32, 40, 40) and coarse.image.shape == (16, 20, 20)
    assert native.label.dtype == coarse.label.dtype == np.uint8 and set(np.unique(coarse.label)) == {0, 1}
    # the tube keeps its volume in mm^3 (within partial-volume rounding at 4x coarser voxels)
    native_mm3 = native.label.sum() * 0.8 * 0.8 * 1.0
    assert coarse.label.sum() * 1.6 * 1.6 * 2.0 == pytest.approx(native_mm3, rel=0.25)
    # air (-950 HU) inside, tissue outside; the tube's rim is partial volume at 1.6 mm
    assert float(np.median(coarse.image[coarse.label > 0])) < 0.1 < float(np.median(coarse.image[coarse.label == 0]))
    # each spacing has its own cache entry, so a run at another spacing never reads these crops
    assert prepare_case(case, tmp_path / "cache").image.shape == (32, 40, 40)


def test_spacing_is_recorded_and_checked(tmp_path, capsys):
    data = _tiny_dataset(tmp_path / "data", n=2)
    out = tmp_path / "run"
    assert _cli(_args(data, out, 1, "--spacing", "1.6", "--val-cases", "1")) == 0
    assert json.loads((out / "run.json").read_text())["spacing"] == [1.6, 1.6, 1.6]
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert "resampled to [1.6, 1.6, 1.6] mm" in f.metadata()["preprocessing"]
    with pytest.raises(InputError, match="different settings \\(spacing\\)"):
        _cli(_args(data, out, 2, "--spacing", "0.8", "--val-cases", "1", "--resume"))
    with pytest.raises(InputError, match="different settings \\(spacing\\)"):  # nor dropped
        _cli(_args(data, out, 2, "--val-cases", "1", "--resume"))
    with pytest.raises(InputError, match="--spacing"):
        run_training(data, tmp_path / "bad", AirwayTrainConfig(spacing=(0.0, 1.0, 1.0)), 1, torch.device("cpu"),
                     log=lambda line: None)


def test_tubed_skeleton_is_a_thin_tube_inside_the_label(tmp_path):
    data = _tiny_dataset(tmp_path / "data", n=1)  # a straight tube of radius 4 px along the 32 slices
    (case,) = list_cases(data)
    prepared = prepare_case(case, tmp_path / "cache", skeleton=True)
    tube, label = np.asarray(prepared.skeleton), np.asarray(prepared.label)
    assert tube.dtype == np.uint8 and not (tube & (1 - label)).any()  # inside the label
    per_slice = tube.sum(axis=(1, 2))[4:-4]  # away from the ends, a 3 x 3 cross-section along the whole tube
    assert per_slice.min() >= 5 and per_slice.max() <= 9 and label.sum(axis=(1, 2))[4:-4].min() >= 45
    assert prepare_case(case, tmp_path / "cache").skeleton is None  # only built when asked for


def test_skeleton_recall_run_records_its_weight_and_resumes_only_with_it(tmp_path):
    data = _tiny_dataset(tmp_path / "data", n=2)
    out = tmp_path / "run"
    shared = tmp_path / "shared-cache"
    assert _cli(_args(data, out, 1, "--skeleton-recall", "1", "--val-cases", "1", "--cache", str(shared))) == 0
    assert json.loads((out / "run.json").read_text())["skeleton_recall"] == 1.0
    assert list(shared.rglob("*.skeleton.npy")) and not (out / "cache").exists()  # --cache: prepared cases there
    rows = _rows(out)
    assert rows[0]["iterations"] == "2" and 0 <= float(rows[0]["train_dice"]) <= 1  # Dice on the label channel only
    with pytest.raises(InputError, match="different settings \\(skeleton_recall\\)"):
        _cli(_args(data, out, 2, "--val-cases", "1", "--resume"))
    assert not {"skeleton_recall", "bce"} & set(AirwayTrainConfig().describe())  # older runs resume unchanged
    assert AirwayTrainConfig(bce=0.5).describe()["bce"] == 0.5
    with pytest.raises(InputError, match="--skeleton-recall"):
        AirwayTrainConfig(skeleton_recall=-1).check()
    with pytest.raises(InputError, match="--bce"):
        AirwayTrainConfig(bce=11).check()


def test_centerline_sampling_draws_thin_branches_as_often_as_thick_ones(tmp_path):
    from clinseg.train.airway import AirwayTask

    shape = (32, 48, 48)
    z, y, x = np.indices(shape)
    thick = (y - 14) ** 2 + (x - 14) ** 2 < 36  # two parallel tubes of equal length, radii 6 and 1.5 voxels
    thin = (y - 34) ** 2 + (x - 34) ** 2 < 2.5
    ct = np.full(shape, 40.0, dtype=np.float32)
    ct[thick | thin] = -950.0
    root = tmp_path / "data"
    write_volume(Volume(ct, (1.0, 1.0, 1.0)), root / "imagesTr" / "ATM_900_0000.nii.gz")
    write_volume(Volume((thick | thin).astype(np.uint8), (1.0, 1.0, 1.0)), root / "labelsTr" / "ATM_900.nii.gz")
    (case,) = list_cases(root)
    prepared = prepare_case(case, tmp_path / "cache", skeleton=True)
    from scipy import ndimage

    tubes, count = ndimage.label(np.asarray(prepared.label))
    sizes = np.bincount(tubes.ravel())[1:]
    assert count == 2 and sizes.max() > 10 * sizes.min()
    thin_id = int(np.argmin(sizes)) + 1

    def thin_share(fg_points: str) -> float:
        task = AirwayTask(AirwayTrainConfig(patch=(16, 16, 16), fg_points=fg_points), [prepared], [])
        (points,) = task.forced_points
        assert np.asarray(prepared.skeleton if fg_points == "centerline" else prepared.label)[tuple(points.T)].all()
        return float(np.mean(tubes[tuple(points.T)] == thin_id))

    assert thin_share("voxels") < 0.1  # by volume the thick tube dominates
    assert 0.3 < thin_share("centerline") < 0.7  # by length the two are alike
    config = AirwayTrainConfig(fg_points="centerline")
    assert config.needs_skeleton and config.describe()["fg_points"] == "centerline"
    assert "fg_points" not in AirwayTrainConfig().describe()  # older runs resume unchanged
    with pytest.raises(InputError, match="--fg-points"):
        AirwayTrainConfig(fg_points="skeleton").check()
    with pytest.raises(InputError, match="--fg-fraction"):
        AirwayTrainConfig(fg_fraction=1.5).check()
    with pytest.raises(ValueError, match="without its skeleton"):
        AirwayTask(config, [prepare_case(case, tmp_path / "cache")], [])
    out = tmp_path / "run"  # the command line prepares the skeletons it needs, and records the choice
    assert _cli(_args(_tiny_dataset(tmp_path / "tiny", n=2), out, 1, "--fg-points", "centerline", "--fg-fraction",
                      "0.5", "--val-cases", "1")) == 0  # fmt: skip
    assert json.loads((out / "run.json").read_text())["fg_points"] == "centerline"
    assert list((out / "cache").rglob("*.skeleton.npy"))


def test_loss_decreases_on_a_learnable_toy_problem():
    model, optimizer, images, labels = _toy_problem()

    def held_out_loss() -> float:
        with torch.no_grad():
            return float(airway_loss(model(images), labels))

    before = held_out_loss()
    for step in range(30):
        pick = [step % 4, (step + 1) % 4]
        loss = airway_loss(model(images[pick]), labels[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out_loss()
    assert before > 0.3
    assert after < 0.5 * before


def test_init_starts_from_given_weights_records_them_and_refuses_a_misfit(tmp_path):
    from clinseg.registry.store import sha256_file

    data = _tiny_dataset(tmp_path / "data", n=2)
    first = tmp_path / "first"
    assert _cli(_args(data, first, 1, "--val-cases", "1")) == 0
    weights = first / "model.safetensors"
    # learning rate 0: the run ends where it started, so its export equals the starting weights exactly
    tuned = tmp_path / "tuned"
    assert _cli(_args(data, tuned, 1, "--val-cases", "1", "--lr", "0", "--init", str(weights))) == 0
    a, b = _weights(weights), _weights(tuned / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tuned / "run.json").read_text())["init"] == f"model.safetensors sha256:{sha256_file(weights)}"
    fresh = tmp_path / "fresh"  # the control: without --init the same run starts from the seed's weights
    assert _cli(_args(data, fresh, 1, "--val-cases", "1", "--lr", "0")) == 0
    assert not all(torch.equal(a[k], v) for k, v in _weights(fresh / "model.safetensors").items())

    with pytest.raises(InputError, match="does not fit this network"):
        _cli(_args(data, tmp_path / "wide", 1, "--val-cases", "1", "--width", "0.5", "--init", str(weights)))
    assert not (tmp_path / "wide").exists()  # refused before anything was written
    with pytest.raises(InputError, match="neither a .safetensors file nor a loadable model"):
        _cli(_args(data, tmp_path / "unknown", 1, "--init", "no-such-model"))
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(InputError, match="cannot be read as safetensors"):
        _cli(_args(data, tmp_path / "broken", 1, "--init", str(tmp_path / "broken.safetensors")))


def test_init_from_the_shipped_model_is_hash_checked():
    from clinseg.registry.store import get_registry
    from clinseg.train.init import initial_weights

    card = get_registry().card("airway-unet-phantom")
    state, provenance = initial_weights("airway-unet-phantom")
    assert provenance == f"airway-unet-phantom {card.version} sha256:{card.files[0].sha256}"
    assert sum(v.numel() for v in state.values()) == card.parameter_count


def test_publishing_a_fine_tuned_run_keeps_both_training_records(tmp_path):
    from helpers_airway import load_bench

    from clinseg.registry.card import validate_card
    from clinseg.registry.store import get_registry

    publish = load_bench("publish_airway_model", folder="scripts")
    data = _tiny_dataset(tmp_path / "data", n=2)
    run = tmp_path / "tuned"
    argv = [*_args(data, run, 1, "--val-cases", "1", "--init", "airway-unet-phantom", "--skeleton-recall", "0.1",
                   "--fg-points", "centerline")]  # fmt: skip
    argv[argv.index("ad_frl")], argv[argv.index("0.25")] = "ad", "0.5"  # the shipped model's variant and width
    assert _cli(argv) == 0
    card = publish.build_card(run, run / "model.safetensors", None, None, "airway-tuned", "1.1.0")
    assert validate_card(card) == [] and card["version"] == "1.1.0"
    shipped = get_registry().card("airway-unet-phantom").to_dict()
    assert card["training"]["base"] == shipped["training"]  # the first stage's record, curves included
    assert card["training"]["fine_tuned_from"].startswith("airway-unet-phantom ")
    base_steps = shipped["training"].get("total_steps", shipped["training"]["steps"])  # itself fine-tuned or not
    assert card["training"]["total_steps"] == 2 + base_steps
    earlier = publish.fine_tuning_steps(shipped["training"])  # the shipped model's own fine-tuning stages
    assert earlier and earlier[-1] == shipped["training"]["steps"]  # 1.1.0 on: fine-tuned 320 steps per stage
    stages = " + ".join(f"{n:,}" for n in [*earlier, 2])
    assert card["training"]["steps"] == 2
    assert f"fine-tuned for {stages} steps from airway-unet-phantom" in card["description"]
    (cuboid,) = [d for d in card["document"]["deviations"] if d["setting"] == "cuboid"]
    assert "centred on the airway's centreline" in cuboid["ours"]
    (loss,) = [d for d in card["document"]["deviations"] if d["setting"] == "loss"]
    assert loss["ours"].endswith("+ 0.1 x skeleton recall")
    run_settings = json.loads((run / "run.json").read_text())  # a run from another version of the model: refused
    older = {**run_settings, "init": run_settings["init"].replace(f" {shipped['version']} ", " 0.9.0 ")}
    with pytest.raises(ValueError, match="started from airway-unet-phantom 0.9.0"):
        publish.base_training(older)
