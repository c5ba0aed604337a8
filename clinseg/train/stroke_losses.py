"""Losses of the stroke thesis (document 003): AGMR-Net's focal + log-Dice + Sobel + CPA supervision, and
TSRL-Net's target-aware loss (TAL) on the final and side outputs + CPA supervision.

All functions take logits (B, 1, H, W) and a binary target (B, 1, H, W) of the same size; the network outputs
are :class:`clinseg.nets.stroke.StrokeOutput`.

Readings of the thesis, and our choices where it is silent:
- Focal term (both losses): alpha weights the lesion pixels (AGMR, as in D-UNet's enhanced mixing loss) or the
  focus pixels (TAL), 1 - alpha the rest; pixel mean ("/ N").
- AGMR's Dice is the soft Dice coefficient ``(2 sum pg + s) / (sum p + sum g + s)``, its loss ``-log`` of it;
  TAL's Dice term is ``1 - (2 sum pg + s) / (sum p^2 + sum g^2 + s)`` (the thesis prints the coefficient
  itself, which would reward overlap with a higher loss). Both pool the batch (most slices have no lesion),
  smoothing ``s = 1``.
- TAL's weight: alpha on focus pixels, 1 - alpha on the others (formula 4.6 prints alpha twice; the text says
  1 - alpha for the dispersed samples). The focus map marks every beta x beta block holding a lesion pixel.
- Sobel boundary loss: mean squared difference of the Sobel gradient magnitudes of the probability map and of
  the target (kernels scaled by 1/4 so a unit step has magnitude 1; replicate padding, so image borders are
  not edges). The thesis cites it without a formula.
- Side outputs are bilinearly upsampled (as logits) to the target's size before TAL.
- CPA supervision: BCE of each stage's 6x6 patch logits against the 6x6 max-pooled target, summed over the
  stages, weight 0.15.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from clinseg.nets.stroke import GRID, StrokeOutput

FOCAL_ALPHA = 0.75
FOCAL_GAMMA = 2.0
TAL_BETA = 4
CPA_WEIGHT = 0.15
SMOOTH = 1.0
_SOBEL_EPS = 1e-6  # keeps the gradient magnitude differentiable where the image is flat


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.shape != target.shape or logits.dim() != 4 or logits.shape[1] != 1:
        raise ValueError(f"logits and target must both be (B, 1, H, W); got {tuple(logits.shape)} and "
                         f"{tuple(target.shape)}")


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = FOCAL_ALPHA,
               gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Binary focal loss ``-(alpha (1-p)^g y log p + (1-alpha) p^g (1-y) log(1-p))``, pixel mean."""
    _check(logits, target)
    z, y = logits.float(), target.float()
    p = torch.sigmoid(z)
    positive = alpha * (1.0 - p) ** gamma * y * F.logsigmoid(z)
    negative = (1.0 - alpha) * p**gamma * (1.0 - y) * F.logsigmoid(-z)
    return -(positive + negative).mean()


def log_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = SMOOTH) -> torch.Tensor:
    """``-log`` of the batch's soft Dice coefficient ``(2 sum pg + s) / (sum p + sum g + s)``."""
    _check(logits, target)
    p, g = torch.sigmoid(logits.float()), target.float()
    dice = (2.0 * (p * g).sum() + smooth) / (p.sum() + g.sum() + smooth)
    return -torch.log(dice)


def sobel_magnitude(image: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of (B, 1, H, W) maps (kernels / 4: a unit step gives 1)."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=image.device) / 4.0
    kernels = torch.stack([kx, kx.t()]).unsqueeze(1).to(image.dtype)  # (2, 1, 3, 3): d/dx, d/dy
    grads = F.conv2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), kernels)
    return torch.sqrt((grads**2).sum(dim=1, keepdim=True) + _SOBEL_EPS)


def sobel_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the Sobel magnitudes of the prediction and the target."""
    _check(logits, target)
    return F.mse_loss(sobel_magnitude(torch.sigmoid(logits.float())), sobel_magnitude(target.float()))


def cpa_targets(target: torch.Tensor, grid: int = GRID) -> torch.Tensor:
    """The (B, 1, 6, 6) prior map: 1 where a patch of the target holds any lesion pixel."""
    return F.adaptive_max_pool2d(target.float(), grid)


def cpa_bce(cpa_logits: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Sum over encoder stages of the BCE between the stage's patch logits and :func:`cpa_targets`."""
    if not cpa_logits:
        raise ValueError("no CPA maps: the network has no coarse patch attention")
    prior = cpa_targets(target, cpa_logits[0].shape[-1])
    return sum(F.binary_cross_entropy_with_logits(z.float(), prior) for z in cpa_logits)


def agmr_loss(output: StrokeOutput, target: torch.Tensor, cpa_weight: float = CPA_WEIGHT) -> torch.Tensor:
    """AGMR-Net: focal + (-log Dice) + Sobel boundary loss + ``cpa_weight`` * sum of the CPA BCEs."""
    z = output.logits
    segmentation = focal_loss(z, target) + log_dice_loss(z, target) + sobel_loss(z, target)
    return segmentation + cpa_weight * cpa_bce(output.cpa_logits, target)


def focus_map(target: torch.Tensor, beta: int = TAL_BETA) -> torch.Tensor:
    """1 on every beta x beta block (tiled from the top-left corner) holding a lesion pixel, else 0."""
    h, w = target.shape[-2:]
    blocks = F.max_pool2d(target.float(), beta, stride=beta, ceil_mode=True)
    return blocks.repeat_interleave(beta, dim=-2).repeat_interleave(beta, dim=-1)[..., :h, :w]


def target_aware_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = FOCAL_ALPHA,
                      gamma: float = FOCAL_GAMMA, beta: int = TAL_BETA, smooth: float = SMOOTH) -> torch.Tensor:
    """TAL: focal term weighted alpha on the focus map and 1 - alpha elsewhere, plus the squared-denominator
    soft Dice loss."""
    _check(logits, target)
    z, g = logits.float(), target.float()
    p = torch.sigmoid(z)
    log_pt = g * F.logsigmoid(z) + (1.0 - g) * F.logsigmoid(-z)
    pt = p * g + (1.0 - p) * (1.0 - g)
    focus = focus_map(g, beta)
    weight = alpha * focus + (1.0 - alpha) * (1.0 - focus)
    focal = -(weight * (1.0 - pt) ** gamma * log_pt).mean()
    dice = (2.0 * (p * g).sum() + smooth) / ((p * p).sum() + (g * g).sum() + smooth)
    return focal + (1.0 - dice)


def tsrl_loss(output: StrokeOutput, target: torch.Tensor, cpa_weight: float = CPA_WEIGHT) -> torch.Tensor:
    """TSRL-Net: TAL on the final output and on every side output, + ``cpa_weight`` * sum of the CPA BCEs."""
    size = target.shape[-2:]
    total = target_aware_loss(output.logits, target)
    for side in output.side_logits:
        up = side if side.shape[-2:] == size else F.interpolate(side, size=size, mode="bilinear",
                                                                 align_corners=False)
        total = total + target_aware_loss(up, target)
    return total + cpa_weight * cpa_bce(output.cpa_logits, target)
