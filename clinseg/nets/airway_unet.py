"""The airway 3-D U-Net of the SJTU 2023 thesis, with its two add-ons: attention distillation (AD) and
channel-wise feature re-learning (FRL).

Nine conv blocks (four encoder levels, a bottleneck, four decoder levels), each two
``3x3x3 conv -> InstanceNorm3d (not affine) -> ReLU`` units; 2x max-pooling down, 2x nearest upsampling up,
a 3x3x3 conv head giving one logit channel. With ``width=1`` the block outputs are 16/32/64/128/256 and the
network has 4,117,969 parameters, the count of the author's code (which pins non-affine instance norm).

FRL, after each of the nine blocks: ``Z = P_D + P_H + P_W`` where ``P_D`` (C x D x 1 x 1) integrates the
features over H and W, and likewise for the other axes; the gate ``sigmoid(Conv1x1(C/2->C)(ReLU(Conv1x1(C->C/2)(Z))))``
multiplies the features. The author integrates with learned weighted sums: one ``Conv3d(n, 1, 1)`` per axis
length ``n`` (``fixed``), which ties the network to one input size; with an 80x192x304 input that gives
4,230,352 parameters. ``adaptive`` uses plain means instead (no size tie, gate parameters only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

FRLMode = Literal["fixed", "adaptive"]
BASE_WIDTHS = (16, 32, 64, 128, 256)  # block outputs at width 1; encoder blocks' first conv has half
THESIS_PATCH = (80, 192, 304)
LEVELS = 4  # poolings; input sizes must be multiples of 2**LEVELS


class AirwayOutput(NamedTuple):
    """Training output with attention distillation: logits and the decoder block outputs, coarse to fine."""

    logits: torch.Tensor
    decoder_features: tuple[torch.Tensor, ...]


def _conv_unit(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.InstanceNorm3d(out_channels),
        nn.ReLU(inplace=True),
    ]


class ConvBlock(nn.Sequential):
    """``in -> mid -> out``, two conv-norm-ReLU units."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__(*_conv_unit(in_channels, mid_channels), *_conv_unit(mid_channels, out_channels))


def _axis_weighted_sum(x: torch.Tensor, squeeze: nn.Conv3d, dim: int) -> torch.Tensor:
    """What ``squeeze`` (a ``Conv3d(n, 1, 1)``) does to ``x`` with axis ``dim`` moved to the channels:
    a learned weighted sum over that axis plus a bias, keeping the axis as size 1."""
    weight = squeeze.weight.reshape(-1).to(x.dtype)
    if weight.numel() != x.shape[dim]:
        raise ValueError(f"fixed-size FRL expects {weight.numel()} voxels along axis {dim}, got {x.shape[dim]}")
    out = torch.matmul(x.movedim(dim, -1), weight).unsqueeze(-1).movedim(-1, dim)
    return out + squeeze.bias.to(x.dtype)


