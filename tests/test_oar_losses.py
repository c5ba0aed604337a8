"""Losses of documents 001 and 002 on inputs whose values are known by hand, and QAM + OCM weighting."""

from __future__ import annotations

import math

import pytest
import torch

from clinseg.nets.quality import QualityAwarenessModule
from clinseg.train.noisy_labels import QualityWeightedLoss, per_sample_bce, weighted_sample_loss
from clinseg.train.oar_losses import (
    class_weighted_cross_entropy,
    ctv_loss,
    focal_loss,
    inverse_frequency_weights,
)


def _logits_for(p_true: float, n_classes: int = 2) -> torch.Tensor:
    """(1, C, 1) logits whose softmax gives class 0 probability ``p_true``, the rest shared equally."""
    rest = (1.0 - p_true) / (n_classes - 1)
    return torch.log(torch.tensor([p_true] + [rest] * (n_classes - 1))).view(1, n_classes, 1)


def test_focal_loss_matches_the_formula():
    target = torch.zeros(1, 1, dtype=torch.long)
    for p in (0.9, 0.5, 0.1):
        expected = -((1 - p) ** 2) * math.log(p)
        assert float(focal_loss(_logits_for(p), target)) == pytest.approx(expected, rel=1e-5)
    # gamma = 0 is cross-entropy.
    assert float(focal_loss(_logits_for(0.3), target, gamma=0.0)) == pytest.approx(-math.log(0.3), rel=1e-5)


def test_focal_loss_down_weights_easy_voxels_and_alpha_scales():
    target = torch.zeros(1, 1, dtype=torch.long)
    easy, hard = float(focal_loss(_logits_for(0.95), target)), float(focal_loss(_logits_for(0.2), target))
    ce_easy, ce_hard = -math.log(0.95), -math.log(0.2)
    assert easy / hard < ce_easy / ce_hard / 50  # 0.05^2 vs 0.8^2 on top of CE's ratio
    assert float(focal_loss(_logits_for(0.5), target, alpha=[0.25, 1.0])) == pytest.approx(0.25 * 0.25 * math.log(2))
    with pytest.raises(ValueError, match="alpha"):
        focal_loss(_logits_for(0.5), target, alpha=[1.0, 1.0, 1.0])


def test_focal_loss_per_sample_reduction():
    logits = torch.cat([_logits_for(0.9), _logits_for(0.5)])
    per = focal_loss(logits, torch.zeros(2, 1, dtype=torch.long), reduction="sample")
    assert per.shape == (2,)
    assert per.tolist() == pytest.approx([-(0.1**2) * math.log(0.9), -(0.5**2) * math.log(0.5)], rel=1e-5)
    with pytest.raises(ValueError, match="do not match"):
        focal_loss(logits, torch.zeros(2, 3, dtype=torch.long))


def test_inverse_frequency_weights_and_weighted_ce():
    target = torch.tensor([[0, 0, 0, 1]])
    w = inverse_frequency_weights(target, 2)
    assert w.tolist() == pytest.approx([4 / 6, 4 / 2])
    # Uniform logits: every voxel's CE is log 2, and the weighted mean of equal values is that value.
    logits = torch.zeros(1, 2, 4)
    assert float(class_weighted_cross_entropy(logits, target)) == pytest.approx(math.log(2))
    # Foreground voxel wrong, background right: the weight moves the mean towards the foreground's loss.
    logits = torch.tensor([[[2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]]])
    lo, hi = -math.log(1 / (1 + math.exp(-2))), -math.log(1 / (1 + math.exp(2)))
    expected = (3 * (4 / 6) * lo + 2.0 * hi) / (3 * (4 / 6) + 2.0)
    assert float(class_weighted_cross_entropy(logits, target)) == pytest.approx(expected, rel=1e-5)
    assert float(class_weighted_cross_entropy(logits, target, [1.0, 1.0])) == pytest.approx((3 * lo + hi) / 4)


def test_ctv_loss_is_bce_plus_dice_averaged_over_passes():
    target = torch.tensor([[[1.0, 0.0]]])
    zero = torch.zeros(1, 1, 2)  # p = 0.5 everywhere: BCE log 2, Dice 1 - (2*0.5+1)/(1+1+1)
    one_pass = math.log(2) + (1 - 2 / 3)
    assert float(ctv_loss(zero, target)) == pytest.approx(one_pass, rel=1e-5)
    perfect = torch.tensor([[[30.0, -30.0]]])
    assert float(ctv_loss(perfect, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(ctv_loss([zero, perfect], target)) == pytest.approx(one_pass / 2, rel=1e-5)
    with pytest.raises(ValueError):
        ctv_loss([], target)


def test_per_sample_bce_and_weighted_sum():
    logits = torch.zeros(2, 1, 3)
    assert per_sample_bce(logits, torch.ones(2, 1, 3)).tolist() == pytest.approx([math.log(2)] * 2)
    assert float(weighted_sample_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.25, 0.75]))) == pytest.approx(2.5)


def test_quality_weighting_is_bounded_and_trains_the_qam():
    torch.manual_seed(0)
    qam = QualityAwarenessModule(widths=(4,), convs_per_stage=1)
    weighting = QualityWeightedLoss(qam)
    image = torch.randn(4, 1, 4, 4, 4)
    label = (torch.rand(4, 1, 4, 4, 4) > 0.5).float()
    losses = torch.tensor([0.1, 0.2, 0.3, 5.0])  # the last sample's label disagrees with the network
    out = weighting(image, label, losses)
    weights = out.weights.detach()
    assert weights.shape == (4,) and float(weights.sum()) == pytest.approx(1.0)
    assert float(weights.max() / weights.min()) <= math.e**4 + 1e-3
    out.loss.backward()
    # The gradient wrt the scores is w_i (L_i - weighted mean): descending it lowers the noisy sample's score.
    assert qam.features[0].weight.grad is not None and qam.features[0].weight.grad.abs().sum() > 0
    optim = torch.optim.SGD(qam.parameters(), lr=0.5)
    first = float(weights[3])
    for _ in range(20):
        optim.zero_grad()
        out = weighting(image, label, losses)
        out.loss.backward()
        optim.step()
    assert float(weighting(image, label, losses).weights[3].detach()) < first
    with pytest.raises(ValueError, match="at least 2"):
        weighting(image[:1], label[:1], losses[:1])
