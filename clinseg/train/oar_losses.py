"""Losses of the head & neck OAR thesis (stage 1: focal loss; stage 2: class-weighted cross-entropy) and of
the CTV thesis (binary cross-entropy + soft Dice, 1:1).

Not stated in the OAR thesis, our choices: focal ``gamma = 2`` and no class balance ``alpha`` by default
(the values of Lin et al.'s focal loss paper leave ``alpha`` to the data); stage-2 class weights, when not
given, are inverse class frequencies of the batch's labels (``total / (C * count_c)``), normalised as
``F.cross_entropy`` does (weighted mean over voxels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from .losses import soft_dice_loss

FOCAL_GAMMA = 2.0


def _check_labels(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.dim() != target.dim() + 1 or logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"logits (N, C, ...) {tuple(logits.shape)} and integer labels (N, ...) "
                         f"{tuple(target.shape)} do not match")


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = FOCAL_GAMMA,
    alpha: Sequence[float] | torch.Tensor | None = None,
    reduction: Literal["mean", "sample"] = "mean",
) -> torch.Tensor:
    """Multi-class focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` from logits ``(N, C, ...)`` and labels
    ``(N, ...)``; ``reduction="sample"`` gives the per-sample mean ``(N,)`` (for quality-weighted training)."""
    _check_labels(logits, target)
    log_p = F.log_softmax(logits.float(), dim=1)
    index = target.long().unsqueeze(1)
    log_pt = log_p.gather(1, index).squeeze(1)
    voxel = -((1.0 - log_pt.exp()).clamp_min(0.0) ** gamma) * log_pt
    if alpha is not None:
        weights = torch.as_tensor(alpha, dtype=voxel.dtype, device=voxel.device)
        if weights.numel() != logits.shape[1]:
            raise ValueError(f"alpha has {weights.numel()} values for {logits.shape[1]} classes")
        voxel = voxel * weights[target.long()]
    if reduction == "sample":
        return voxel.flatten(1).mean(dim=1)
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'sample', got {reduction!r}")
    return voxel.mean()


def inverse_frequency_weights(target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``total / (n_classes * count_c)`` per class (a class absent from ``target`` counts as one voxel)."""
    counts = torch.bincount(target.long().flatten(), minlength=n_classes)[:n_classes].float().clamp_min(1.0)
    return target.numel() / (n_classes * counts)


def class_weighted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weights: Sequence[float] | torch.Tensor | None = None
) -> torch.Tensor:
    """Stage-2 loss: cross-entropy with per-class weights (default: the batch's inverse class frequencies)."""
    _check_labels(logits, target)
    n_classes = logits.shape[1]
    w = inverse_frequency_weights(target, n_classes) if weights is None else torch.as_tensor(weights).float()
    if w.numel() != n_classes:
        raise ValueError(f"{w.numel()} class weights for {n_classes} classes")
    return F.cross_entropy(logits.float(), target.long(), weight=w.to(logits.device))


def ctv_loss(logits: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice (1:1) on one-logit outputs; a sequence (the recurrent passes) is averaged over passes."""
    passes = [logits] if isinstance(logits, torch.Tensor) else list(logits)
    if not passes:
        raise ValueError("ctv_loss needs at least one output")
    total = torch.zeros((), device=target.device)
    for out in passes:
        if out.shape != target.shape:
            raise ValueError(f"logits {tuple(out.shape)} and target {tuple(target.shape)} differ in shape")
        term = F.binary_cross_entropy_with_logits(out.float(), target.float()) + soft_dice_loss(
            torch.sigmoid(out.float()), target)
        total = total + term
    return total / len(passes)
