"""The thesis airway U-Net: parameter counts of the author's code, shapes, AD outputs, FRL arithmetic."""

from __future__ import annotations

import pytest
import torch
from helpers_airway import one_torch_thread  # noqa: F401  (autouse: one torch thread per test)

from clinseg.nets.airway_unet import AirwayOutput, AirwayUNet, FeatureReLearning, count_parameters, scaled_widths


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, 4_117_969),  # thesis baseline (author's code: non-affine InstanceNorm3d)
        ({"frl": "fixed"}, 4_230_352),  # thesis + FRL, tied to an 80x192x304 input
        ({"frl": "adaptive"}, 4_228_129),  # gates only: 4,230,352 - 2,223 axis-squeeze weights
        ({"width": 0.5}, 1_029_961),
        ({"width": 0.5, "frl": "adaptive"}, 1_057_777),
        ({"width": 0.25}, 257_725),
    ],
)
def test_parameter_counts(kwargs, expected):
    assert count_parameters(AirwayUNet(**kwargs)) == expected


def test_attention_distillation_adds_no_parameters():
    assert count_parameters(AirwayUNet(attention_distillation=True)) == 4_117_969


def test_fixed_frl_count_follows_its_input_size():
    # Per FRL block the squeezes hold (D + 1) + (H + 1) + (W + 1) weights at that block's level.
    small = count_parameters(AirwayUNet(width=0.25, frl="fixed", frl_input_size=(16, 32, 48)))
    levels = [(16, 32, 48), (8, 16, 24), (4, 8, 12), (2, 4, 6), (1, 2, 3), (2, 4, 6), (4, 8, 12), (8, 16, 24)]
    levels.append((16, 32, 48))
    squeezes = sum(d + h + w + 3 for d, h, w in levels)
    assert small == count_parameters(AirwayUNet(width=0.25, frl="adaptive")) + squeezes


def test_widths_scale():
    assert scaled_widths(1.0) == (16, 32, 64, 128, 256)
    assert scaled_widths(0.5) == (8, 16, 32, 64, 128)
    with pytest.raises(ValueError):
        scaled_widths(0)


@pytest.mark.parametrize("size", [(32, 32, 32), (32, 16, 48), (16, 48, 32)])
@pytest.mark.parametrize("variant", ["baseline", "ad", "ad_frl"])
def test_forward_shapes(size, variant):
    torch.manual_seed(0)
    model = AirwayUNet(
        width=0.25, attention_distillation=variant != "baseline", frl="adaptive" if variant == "ad_frl" else None
    )
    x = torch.rand(2, 1, *size)
    model.train()
    out = model(x)
    if variant == "baseline":
        assert isinstance(out, torch.Tensor) and out.shape == (2, 1, *size)
    else:
        assert isinstance(out, AirwayOutput)
        assert out.logits.shape == (2, 1, *size)
        channels = [32, 16, 8, 4]  # conv6..conv9 at width 0.25
        for level, (feature, c) in enumerate(zip(out.decoder_features, channels)):
            factor = 2 ** (3 - level)
            assert feature.shape == (2, c, *(s // factor for s in size))
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 1, *size)


def test_fixed_frl_forward_and_size_tie():
    model = AirwayUNet(width=0.25, attention_distillation=True, frl="fixed", frl_input_size=(16, 32, 48)).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 16, 32, 48)).shape == (1, 1, 16, 32, 48)
        with pytest.raises(ValueError, match="fixed-size FRL"):
            model(torch.rand(1, 1, 16, 32, 32))
    with pytest.raises(ValueError, match="multiples of 16"):
        AirwayUNet(frl="fixed", frl_input_size=(80, 192, 300))


def test_input_size_must_be_multiple_of_16():
    with pytest.raises(ValueError, match="multiples of 16"):
        AirwayUNet(width=0.25)(torch.rand(1, 1, 16, 16, 24))


def test_fixed_frl_integration_is_the_learned_axis_sums():
    torch.manual_seed(1)
    d, h, w = 3, 4, 5
    frl = FeatureReLearning(6, "fixed", (d, h, w))
    x = torch.randn(2, 6, d, h, w)
    wd, bd = frl.depth_squeeze.weight.reshape(-1), frl.depth_squeeze.bias
    wh, bh = frl.height_squeeze.weight.reshape(-1), frl.height_squeeze.bias
    ww, bw = frl.width_squeeze.weight.reshape(-1), frl.width_squeeze.bias
    # Independent formulation: weighted sums over two axes, inner squeeze's bias scaled by the outer weights.
    keep_d = torch.einsum("bcdhw,h,w->bcd", x, wh, ww) + bh * ww.sum() + bw
    keep_h = torch.einsum("bcdhw,d,w->bch", x, wd, ww) + bd * ww.sum() + bw
    keep_w = torch.einsum("bcdhw,d,h->bcw", x, wd, wh) + bd * wh.sum() + bh
    expected = keep_d[..., :, None, None] + keep_h[..., None, :, None] + keep_w[..., None, None, :]
    torch.testing.assert_close(frl.integrate(x), expected, rtol=1e-5, atol=1e-5)
    gate = frl.gate(expected).detach()
    torch.testing.assert_close(frl(x), x * gate, rtol=1e-5, atol=1e-5)
    assert float(gate.min()) > 0 and float(gate.max()) < 1


def test_adaptive_frl_is_size_free_means():
    frl = FeatureReLearning(4, "adaptive")
    x = torch.randn(1, 4, 2, 3, 5)
    z = frl.integrate(x)
    expected = x.mean((3, 4))[..., None, None] + x.mean((2, 4))[..., None, :, None] + x.mean((2, 3))[..., None, None, :]
    torch.testing.assert_close(z, expected)
    assert frl(torch.randn(1, 4, 6, 2, 7)).shape == (1, 4, 6, 2, 7)