class FeatureReLearning(nn.Module):
    """Channel-wise feature re-learning: a shape-preserving gate from three axis projections (see module doc)."""

    def __init__(self, channels: int, mode: FRLMode = "adaptive", size: Sequence[int] | None = None) -> None:
        super().__init__()
        if mode not in ("fixed", "adaptive"):
            raise ValueError(f"FRL mode must be 'fixed' or 'adaptive', got {mode!r}")
        self.mode = mode
        reduced = max(1, channels // 2)
        self.gate = nn.Sequential(
            nn.Conv3d(channels, reduced, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv3d(reduced, channels, kernel_size=1),
            nn.Sigmoid(),
        )
        if mode == "fixed":
            if size is None or len(size) != 3:
                raise ValueError("fixed FRL needs the feature size (D, H, W) at its level")
            d, h, w = (int(s) for s in size)
            self.depth_squeeze = nn.Conv3d(d, 1, kernel_size=1)
            self.height_squeeze = nn.Conv3d(h, 1, kernel_size=1)
            self.width_squeeze = nn.Conv3d(w, 1, kernel_size=1)

    def integrate(self, x: torch.Tensor) -> torch.Tensor:
        """``Z`` (N, C, D, H, W): the sum of the three broadcast axis projections."""
        if self.mode == "adaptive":
            return (
                x.mean(dim=(3, 4), keepdim=True) + x.mean(dim=(2, 4), keepdim=True) + x.mean(dim=(2, 3), keepdim=True)
            )
        # Same order of the two squeezes per projection as the author's code (it matters for the biases only).
        keep_d = _axis_weighted_sum(_axis_weighted_sum(x, self.height_squeeze, 3), self.width_squeeze, 4)
        keep_h = _axis_weighted_sum(_axis_weighted_sum(x, self.depth_squeeze, 2), self.width_squeeze, 4)
        keep_w = _axis_weighted_sum(_axis_weighted_sum(x, self.depth_squeeze, 2), self.height_squeeze, 3)
        return keep_d + keep_h + keep_w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.integrate(x))


def scaled_widths(width: float) -> tuple[int, ...]:
    """Block output widths for a width multiplier (at least 2 channels, so FRL's halving keeps one)."""
    if not width > 0:
        raise ValueError(f"width multiplier must be positive, got {width}")
    return tuple(max(2, int(round(c * width))) for c in BASE_WIDTHS)


class AirwayUNet(nn.Module):
    """Thesis airway U-Net: ``(N, 1, D, H, W)`` CT in [0, 1] -> ``(N, 1, D, H, W)`` airway logits.

    Sizes must be multiples of 16 (and not all 16: instance norm needs more than one bottleneck voxel
    in training). ``attention_distillation``: in training mode ``forward`` returns an
    ``AirwayOutput`` carrying the decoder block outputs (conv6..conv9) for the AD loss; in eval mode,
    or without AD, plain logits. ``frl``: ``None`` (baseline), ``"fixed"`` (author's learned axis sums,
    only for inputs of ``frl_input_size``) or ``"adaptive"`` (means; any size).
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: float = 1.0,
        attention_distillation: bool = False,
        frl: FRLMode | None = None,
        frl_input_size: Sequence[int] = THESIS_PATCH,
    ) -> None:
        super().__init__()
        self.attention_distillation = bool(attention_distillation)
        self.frl_mode = frl
        self.frl_input_size = tuple(int(s) for s in frl_input_size)
        if frl == "fixed" and any(s % 2**LEVELS for s in self.frl_input_size):
            raise ValueError(f"frl_input_size must be multiples of {2**LEVELS}, got {self.frl_input_size}")
        c = scaled_widths(width)
        self.encoder = nn.ModuleList()
        previous = in_channels
        for out in c:  # conv1..conv5 (conv5 is the bottleneck)
            self.encoder.append(ConvBlock(previous, out // 2, out))
            previous = out
        self.decoder = nn.ModuleList(
            ConvBlock(c[level + 1] + c[level], c[level], c[level]) for level in reversed(range(LEVELS))
        )  # conv6..conv9
        self.head = nn.Conv3d(c[0], 1, kernel_size=3, padding=1)
        levels = list(range(LEVELS + 1)) + list(reversed(range(LEVELS)))
        widths = [c[level] for level in levels]
        if frl is None:
            self.frl = None
        else:
            self.frl = nn.ModuleList(
                FeatureReLearning(w, frl, tuple(s // 2**level for s in self.frl_input_size))
                for w, level in zip(widths, levels)
            )

    def _block(self, index: int, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = block(x)
        return self.frl[index](x) if self.frl is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor | AirwayOutput:
        if x.ndim != 5 or any(s % 2**LEVELS for s in x.shape[2:]):
            raise ValueError(f"expected (N, C, D, H, W) with D, H, W multiples of {2**LEVELS}, got {tuple(x.shape)}")
        if self.frl_mode == "fixed" and tuple(x.shape[2:]) != self.frl_input_size:
            raise ValueError(f"fixed-size FRL needs input {self.frl_input_size}, got {tuple(x.shape[2:])}")
        skips = []
        for index, block in enumerate(self.encoder):
            if index:
                x = F.max_pool3d(x, kernel_size=2)
            x = self._block(index, block, x)
            skips.append(x)
        skips.pop()  # the bottleneck output is x itself
        features = []
        for offset, block in enumerate(self.decoder):
            up = F.interpolate(x, scale_factor=2, mode="nearest")
            x = self._block(LEVELS + 1 + offset, block, torch.cat([up, skips.pop()], dim=1))
            features.append(x)
        logits = self.head(x)
        if self.attention_distillation and self.training:
            return AirwayOutput(logits, tuple(features))
        return logits


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
