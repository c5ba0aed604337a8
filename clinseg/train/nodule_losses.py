"""Losses of the NoduleNet family (clinseg.nets.nodulenet): focal classification, smooth-L1 boxes, soft-Dice masks.

Focal loss (RetinaNet): ``-alpha_t (1 - p_t)^gamma log p_t`` with ``p_t`` the probability of the true class and
``alpha_t = alpha`` for nodules, ``1 - alpha`` for background. The report states alpha 0.25 and gamma 2 but its
code has no alpha term; here ``alpha`` defaults to 0.25, the method as the report states it, and ``alpha=None``
drops the term, giving the variant of its code. ``gamma=0`` with
``alpha=None`` is plain (binary) cross-entropy, NoduleNet's usual RPN/RCNN classification loss.
Classification terms are weighted means over the samples that count (label >= 0), so hard-negative mining
(clinseg.post.boxes.hard_negative_mining, which sets unused anchors to -1) decides the balance.

Box terms: smooth L1 over the 6 deltas, summed over the coordinates, averaged over the positive samples.
Mask term: ``1 - soft Dice`` per box, averaged over boxes. Total: the weighted sum of the five terms; a head
without inputs (``None``) contributes 0, so the RPN can be trained alone first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .losses import soft_dice_loss

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
SMOOTH_L1_BETA = 1.0


def focal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float | None = FOCAL_ALPHA,
    gamma: float = FOCAL_GAMMA,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Focal loss averaged over the samples with ``labels >= 0`` (-1 = ignored).

    Binary: ``logits`` and ``labels`` of the same shape, labels 0/1 (one sigmoid logit per anchor).
    Multi-class: ``logits`` (N, C) and integer ``labels`` (N,), class 0 the background (softmax).
    ``weights`` (same shape as ``labels``) scale each sample's term and the normaliser.
    """
    labels = labels.long()
    if logits.shape == labels.shape:
        valid = labels >= 0
        target = labels.clamp(min=0).to(logits.dtype)
        log_p_t = -F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    elif logits.ndim == 2 and labels.shape == logits.shape[:1]:
        valid = labels >= 0
        log_p_t = F.log_softmax(logits, dim=1).gather(1, labels.clamp(min=0)[:, None])[:, 0]
    else:
        raise ValueError(f"logits {tuple(logits.shape)} do not fit labels {tuple(labels.shape)}")
    p_t = log_p_t.exp()
    loss = -((1.0 - p_t) ** gamma) * log_p_t
    if alpha is not None:
        loss = loss * torch.where(labels > 0, alpha, 1.0 - alpha).to(loss.dtype)
    w = valid.to(loss.dtype) if weights is None else valid.to(loss.dtype) * weights.to(loss.dtype)
    return (loss * w).sum() / w.sum().clamp(min=1e-12)


def box_loss(
    deltas: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, beta: float = SMOOTH_L1_BETA
) -> torch.Tensor:
    """Smooth L1 of ``deltas`` against ``targets`` (both ``(..., 6)``) over the positives (``labels > 0``).

    Summed over the 6 coordinates, averaged over positives; 0 (still attached to the graph) without any.
    """
    pos = labels > 0
    if deltas.shape[:-1] != labels.shape or deltas.shape != targets.shape:
        raise ValueError(f"deltas {tuple(deltas.shape)}, targets {tuple(targets.shape)}, labels {tuple(labels.shape)}")
    if not pos.any():
        return deltas.sum() * 0.0
    per_box = F.smooth_l1_loss(deltas[pos], targets[pos].to(deltas.dtype), beta=beta, reduction="none").sum(dim=-1)
    return per_box.mean()


