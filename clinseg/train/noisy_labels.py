"""Training on noisy labels with QAM + OCM: the batch loss is ``sum_i w_i L_i`` with ``w = softmax(lambda *
tanh(QAM(x_i, y_i)))`` over the batch (see ``clinseg.nets.quality``).

The weights are not detached: the one loss trains the segmentation network (through ``L_i``) and the QAM
(through ``w_i``) together. Its gradient with respect to a sample's score is proportional to
``w_i (L_i - sum_j w_j L_j)``, so the QAM learns to lower the scores of samples whose loss stays above the
batch's weighted mean, which noisy labels do once the network fits the clean majority. Inference uses the
segmentation network alone.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..nets.quality import OCM_LAMBDA, QualityAwarenessModule, sample_weights


class WeightedLoss(NamedTuple):
    loss: torch.Tensor  # scalar, sum_i w_i L_i
    weights: torch.Tensor  # (N,), sum to 1
    scores: torch.Tensor  # (N,), raw QAM scores


def per_sample_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over each sample's voxels: ``(N,)``."""
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    voxel = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return voxel.flatten(1).mean(dim=1)


def weighted_sample_loss(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i L_i`` for per-sample losses and weights of shape ``(N,)``."""
    if losses.shape != weights.shape or losses.dim() != 1:
        raise ValueError(f"losses {tuple(losses.shape)} and weights {tuple(weights.shape)} must both be (N,)")
    return (weights * losses).sum()


class QualityWeightedLoss(nn.Module):
    """Owns the QAM; ``forward(image, label, per_sample_losses)`` weights the segmentation losses.

    ``lam=None`` drops the OCM (the thesis's QAM-only ablation). Needs a batch of at least two samples:
    with one, the softmax weight is 1 whatever the score, and the QAM learns nothing.
    """

    def __init__(self, qam: QualityAwarenessModule, lam: float | None = OCM_LAMBDA) -> None:
        super().__init__()
        self.qam = qam
        self.lam = lam

    def forward(self, image: torch.Tensor, label: torch.Tensor, per_sample_losses: torch.Tensor) -> WeightedLoss:
        if image.shape[0] < 2:
            raise ValueError("quality-weighted training needs a batch of at least 2 samples")
        scores = self.qam(image, label)
        weights = sample_weights(scores, self.lam)
        return WeightedLoss(weighted_sample_loss(per_sample_losses, weights), weights, scores)
