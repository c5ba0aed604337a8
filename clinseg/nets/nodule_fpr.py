"""A small stand-alone nodule false-positive reducer in the spirit of NoduleNet's decoupled FPR head.

NoduleNet (document 004) classifies each proposal on an ROI of the shallow down-4 feature map, adaptive
max-pooled to 7^3, through fully connected layers. Here the proposal is a candidate patch (``PATCH`` voxels a
side at 1 mm, centred on the candidate): a scaled-down NoduleNet stem and two residual blocks give the down-4
map, the candidate's box (its radius plus a margin) is cropped from it and max-pooled to 7^3, and two FC
layers, which also read a few scalars of the candidate (scale, filter response, blobness, pass), give one logit.
Pure torch, no file or task knowledge.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .nodulenet import ResBlock3d

PATCH = 32  # voxels a side (1 mm): room for a 20 mm candidate and its surroundings
STRIDE = 4
ROI_SIZE = 7
N_SCALARS = 4


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class NoduleFPR(nn.Module):
    """(B, 1, PATCH, PATCH, PATCH) patches + (B, N_SCALARS) scalars + (B,) ROI half-sizes in mm -> (B,) logits.

    ``width=1``: stem 8, down-2 8 and down-4 32 channels, FC 32*7^3 -> 128 -> 64 -> 1.
    """

    def __init__(self, width: float = 1.0, hidden: int = 128) -> None:
        super().__init__()
        c1, c2, c4 = (_scaled(n, width) for n in (8, 8, 32))
        self.stem = nn.Sequential(
            nn.Conv3d(1, c1, kernel_size=3, padding=1, stride=2), nn.BatchNorm3d(c1), nn.ReLU(inplace=True),
        )
        self.down2 = ResBlock3d(c1, c2)
        self.pool = nn.MaxPool3d(2)
        self.down4 = ResBlock3d(c2, c4)
        self.fc = nn.Sequential(nn.Linear(c4 * ROI_SIZE ** 3, hidden), nn.ReLU(inplace=True), nn.Dropout(0.3))
        self.head = nn.Sequential(nn.Linear(hidden + N_SCALARS, 64), nn.ReLU(inplace=True), nn.Linear(64, 1))

    def roi_pool(self, fmap: torch.Tensor, half_mm: torch.Tensor) -> torch.Tensor:
        """Centred crop of ``half_mm`` (>= ROI_SIZE/2 cells) per sample, adaptive max-pooled to ROI_SIZE^3."""
        n = fmap.shape[-1]
        out = []
        for b in range(fmap.shape[0]):
            half = int(min(max(round(float(half_mm[b]) / STRIDE), (ROI_SIZE + 1) // 2), n // 2))
            lo, hi = n // 2 - half, n // 2 + half
            crop = fmap[b:b + 1, :, lo:hi, lo:hi, lo:hi]
            out.append(F.adaptive_max_pool3d(crop, ROI_SIZE))
        return torch.cat(out)

    def forward(self, patch: torch.Tensor, scalars: torch.Tensor, half_mm: torch.Tensor) -> torch.Tensor:
        fmap = self.down4(self.pool(self.down2(self.stem(patch))))
        roi = self.fc(self.roi_pool(fmap, half_mm).flatten(1))
        return self.head(torch.cat([roi, scalars], dim=1))[:, 0]
