"""``clinseg compress``: a small OAR U-Net file in, a packed 31-level file out that rebuilds to the same outputs;
refusals (existing output, wrong weights)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from clinseg.cli import main
from clinseg.cli.compress import load_oar_unet
from clinseg.compress import load_packed
from clinseg.nets.oar_unet import OARUNet


def _weights(tmp_path, prefix: str = ""):
    torch.manual_seed(0)
    model = OARUNet(width=4)
    path = tmp_path / "oar.safetensors"
    save_file({prefix + k: v for k, v in model.state_dict().items()}, str(path))
    return path


def test_compress_writes_a_packed_model_that_rebuilds(tmp_path, capsys):
    src = _weights(tmp_path, prefix="stage1.")  # an OARCascade-style file
    out = tmp_path / "small.safetensors"
    assert main(["compress", str(src), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "channel pruning 20%" in printed and "31-level quantisation" in printed
    state, meta = load_packed(out)
    assert meta["architecture"] == "oar_unet:OARUNet" and meta["channels"]["conv8"] == 26
    assert meta["plan"] == {"prune": 0.2, "threshold": 0.02, "levels": 31, "relative": True, "steps": 0}
    model = OARUNet(out_channels=meta["out_channels"], channels=meta["channels"]).eval()
    model.load_state_dict(state)
    assert sum(len(torch.unique(v)) <= 31 for k, v in state.items() if k.endswith(".weight")) == 18
    original = load_oar_unet(src)
    x = torch.rand(1, 1, 8, 16, 16)
    with torch.no_grad():
        # Pruning without fine-tuning changes the output, but not beyond recognition on the same input.
        got, ref = model(x), original(x)
    assert torch.corrcoef(torch.stack([got.flatten(), ref.flatten()]))[0, 1] > 0.5
    assert out.stat().st_size < src.stat().st_size / 5


def test_compress_refuses_existing_output_and_foreign_weights(tmp_path, capsys):
    src = _weights(tmp_path)
    out = tmp_path / "exists.safetensors"
    out.write_bytes(b"keep me")
    assert main(["compress", str(src), "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    assert main(["compress", str(other), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "not OAR U-Net weights" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compress", str(src)])  # -o is required
