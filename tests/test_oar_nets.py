"""OAR two-stage U-Net (document 001), CTV U-Net and the QAM (document 002): shapes and parameter counts."""

from __future__ import annotations

import pytest
import torch

from clinseg.nets.counting import count_parameters
from clinseg.nets.ctv_unet import CTVUNet
from clinseg.nets.oar_unet import (
    STAGE1_CLASSES,
    THESIS_WEIGHT_COUNT,
    OARCascade,
    OARUNet,
    channels_from_state_dict,
)
from clinseg.nets.quality import QualityAwarenessModule, ocm_scores, sample_weights


def test_stage1_weight_count_is_the_documents():
    count = count_parameters(OARUNet())
    assert count.weights_only == THESIS_WEIGHT_COUNT == 3_154_896
    # The thesis's "12.03M" is that count as float32 MiB.
    assert round(count.weights_only * 4 / 2**20, 2) == 12.03
    assert count.full - count.weights_only == 1233  # conv and transposed-conv biases


def test_stage2_differs_only_in_the_head():
    one, two = count_parameters(OARUNet()), count_parameters(OARUNet(out_channels=2))
    assert one.weights_only - two.weights_only == 24 * 27 * (STAGE1_CLASSES - 2)


def test_batch_norm_drops_conv_biases_and_keeps_kernels():
    plain, batch = count_parameters(OARUNet()), count_parameters(OARUNet(norm="batch"))
    assert batch.weights_only == plain.weights_only
    # 14 normalised convs: their biases go (each width once), BN adds weight + bias (each width twice).
    widths = sum(w for w in OARUNet().layer_channels().values()) - (96 + 48 + 24)  # minus the tconvs
    assert batch.full - plain.full == widths


def test_oar_unet_shapes_and_size_check():
    net = OARUNet(width=4, dropout=0.0).eval()
    out = net(torch.zeros(2, 1, 8, 16, 24))
    assert out.shape == (2, STAGE1_CLASSES, 8, 16, 24)
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.zeros(1, 1, 8, 16, 20))


def test_pruned_widths_rebuild_from_a_state_dict():
    net = OARUNet(width=4, channels={"conv1": 3, "conv8": 20, "tconv2": 5})
    widths = channels_from_state_dict(net.state_dict())
    assert widths["conv1"] == 3 and widths["conv8"] == 20 and widths["tconv2"] == 5 and widths["conv2"] == 4
    rebuilt = OARUNet(width=4, channels=widths)
    rebuilt.load_state_dict(net.state_dict())  # strict: every shape matches
    x = torch.randn(1, 1, 8, 8, 8)
    assert torch.allclose(net.eval()(x), rebuilt.eval()(x))
    with pytest.raises(ValueError, match="unknown"):
        OARUNet(channels={"conv99": 3})


def test_channel_graph_follows_the_concatenations():
    graph = {node.conv: node for node in OARUNet(width=4).channel_graph()}
    assert graph["convs.conv9"].inputs == ("convs.tconv1", "convs.conv6")
    assert graph["convs.conv1"].inputs == ("",)
    assert not graph["convs.conv15"].prunable and graph["convs.conv14"].prunable


def test_cascade_holds_one_stage1_and_binary_stage2_models():
    cascade = OARCascade({"width": 4, "out_channels": 23}, {"lens_l": {"width": 2}, "cochlea_r": {"width": 2}})
    keys = cascade.state_dict().keys()
    assert "stage1.convs.conv15.weight" in keys and "stage2.lens_l.convs.conv15.weight" in keys
    assert cascade.stage1.convs["conv15"].out_channels == 23
    assert cascade.stage2["cochlea_r"](torch.zeros(1, 1, 8, 8, 8)).shape == (1, 2, 8, 8, 8)


def test_ctv_unet_counts_and_ablation_ladder():
    assert count_parameters(CTVUNet()).full == 5_111_081
    assert count_parameters(CTVUNet()).weights_only == 5_065_104
    assert count_parameters(CTVUNet(residual=False, se=False, recurrent=False)).full == 4_986_833
    # Recurrence adds one input channel: 16 kernels of 3x3x3 on the first conv.
    with_r = count_parameters(CTVUNet(residual=False, se=False, recurrent=True)).full
    assert with_r - 4_986_833 == 16 * 27


def test_ctv_unet_pools_z_three_times_only():
    net = CTVUNet(widths=(2, 2, 2, 2, 2), n_iterations=3).eval()
    assert net.size_multiple() == (8, 32, 32)
    outs = net(torch.zeros(1, 1, 8, 32, 32), return_all=True)
    assert len(outs) == 3 and outs[-1].shape == (1, 1, 8, 32, 32)
    with pytest.raises(ValueError, match="multiples"):
        net(torch.zeros(1, 1, 12, 32, 32))


def test_qam_gives_one_score_per_sample_2d_and_3d():
    qam3 = QualityAwarenessModule(widths=(2, 4))
    assert qam3(torch.zeros(3, 1, 8, 8, 8), torch.ones(3, 1, 8, 8, 8)).shape == (3,)
    qam2 = QualityAwarenessModule(dims=2, widths=(2, 4))
    assert qam2(torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8)).shape == (2,)
    with pytest.raises(ValueError, match="label channels"):
        qam3(torch.zeros(2, 1, 8, 8, 8), torch.ones(2, 2, 8, 8, 8))


def test_ocm_bounds_the_weights():
    scores = torch.tensor([100.0, -100.0, 0.0, 3.0])
    assert torch.allclose(ocm_scores(scores), 2.0 * torch.tanh(scores))
    w = sample_weights(scores)
    assert torch.isclose(w.sum(), torch.tensor(1.0))
    # |s| <= 2, so no weight exceeds another by more than e^4, however far apart the raw scores are.
    assert float(w.max() / w.min()) <= torch.e**4 + 1e-3
    assert float(w.max() / w.min()) > 50.0  # and the bound is nearly reached here (e^4 = 54.6)
    raw = sample_weights(scores, lam=None)  # QAM alone: one sample takes everything
    assert float(raw[0]) > 0.999
