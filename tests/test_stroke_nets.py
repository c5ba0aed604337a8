"""Stroke networks (D-UNet, AGMR-Net, TSRL-Net): parameter counts, FLOPs, shapes, slice stacks, losses, overfit."""

from __future__ import annotations

import math

import pytest
import torch
from helpers_airway import one_torch_thread  # noqa: F401  (autouse: one torch thread per test)
from torch import nn

from clinseg.nets.stroke import (
    AGMRNet,
    CoarsePatchAttention,
    DecoderStage,
    DUNet,
    StrokeOutput,
    TSRLNet,
    slice_stacks,
)
from clinseg.train.stroke_losses import (
    agmr_loss,
    cpa_bce,
    cpa_targets,
    focal_loss,
    focus_map,
    log_dice_loss,
    sobel_loss,
    target_aware_loss,
    tsrl_loss,
)

DOCUMENT_PARAMS = {DUNet: 9_503_779, AGMRNet: 23_799_283, TSRLNet: 12_854_496}


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ---- the networks ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "expected", "max_gap"), [
    (DUNet, 9_503_779, 0.0),  # the document's figure exactly
    (AGMRNet, 23_798_641, 0.0001),  # 642 below
    (TSRLNet, 12_658_005, 0.016),  # 196,491 below: the thesis does not say what replaces the MDU
])
def test_parameter_counts_width_1(cls, expected, max_gap):
    count = n_params(cls())
    assert count == expected
    assert abs(count - DOCUMENT_PARAMS[cls]) / DOCUMENT_PARAMS[cls] <= max_gap


@pytest.mark.parametrize(("cls", "expected"), [(DUNet, 596_875), (AGMRNet, 1_497_253), (TSRLNet, 801_057)])
def test_parameter_counts_quick_width(cls, expected):
    assert n_params(cls(width=0.25)) == expected


