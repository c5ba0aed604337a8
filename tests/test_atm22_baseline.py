"""The ATM'22 baseline network: architecture, strict load of the official weights, forward behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinseg.nets import build_network, get_network_class
from clinseg.nets.atm22_baseline import ATM22BaselineUNet

N_PARAMS = 1_022_106


def _official_state(shared):
    path = shared / "models" / "atm22_baseline" / "weight.pth"
    if not path.is_file():
        pytest.skip("ATM'22 baseline weight.pth is absent")
    return torch.load(path, map_location="cpu", weights_only=True)


def test_architecture_matches_published_facts():
    net = ATM22BaselineUNet()
    state = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == N_PARAMS
    assert len(state) == 72
    # first conv of each encoder level: half the width, never fewer than the input channels
    assert [tuple(state[f"EncoderLayer{k}.basic_module.Conv1.conv.weight"].shape[:2]) for k in range(1, 5)] == [
        (8, 1), (16, 16), (32, 32), (64, 64)
    ]
    # decoders see [skip, upsampled] channels
    assert [state[f"DecoderLayer{k}.basic_module.Conv1.conv.weight"].shape[1] for k in range(1, 4)] == [192, 96, 48]
    assert tuple(state["final_conv.weight"].shape) == (2, 16, 1, 1, 1)


def test_lookup_by_class_name():
    assert get_network_class("ATM22BaselineUNet") is ATM22BaselineUNet
    assert get_network_class("atm22_baseline:ATM22BaselineUNet") is ATM22BaselineUNet
    assert isinstance(build_network("ATM22BaselineUNet", {"widths": [16, 32, 64, 128]}), ATM22BaselineUNet)
    with pytest.raises(LookupError):
        get_network_class("NoSuchNet")
    with pytest.raises(ValueError, match="4 levels"):
        ATM22BaselineUNet(widths=(16, 32, 64))


def test_forward_shapes_including_odd_sizes():
    torch.manual_seed(0)
    net = ATM22BaselineUNet().eval()
    with torch.no_grad():
        assert tuple(net(torch.rand(1, 1, 32, 32, 32)).shape) == (1, 2, 32, 32, 32)
        logits = net(torch.rand(1, 1, 20, 17, 33))
    assert tuple(logits.shape) == (1, 2, 20, 17, 33)
    prob = ATM22BaselineUNet.foreground_probability(logits)
    assert torch.equal(prob > 0.5, logits[:, 1] > 0)


def test_official_weights_load_strictly(shared):
    state = _official_state(shared)
    assert sum(v.numel() for v in state.values()) == N_PARAMS
    net = ATM22BaselineUNet()
    result = net.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    with torch.no_grad():
        out = net.eval()(torch.zeros(1, 1, 32, 32, 32))
    assert tuple(out.shape) == (1, 2, 32, 32, 32)


def test_official_weights_find_a_walled_air_tube(shared):
    """A trachea-like tube (air lumen, soft-tissue wall, lung around) is segmented; the lung is not."""
    net = ATM22BaselineUNet()
    net.load_state_dict(_official_state(shared), strict=True)
    net.eval()
    s = 64
    _, y, x = np.mgrid[:s, :s, :s]
    radius = np.hypot(y - 32, x - 32)
    hu = np.full((s, s, s), -850.0)  # lung parenchyma
    hu[radius < 11] = 30.0  # airway wall
    lumen = radius < 8
    hu[lumen] = -1000.0
    hu += np.random.default_rng(0).normal(0.0, 15.0, hu.shape)
    scaled = (np.clip(hu, -1000, 400) + 1000) / 1400  # the card's preprocessing
    with torch.no_grad():
        logits = net(torch.from_numpy(scaled.astype(np.float32))[None, None])
    airway = (ATM22BaselineUNet.foreground_probability(logits)[0] > 0.5).numpy()
    assert airway[lumen].mean() > 0.4  # measured 0.66
    assert airway[~lumen].mean() < 1e-3  # measured 0.0
