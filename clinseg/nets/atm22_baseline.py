"""The ATM'22 challenge baseline airway network: a 4-level 3-D U-Net (about 1.02 M parameters).

Written from the architecture facts of the published weights (widths 16/32/64/128,
conv-instance-norm-PReLU units, trilinear upsampling); attribute names follow the
weights' state-dict keys so the official ``weight.pth`` loads strictly.

The network returns raw logits with 2 channels. As trained upstream, both channels
go through a sigmoid at inference and the airway is ``sigmoid(logits[:, 1]) > 0.5``
(equivalently ``logits[:, 1] > 0``); channel 0 is not used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvUnit(nn.Module):
    """3x3x3 convolution (with bias), affine instance norm, per-channel PReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1, bias=True)
        self.instancenorm = nn.InstanceNorm3d(out_channels, affine=True)
        self.pReLU = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pReLU(self.instancenorm(self.conv(x)))


class DoubleConv(nn.Module):
    """Two conv units: ``in -> mid -> out``."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        self.Conv1 = ConvUnit(in_channels, mid_channels)
        self.Conv2 = ConvUnit(mid_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.Conv2(self.Conv1(x))


class EncoderLevel(nn.Module):
    """Optional 2x max-pool, then a double convolution whose first conv has half the level's width."""

    def __init__(self, in_channels: int, width: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        # Half the width, but never narrower than the input (1 -> 8 -> 16, 16 -> 16 -> 32, ...).
        self.basic_module = DoubleConv(in_channels, max(width // 2, in_channels), width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample:
            x = F.max_pool3d(x, kernel_size=2, stride=2)
        return self.basic_module(x)


class DecoderLevel(nn.Module):
    """Trilinear upsampling to the skip's size, concatenation ``[skip, up]``, double convolution."""

    def __init__(self, skip_channels: int, coarse_channels: int, width: int) -> None:
        super().__init__()
        self.basic_module = DoubleConv(skip_channels + coarse_channels, width, width)

    def forward(self, skip: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(coarse, size=skip.shape[2:], mode="trilinear", align_corners=True)
        return self.basic_module(torch.cat([skip, up], dim=1))


class ATM22BaselineUNet(nn.Module):
    """ATM'22 baseline 3-D U-Net; ``forward`` maps ``(N, 1, D, H, W)`` CT in [0, 1] to ``(N, 2, D, H, W)`` logits.

    Input: HU clipped to [-1000, 400] and scaled to [0, 1], native spacing. Each
    spatial size should be at least 16 so the coarsest level keeps more than one
    voxel for instance normalisation; sizes need not be multiples of 8.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 2, widths: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"ATM22BaselineUNet has 4 levels; got widths {tuple(widths)}")
        w1, w2, w3, w4 = (int(w) for w in widths)
        self.EncoderLayer1 = EncoderLevel(in_channels, w1, downsample=False)
        self.EncoderLayer2 = EncoderLevel(w1, w2, downsample=True)
        self.EncoderLayer3 = EncoderLevel(w2, w3, downsample=True)
        self.EncoderLayer4 = EncoderLevel(w3, w4, downsample=True)
        self.DecoderLayer1 = DecoderLevel(w3, w4, w3)
        self.DecoderLayer2 = DecoderLevel(w2, w3, w2)
        self.DecoderLayer3 = DecoderLevel(w1, w2, w1)
        self.final_conv = nn.Conv3d(w1, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.EncoderLayer1(x)
        e2 = self.EncoderLayer2(e1)
        e3 = self.EncoderLayer3(e2)
        e4 = self.EncoderLayer4(e3)
        d = self.DecoderLayer1(e3, e4)
        d = self.DecoderLayer2(e2, d)
        d = self.DecoderLayer3(e1, d)
        return self.final_conv(d)

    @staticmethod
    def foreground_probability(logits: torch.Tensor) -> torch.Tensor:
        """Airway probability ``(N, D, H, W)`` from the logits: sigmoid of channel 1 (threshold 0.5)."""
        return torch.sigmoid(logits[:, 1])