def _thop_style_flops(net: nn.Module, x: torch.Tensor) -> int:
    """FLOPs as the thop profiler counts them: conv MACs + 1 per bias, 2 per BatchNorm element, Linear MACs."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d):
            per_output = module.in_channels // module.groups * module.weight[0, 0].numel()
            total += output.numel() * (per_output + (module.bias is not None))
        elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm3d):
            total += 2 * inputs[0].numel()
        elif isinstance(module, nn.Linear):
            total += module.in_features * output.numel()

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    with torch.no_grad():
        net.eval()(x)
    for h in handles:
        h.remove()
    return total


def test_dunet_flops_match_the_document():
    # The document's 18,089,374,976 FLOPs (Table 4.3) for one 4 x 192 x 192 stack, to the last unit.
    assert _thop_style_flops(DUNet(), torch.zeros(1, 4, 192, 192)) == 18_089_374_976


@pytest.mark.parametrize("cls", [DUNet, AGMRNet, TSRLNet])
@pytest.mark.parametrize("size", [192, 96])
def test_output_shapes(cls, size):
    torch.manual_seed(0)
    out = cls(width=0.25).eval()(torch.rand(2, 4, size, size))
    assert isinstance(out, StrokeOutput)
    assert out.logits.shape == (2, 1, size, size)
    assert torch.isfinite(out.logits).all()
    if cls is DUNet:
        assert out.cpa_logits == () and out.side_logits == ()
    else:
        assert [tuple(z.shape) for z in out.cpa_logits] == [(2, 1, 6, 6)] * 5
    expected_sides = [(2, 1, size // 8, size // 8), (2, 1, size // 4, size // 4), (2, 1, size // 2, size // 2),
                      (2, 1, size, size)] if cls is TSRLNet else []
    assert [tuple(z.shape) for z in out.side_logits] == expected_sides


def test_input_checks():
    net = DUNet(width=0.25)
    with pytest.raises(ValueError, match="slice stack"):
        net(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="multiples of 16"):
        net(torch.zeros(1, 4, 40, 32))


def test_cpa_weights_whole_patches():
    torch.manual_seed(0)
    cpa = CoarsePatchAttention()
    x = torch.rand(1, 3, 48, 48) + 0.5
    out, logits = cpa(x)
    gain = out / x - 1.0  # the attention map A, since out = A * F + F
    blocks = gain[0, 0].reshape(6, 8, 6, 8)  # 6 x 6 patches of 8 x 8 pixels
    assert torch.allclose(blocks, blocks[:, :1, :, :1].expand_as(blocks), atol=1e-6)
    assert torch.allclose(blocks[:, 0, :, 0], torch.sigmoid(logits[0, 0]), atol=1e-6)
    assert torch.allclose(gain[0, 0], gain[0, 2], atol=1e-6)  # the same map for every channel


@pytest.mark.parametrize(("side_bias", "expected"), [(30.0, "positive"), (-30.0, "both")])
def test_crl_combines_positive_and_reverse_attention(side_bias, expected):
    torch.manual_seed(0)
    stage = DecoderStage(8, 4, "deconv", side=True, dropout=0.0).eval()
    nn.init.zeros_(stage.side.weight)
    nn.init.constant_(stage.side.bias, side_bias)  # P = 1 (all found) or P = 0 (nothing found yet)
    x, skip = torch.rand(1, 8, 4, 4), torch.rand(1, 4, 8, 8)
    positive = torch.rand(1, 1, 8, 8)
    out, side = stage(x, skip, positive)
    with torch.no_grad():
        up = torch.relu(stage.reduce(stage.up(x)))
        crl = skip * positive if expected == "positive" else skip * positive + skip * skip
        assert torch.allclose(out, stage.block(torch.cat([crl, up], dim=1)), atol=1e-5)
    assert side.shape == (1, 1, 8, 8)


# ---- slice stacks ---------------------------------------------------------------------------------------------


def test_slice_stacks_zero_fill_the_edges():
    volume = torch.arange(1, 6, dtype=torch.float32)[:, None, None].expand(5, 2, 3)  # slice k holds k + 1
    stacks = slice_stacks(volume)
    assert stacks.shape == (5, 4, 2, 3)
    # per stack: the values of slices k-2, k-1, k, k+1 (0 outside the volume)
    expected = [[0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5, 0]]
    assert stacks[:, :, 0, 0].tolist() == expected
    assert (stacks == stacks[:, :, :1, :1]).all()
    with pytest.raises(ValueError):
        slice_stacks(torch.zeros(2, 3))


# ---- losses ---------------------------------------------------------------------------------------------------

# Tiny example: p = 0.5, 0.75, 0.25, 0.5 on a target 1, 1, 0, 0.
_LOGITS = torch.tensor([[[[0.0, math.log(3.0)], [-math.log(3.0), 0.0]]]])
_TARGET = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])


def test_focal_loss_hand_value():
    pixels = [
        -0.75 * 0.5**2 * math.log(0.5),  # lesion, p = 0.5
        -0.75 * 0.25**2 * math.log(0.75),  # lesion, p = 0.75
        -0.25 * 0.25**2 * math.log(0.75),  # background, p = 0.25
        -0.25 * 0.5**2 * math.log(0.5),  # background, p = 0.5
    ]
    assert focal_loss(_LOGITS, _TARGET).item() == pytest.approx(sum(pixels) / 4, rel=1e-5)


def test_log_dice_loss_hand_value():
    # sum pg = 1.25, sum p = 2, sum g = 2, smoothing 1: (2.5 + 1) / (4 + 1)
    assert log_dice_loss(_LOGITS, _TARGET).item() == pytest.approx(-math.log(3.5 / 5.0), rel=1e-5)


def test_sobel_loss_hand_value():
    target = torch.zeros(1, 1, 3, 3)
    target[..., 2] = 1.0  # a vertical unit step: magnitude 1 in columns 1 and 2 (replicate padding), 0 in column 0
    eps = 1e-6
    expected = 6 / 9 * (math.sqrt(1 + eps) - math.sqrt(eps)) ** 2  # a flat prediction has no edges
    assert sobel_loss(torch.zeros(1, 1, 3, 3), target).item() == pytest.approx(expected, rel=1e-5)
    assert sobel_loss(torch.full((1, 1, 3, 3), 3.0), torch.ones(1, 1, 3, 3)).item() == pytest.approx(0.0, abs=1e-9)


def test_cpa_targets_and_bce_hand_value():
    target = torch.zeros(1, 1, 12, 12)
    target[0, 0, 0, 0] = target[0, 0, 7, 11] = 1.0
    prior = cpa_targets(target)
    assert prior.shape == (1, 1, 6, 6)
    assert prior[0, 0].nonzero().tolist() == [[0, 0], [3, 5]]
    zeros = [torch.zeros(1, 1, 6, 6)] * 5
    assert cpa_bce(zeros, target).item() == pytest.approx(5 * math.log(2.0), rel=1e-6)


def test_focus_map_marks_whole_blocks():
    target = torch.zeros(1, 1, 8, 10)
    target[0, 0, 5, 2] = target[0, 0, 1, 9] = 1.0
    focus = focus_map(target, beta=4)
    expected = torch.zeros(8, 10)
    expected[4:8, 0:4] = 1.0
    expected[0:4, 8:10] = 1.0  # the last, partial block column
    assert torch.equal(focus[0, 0], expected)


def test_target_aware_loss_hand_value():
    target = torch.zeros(1, 1, 4, 8)
    target[0, 0, 0, 0] = 1.0  # focus: the left 4 x 4 block (16 pixels at 0.75, 16 at 0.25)
    # p = 0.5 everywhere: p_t = 0.5, (1 - p_t)^2 = 0.25; Dice: 1 - (2 * 0.5 + 1) / (32 * 0.25 + 1 + 1)
    focal = (16 * 0.75 + 16 * 0.25) * 0.25 * math.log(2.0) / 32
    expected = focal + 1.0 - 2.0 / 10.0
    zeros = torch.zeros(1, 1, 4, 8)
    assert target_aware_loss(zeros, target).item() == pytest.approx(expected, rel=1e-6)
    # TSRL total with zero side outputs (at half size, upsampled) and zero CPA logits: 5 TALs + 0.15 * 5 ln 2
    output = StrokeOutput(zeros, (torch.zeros(1, 1, 6, 6),) * 5,
                          (torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 4, 8)) * 2)
    assert tsrl_loss(output, target).item() == pytest.approx(5 * expected + 0.15 * 5 * math.log(2.0), rel=1e-6)


def _disc_target(size: int = 32) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (((yy - 12) ** 2 + (xx - 18) ** 2) < 7**2).float()[None, None]


@pytest.mark.parametrize("loss", [focal_loss, log_dice_loss, sobel_loss, target_aware_loss])
def test_pixel_losses_fall_as_the_prediction_improves(loss):
    target = _disc_target()
    values = [loss(k * (2 * target - 1), target).item() for k in (0.0, 1.0, 3.0, 6.0)]
    assert all(math.isfinite(v) for v in values)
    assert values == sorted(values, reverse=True) and values[0] > values[-1]


def test_network_losses_fall_as_the_prediction_improves():
    target = _disc_target()
    prior_logits = 6 * (2 * cpa_targets(target) - 1)

    def output(k: float) -> StrokeOutput:
        z = k * (2 * target - 1)
        # side outputs at full size: coarse ones, upsampled, could not improve on the disc's edge
        return StrokeOutput(z, (k / 6 * prior_logits,) * 5, (z,) * 4)

    for loss in (agmr_loss, tsrl_loss):
        values = [loss(output(k), target).item() for k in (0.0, 1.0, 3.0, 6.0)]
        assert all(math.isfinite(v) for v in values)
        assert values == sorted(values, reverse=True) and values[0] > values[-1]
    with pytest.raises(ValueError, match="no CPA"):
        agmr_loss(StrokeOutput(target, (), ()), target)


def test_tsrl_overfits_one_disc():
    torch.manual_seed(0)
    size = 96
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = (((yy - 40) ** 2 + (xx - 52) ** 2) < 15**2).float()[None, None]
    image = 0.2 + 0.6 * disc + 0.05 * torch.randn(1, 4, size, size)
    net = TSRLNet(width=0.25)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = tsrl_loss(net(image), disc)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
