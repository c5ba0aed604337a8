"""The cervical-cancer CTV network of the Tsinghua 2019 thesis: a 5-level 3-D U-Net with residual blocks,
squeeze-and-excitation and recurrent refinement (the deployed model, Dice 0.763 in 3-fold cross-validation).

Each level is a block of two ``Conv3d 3x3x3 -> ELU -> BatchNorm3d`` units (the thesis's order), widths
16/32/64/96/128, max-pooled after each level; a bridge block of the same kind joins encoder and decoder.
The decoder upsamples with a transposed convolution to the skip's width, concatenates the skip, and runs a
block; a 1x1x1 head gives one logit (CTV versus background).

Add-ons, each switchable to reproduce the thesis's ablation ladder:
- ``residual``: the block's input, through a 1x1x1 convolution where widths differ, is added to its output;
- ``se``: a squeeze-and-excitation gate (global average -> FC C/r -> ReLU -> FC C -> sigmoid) rescales the
  block's channels before the residual addition;
- ``recurrent``: the input is the image plus the previous pass's mask (sigmoid probability); the first pass
  gets an all-zero mask, ``n_iterations`` passes in all; ``forward(..., return_all=True)`` returns every pass's
  logits for a loss over all of them.

Depth 72 is not a multiple of 2**5 = 32. We pool along z only at the first ``z_poolings`` = 3 levels
(72 -> 36 -> 18 -> 9) and in-plane only below (kernel 1x2x2), so no padding and no voxels are invented; the
bottom is 9 x 8 x 8 for a 72 x 256 x 256 input. Inputs need D divisible by 2**z_poolings and H, W by 32.

Not stated in the thesis, our choices: bridge width 128 (as the deepest level), SE reduction 4, no
activation after the residual addition, feedback not detached (gradients run through every pass),
2 passes by default. With the defaults the network has 5,111,081 parameters (5,065,104 kernel weights);
the plain U-Net (no residual, SE or recurrence) has 4,986,833.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

CTV_WIDTHS = (16, 32, 64, 96, 128)
THESIS_INPUT = (72, 256, 256)  # (D, H, W) after resampling z to 72 slices


class SqueezeExcitation3d(nn.Module):
    """Channel gate from the global average of each channel."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels),
                                nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc(x.mean(dim=(2, 3, 4)))
        return x * gate[:, :, None, None, None]


class CTVBlock(nn.Module):
    """Two ``conv -> ELU -> BN`` units, optionally gated by SE and wrapped in a residual connection."""

    def __init__(self, in_channels: int, out_channels: int, residual: bool, se: bool, se_reduction: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers += [nn.Conv3d(c_in, out_channels, kernel_size=3, padding=1), nn.ELU(inplace=True),
                       nn.BatchNorm3d(out_channels)]
        self.units = nn.Sequential(*layers)
        self.se = SqueezeExcitation3d(out_channels, se_reduction) if se else None
        self.shortcut: nn.Module | None = None
        if residual:
            same = in_channels == out_channels
            self.shortcut = nn.Identity() if same else nn.Conv3d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.units(x)
        if self.se is not None:
            out = self.se(out)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return out


class CTVUNet(nn.Module):
    """CTV U-Net; ``forward(image)`` takes ``(N, C, D, H, W)``, returns the last pass's logits ``(N, 1, D, H, W)``."""

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = CTV_WIDTHS,
        bridge_width: int | None = None,
        z_poolings: int = 3,
        residual: bool = True,
        se: bool = True,
        se_reduction: int = 4,
        recurrent: bool = True,
        n_iterations: int = 2,
    ) -> None:
        super().__init__()
        widths = tuple(widths)
        if not 0 <= z_poolings <= len(widths):
            raise ValueError(f"z_poolings must be within 0..{len(widths)}, got {z_poolings}")
        if n_iterations < 1:
            raise ValueError(f"n_iterations must be at least 1, got {n_iterations}")
        self.in_channels = in_channels
        self.recurrent = recurrent
        self.n_iterations = n_iterations if recurrent else 1
        self.pools = tuple((2, 2, 2) if level < z_poolings else (1, 2, 2) for level in range(len(widths)))

        def block(c_in: int, c_out: int) -> CTVBlock:
            return CTVBlock(c_in, c_out, residual, se, se_reduction)

        bridge = bridge_width or widths[-1]
        self.encoder = nn.ModuleList()
        c_in = in_channels + (1 if recurrent else 0)
        for width in widths:
            self.encoder.append(block(c_in, width))
            c_in = width
        self.bridge = block(c_in, bridge)
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        c_in = bridge
        for width, pool in zip(reversed(widths), reversed(self.pools)):
            self.upsample.append(nn.ConvTranspose3d(c_in, width, kernel_size=pool, stride=pool))
            self.decoder.append(block(2 * width, width))
            c_in = width
        self.head = nn.Conv3d(widths[0], 1, kernel_size=1)

    def size_multiple(self) -> tuple[int, int, int]:
        """(D, H, W) must be multiples of these."""
        d = h = w = 1
        for pd, ph, pw in self.pools:
            d, h, w = d * pd, h * ph, w * pw
        return d, h, w

    def single_pass(self, x: torch.Tensor) -> torch.Tensor:
        """One pass of the U-Net on its full input (image channels, plus the mask channel when recurrent)."""
        skips = []
        for block, pool in zip(self.encoder, self.pools):
            x = block(x)
            skips.append(x)
            x = nn.functional.max_pool3d(x, kernel_size=pool)
        x = self.bridge(x)
        for up, block, skip in zip(self.upsample, self.decoder, reversed(skips)):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)

    def forward(
        self, image: torch.Tensor, n_iterations: int | None = None, return_all: bool = False
    ) -> torch.Tensor | list[torch.Tensor]:
        multiple = self.size_multiple()
        if image.dim() != 5 or image.shape[1] != self.in_channels or any(
            s % m for s, m in zip(image.shape[2:], multiple)
        ):
            raise ValueError(f"CTVUNet expects (N, {self.in_channels}, D, H, W) with (D, H, W) multiples of "
                             f"{multiple}, got {tuple(image.shape)}")
        if not self.recurrent:
            logits = self.single_pass(image)
            return [logits] if return_all else logits
        passes = self.n_iterations if n_iterations is None else n_iterations
        if passes < 1:
            raise ValueError(f"n_iterations must be at least 1, got {passes}")
        mask = image.new_zeros((image.shape[0], 1, *image.shape[2:]))
        outputs = []
        for _ in range(passes):
            logits = self.single_pass(torch.cat([image, mask], dim=1))
            outputs.append(logits)
            mask = torch.sigmoid(logits)
        return outputs if return_all else outputs[-1]