def mask_dice_loss(logits: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over boxes of ``1 - soft Dice`` between ``sigmoid(logits[i])`` and the 0/1 ``targets[i]`` crop."""
    if len(logits) != len(targets):
        raise ValueError(f"{len(logits)} mask logits but {len(targets)} targets")
    if not logits:
        raise ValueError("mask_dice_loss needs at least one box")
    terms = [soft_dice_loss(torch.sigmoid(lg), t.to(lg.dtype)) for lg, t in zip(logits, targets)]
    return torch.stack(terms).mean()


def balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-sample weights that give the positives (label 1) and the negatives (0) half of the term each, however
    few the positives: a small nodule has a single positive anchor against the mined background ones."""
    pos, neg = labels == 1, labels == 0
    w = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    w[pos] = 0.5 / max(int(pos.sum()), 1) if bool(neg.any()) else 1.0 / max(int(pos.sum()), 1)
    w[neg] = 0.5 / max(int(neg.sum()), 1) if bool(pos.any()) else 1.0 / max(int(neg.sum()), 1)
    return w


class NoduleLoss(NamedTuple):
    total: torch.Tensor
    rpn_cls: torch.Tensor
    rpn_reg: torch.Tensor
    rcnn_cls: torch.Tensor
    rcnn_reg: torch.Tensor
    mask: torch.Tensor


class LossWeights(NamedTuple):
    rpn_cls: float = 1.0
    rpn_reg: float = 1.0
    rcnn_cls: float = 1.0
    rcnn_reg: float = 1.0
    mask: float = 1.0


def nodulenet_loss(
    rpn_logits: torch.Tensor,
    rpn_deltas: torch.Tensor,
    rpn_labels: torch.Tensor,
    rpn_targets: torch.Tensor,
    rcnn_logits: torch.Tensor | None = None,
    rcnn_deltas: torch.Tensor | None = None,
    rcnn_labels: torch.Tensor | None = None,
    rcnn_targets: torch.Tensor | None = None,
    mask_logits: Sequence[torch.Tensor] | None = None,
    mask_targets: Sequence[torch.Tensor] | None = None,
    alpha: float | None = FOCAL_ALPHA,
    gamma: float = FOCAL_GAMMA,
    weights: LossWeights = LossWeights(),  # noqa: B008  (an immutable NamedTuple)
    rpn_weights: torch.Tensor | None = None,
) -> NoduleLoss:
    """RPN + FPR (RCNN) + mask terms and their weighted sum.

    RPN: ``rpn_logits`` (B, A), ``rpn_deltas`` (B, A, 6), ``rpn_labels`` (B, A) in {1, 0, -1} (after mining) and
    ``rpn_targets`` (B, A, 6). RCNN: ``rcnn_logits`` (N, C), ``rcnn_deltas`` (N, 6), ``rcnn_labels`` (N,) class
    indices or -1, ``rcnn_targets`` (N, 6). Masks: per-box logits and same-shaped 0/1 targets. ``rpn_weights``
    (B, A): per-anchor weights of the RPN classification term (see ``balanced_weights``).
    """
    zero = rpn_logits.sum() * 0.0
    rpn_cls = focal_loss(rpn_logits, rpn_labels, alpha, gamma, rpn_weights)
    rpn_reg = box_loss(rpn_deltas, rpn_targets, rpn_labels)
    rcnn_cls = rcnn_reg = mask = zero
    if rcnn_logits is not None and rcnn_labels is not None and rcnn_logits.shape[0] > 0:
        rcnn_cls = focal_loss(rcnn_logits, rcnn_labels, alpha, gamma)
        if rcnn_deltas is not None and rcnn_targets is not None:
            rcnn_reg = box_loss(rcnn_deltas, rcnn_targets, rcnn_labels)
    if mask_logits is not None and mask_targets is not None and len(mask_logits) > 0:
        mask = mask_dice_loss(mask_logits, mask_targets)
    total = (
        weights.rpn_cls * rpn_cls
        + weights.rpn_reg * rpn_reg
        + weights.rcnn_cls * rcnn_cls
        + weights.rcnn_reg * rcnn_reg
        + weights.mask * mask
    )
    return NoduleLoss(total, rpn_cls, rpn_reg, rcnn_cls, rcnn_reg, mask)
