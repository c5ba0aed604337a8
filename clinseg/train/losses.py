"""Losses of the airway thesis: soft Dice plus attention distillation (AD) between decoder blocks.

AD, as the thesis's Algorithm 3-1 does it: for each adjacent pair of decoder outputs (conv6->conv7,
conv7->conv8, conv8->conv9) the coarser block's attention map ``sum_c F^2`` is upsampled x2 (trilinear)
and is the "prediction"; the finer block's map is the "ground truth" (teacher). Each map is flattened per
sample and softmax-normalised over all voxels; the pair's loss is their mean squared difference, weighted
0.1. The thesis does not detach the finer map, so gradients reach both blocks; ``detach_target=True``
makes it a one-way distillation. Note: after a softmax over ~10^5-10^6 voxels each value is ~1/V, so the
AD term is tiny next to Dice (a faithful property of the method, not a bug here).

Skeleton recall (our option, not the thesis's; after Kirchhoff et al., ECCV 2024): the share of the label's
centerline, thickened to a tube, that the prediction covers. Dice over a batch is dominated by the trachea and
main bronchi, since voxels per unit length grow with the radius squared ((8/1)^2 = 64 for an 8 mm against a
1 mm radius); per centerline length every branch
counts alike, which is what TD and BD measure.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

AD_WEIGHT = 0.1
DICE_EPS = 1.0  # the thesis names an epsilon but not its value; 1 keeps empty patches' gradient sane


def soft_dice_loss(probabilities: torch.Tensor, target: torch.Tensor, eps: float = DICE_EPS) -> torch.Tensor:
    """``1 - (2 sum(P G) + eps) / (sum P + sum G + eps)`` over the whole batch (thesis eq. 2-4)."""
    p = probabilities.float()
    g = target.float()
    if p.shape != g.shape:
        raise ValueError(f"prediction {tuple(p.shape)} and target {tuple(g.shape)} differ in shape")
    intersection = (p * g).sum()
    return 1.0 - (2.0 * intersection + eps) / (p.sum() + g.sum() + eps)


def skeleton_recall_loss(probabilities: torch.Tensor, skeleton: torch.Tensor, eps: float = DICE_EPS) -> torch.Tensor:
    """``1 - (sum(P S) + eps) / (sum S + eps)`` over the batch, ``S`` the tubed centerline of the label."""
    p = probabilities.float()
    s = skeleton.float()
    if p.shape != s.shape:
        raise ValueError(f"prediction {tuple(p.shape)} and skeleton {tuple(s.shape)} differ in shape")
    return 1.0 - ((p * s).sum() + eps) / (s.sum() + eps)


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """``(N, 1, D, H, W)``: the sum over channels of ``|F|^2`` (p = 2 in the thesis, eq. 3-5), in float32."""
    return features.float().pow(2).sum(dim=1, keepdim=True)


def attention_distillation_loss(
    features: Sequence[torch.Tensor],
    weights: Sequence[float] | float = AD_WEIGHT,
    detach_target: bool = False,
) -> torch.Tensor:
    """Weighted sum over adjacent pairs of decoder features (coarse to fine, each 2x the previous size)."""
    if len(features) < 2:
        raise ValueError("attention distillation needs at least two feature maps")
    pairs = len(features) - 1
    weights = [float(weights)] * pairs if isinstance(weights, (int, float)) else [float(w) for w in weights]
    if len(weights) != pairs:
        raise ValueError(f"{pairs} feature pairs need {pairs} weights, got {len(weights)}")
    total = features[0].new_zeros((), dtype=torch.float32)
    for coarse, fine, weight in zip(features[:-1], features[1:], weights):
        student = F.interpolate(attention_map(coarse), scale_factor=2, mode="trilinear", align_corners=False)
        teacher = attention_map(fine)
        if student.shape != teacher.shape:
            raise ValueError(f"upsampled map {tuple(student.shape)} does not match {tuple(teacher.shape)}")
        if detach_target:
            teacher = teacher.detach()
        n = student.shape[0]
        student = torch.softmax(student.reshape(n, -1), dim=1)
        teacher = torch.softmax(teacher.reshape(n, -1), dim=1)
        total = total + weight * F.mse_loss(student, teacher)
    return total


def airway_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    decoder_features: Sequence[torch.Tensor] | None = None,
    ad_weight: float = AD_WEIGHT,
    detach_target: bool = False,
    skeleton: torch.Tensor | None = None,
    skeleton_weight: float = 0.0,
    bce_weight: float = 0.0,
) -> torch.Tensor:
    """Dice on ``sigmoid(logits)`` plus, when decoder features are given, the weighted AD terms, plus, when a
    tubed skeleton and a positive weight are given, the weighted skeleton recall term, plus ``bce_weight`` x
    binary cross-entropy (a per-voxel term: every false positive costs, which Dice alone hardly charges)."""
    probabilities = torch.sigmoid(logits.float())
    loss = soft_dice_loss(probabilities, target)
    if bce_weight > 0:
        loss = loss + bce_weight * F.binary_cross_entropy_with_logits(logits.float(), target.float())
    if skeleton is not None and skeleton_weight > 0:
        loss = loss + skeleton_weight * skeleton_recall_loss(probabilities, skeleton)
    if decoder_features:
        loss = loss + attention_distillation_loss(decoder_features, ad_weight, detach_target)
    return loss


def hard_dice_counts(logits: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """``(2 |P and G|, |P| + |G|)`` of the thresholded prediction (logit > 0), to pool Dice over many batches."""
    pred = logits.detach() > 0
    gt = target.detach() > 0.5
    return 2.0 * float((pred & gt).sum()), float(pred.sum() + gt.sum())
