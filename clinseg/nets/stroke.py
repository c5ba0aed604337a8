"""D-UNet, AGMR-Net and TSRL-Net: 2.5-D stroke-lesion networks of the Anhui stroke thesis (document 003).

Written from the thesis' description (and the published D-UNet design it builds on); no code of the originals.
Pure torch, no file or task knowledge. Input: a stack of four adjacent axial slices (i-2, i-1, i, i+1) of a
T1 image as a ``(B, 4, H, W)`` tensor (:func:`slice_stacks` builds them); the 2-D encoder reads it as four
channels, the 3-D encoder as a one-channel volume four slices deep, ``(B, 1, 4, H, W)``, made inside the
module. ``H`` and ``W`` must be multiples of 16 (four 2x poolings); the document's size is 192 x 192.
Outputs are logits (apply a sigmoid for the lesion probability of slice i).

Parameter counts at ``width=1.0`` against the document (Table 4.3):

- ``DUNet``: 9,503,779, exactly the document's figure. The configuration that gives it (found by trying
  variants of bias / norm / kernel choices): every convolution has a bias; BatchNorm after each convolution of
  the 2-D and 3-D blocks (2 parameters per channel); the two squeeze-and-excitation gates of each fusion are
  bias-free with reduction 16; upsampling is nearest-neighbour x2 followed by a 3x3 convolution C_in -> C_out.
  The same configuration reproduces the document's 18,089,374,976 FLOPs for D-UNet as the ``thop`` profiler
  counts them (convolution multiply-adds plus one per bias, two per BatchNorm element, nn.Linear weights).
- ``AGMRNet``: 23,798,641, 642 (0.003 %) below 23,799,283. The multi-scale deconvolution (MDU) takes the
  place of the nearest-neighbour upsampling, keeps the C_in channels (four branches of C_in / 4) and is
  followed by the same 3x3 convolution to C_out; with that reading the document's FLOPs are met to 0.014 %.
  The other readings we tried are 0.8 M (MDU output concatenated straight with the skip) to 8.7 M (MDU to
  C_out channels) parameters off. The remaining 642 are small layers the thesis does not describe (it gives
  no layer table); nn.Linear layers here keep PyTorch's default biases.
- ``TSRLNet``: 12,658,005, 196,491 (1.53 %) below 12,854,496. The thesis removes the MDU for TSRL-Net but does
  not say what upsamples in its place. Nearest-neighbour upsampling (as in D-UNet) would give 9.52 M, far
  from the figure; a single-scale 3x3 transposed convolution C_in -> C_in with BatchNorm and ReLU (the
  single-scale deconvolution the thesis compares MDU with) accounts for 3.14 M of the 3.35 M the document has
  over D-UNet. The last 0.2 M could not be placed from the text (the FLOPs are 1.6 % below the document's).

``width`` scales every 2-D and 3-D channel count (the CPA's 36 -> 18 -> 36 layers stay; CFF and SE hidden
sizes follow their reductions): ``width=0.25`` is the quick CPU variant (DUNet 596,875; AGMRNet 1,497,253;
TSRLNet 801,057 parameters). Measured CPU forward time of a batch of eight 4 x 192 x 192 stacks, two threads
(inference mode): width 1.0: DUNet 3.9 s, AGMRNet 5.4 s, TSRLNet 4.3 s; width 0.25: 0.35-0.40 s.

Choices where the thesis is silent: ReLU after the fusion's 1x1x1 and 3x3 convolutions (as D-UNet); dropout
0.3 after the stage-4 and stage-5 blocks (feeding both the skip and the next stage) and in every MDU branch;
the CPA acts before the CFF at stages 2 and 3; CPA patches are exact H/6 blocks when a stage's size is a
multiple of 6 (inputs that are multiples of 96), adaptive pooling otherwise; TSRL side outputs are 1x1
convolutions on the upsampled features (after the 3x3 convolution) at their own resolution, and the CRL's
positive attention is the deepest CPA map replicated to each stage's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

WIDTHS_2D = (32, 64, 128, 256, 512)
WIDTHS_3D = (32, 64, 128)
FUSED_STAGES = (1, 2)  # 0-based 2-D stages that take in 3-D features (the document's stages 2 and 3)
N_SLICES = 4  # i-2, i-1, i, i+1
GRID = 6  # CPA patch grid
CPA_HIDDEN = 18
SE_REDUCTION = 16  # D-UNet's fusion gates
CFF_REDUCTION = 8
MDU_KERNELS = (3, 5, 7, 9)
DROPOUT = 0.3
DIVISOR = 16

Upsampler = Literal["nearest", "mdu", "deconv"]


class StrokeOutput(NamedTuple):
    logits: torch.Tensor  # (B, 1, H, W), the final prediction for the centre slice i
    cpa_logits: tuple[torch.Tensor, ...]  # (B, 1, 6, 6) per encoder stage, shallow to deep (empty for D-UNet)
    side_logits: tuple[torch.Tensor, ...]  # TSRL: (B, 1, h, w) per decoder stage, deep (H/8) to shallow (H)


def slice_stacks(volume_kji: torch.Tensor) -> torch.Tensor:
    """The ``(K, 4, J, I)`` input stacks of a ``(K, J, I)`` volume: stack ``k`` holds slices k-2, k-1, k, k+1,
    zeros where those fall outside the volume."""
    if volume_kji.dim() != 3:
        raise ValueError(f"expected a (K, J, I) volume, got shape {tuple(volume_kji.shape)}")
    padded = F.pad(volume_kji, (0, 0, 0, 0, 2, 1))  # two empty slices before, one after
    k = volume_kji.shape[0]
    return torch.stack([padded[offset:offset + k] for offset in range(N_SLICES)], dim=1)


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class ConvBlock(nn.Module):
    """Two (conv 3, BatchNorm, ReLU) layers, 2-D or 3-D."""

    def __init__(self, in_channels: int, out_channels: int, dims: int = 2) -> None:
        super().__init__()
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        self.layers = nn.Sequential(
            conv(in_channels, out_channels, 3, padding=1), norm(out_channels), nn.ReLU(inplace=True),
            conv(out_channels, out_channels, 3, padding=1), norm(out_channels), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DepthToChannels(nn.Module):
    """3-D map (B, C, D, h, w) -> one channel by a 1x1x1 conv -> depth as channels -> 3x3 conv to C."""

    def __init__(self, channels: int, depth: int) -> None:
        super().__init__()
        self.reduce = nn.Conv3d(channels, 1, 1)
        self.expand = nn.Conv2d(depth, channels, 3, padding=1)

    def forward(self, x3d: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.reduce(x3d)).squeeze(1)
        return F.relu(self.expand(x))


class SqueezeExcite(nn.Module):
    """Channel gate of D-UNet's fusion: GAP -> C/r -> C, bias-free, sigmoid."""

    def __init__(self, channels: int, reduction: int = SE_REDUCTION) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(hidden, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3)))[:, :, None, None]


class SEFusion(nn.Module):
    """D-UNet's dimension fusion: each map gated by its own SE, then added."""

    def __init__(self, channels: int, depth: int) -> None:
        super().__init__()
        self.to_2d = DepthToChannels(channels, depth)
        self.gate_2d = SqueezeExcite(channels)
        self.gate_3d = SqueezeExcite(channels)

    def forward(self, x2d: torch.Tensor, x3d: torch.Tensor) -> torch.Tensor:
        return self.gate_2d(x2d) + self.gate_3d(self.to_2d(x3d))


class CrossDimensionFusion(nn.Module):
    """CFF: both maps' channel descriptors, concatenated (2C), drive two sigmoid heads (2C -> C/R -> C), one
    weighting the 2-D map and one the 3-D map, so each weight sees the channels of both dimensions."""

    def __init__(self, channels: int, depth: int, reduction: int = CFF_REDUCTION) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.to_2d = DepthToChannels(channels, depth)

        def head() -> nn.Sequential:
            return nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, channels), nn.Sigmoid())

        self.head_2d = head()
        self.head_3d = head()

    def forward(self, x2d: torch.Tensor, x3d: torch.Tensor) -> torch.Tensor:
        t3d = self.to_2d(x3d)
        g = torch.cat([t3d.mean(dim=(2, 3)), x2d.mean(dim=(2, 3))], dim=1)
        return t3d * self.head_3d(g)[:, :, None, None] + x2d * self.head_2d(g)[:, :, None, None]


def replicate_grid(grid: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A (B, 1, 6, 6) map replicated block-wise to (B, 1, *size) (nearest neighbour)."""
    return F.interpolate(grid, size=tuple(size), mode="nearest")


class CoarsePatchAttention(nn.Module):
    """CPA: channel mean -> 6x6 patch means -> FC 36 -> 18 -> 36 -> sigmoid -> blocks; out = A * F + F."""

    def __init__(self, grid: int = GRID, hidden: int = CPA_HIDDEN) -> None:
        super().__init__()
        self.grid = grid
        cells = grid * grid
        self.fc = nn.Sequential(nn.Linear(cells, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, cells))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the attended features and the patch logits (B, 1, 6, 6) (sigmoid = attention)."""
        patches = F.adaptive_avg_pool2d(x.mean(dim=1, keepdim=True), self.grid)
        logits = self.fc(patches.flatten(1)).view(-1, 1, self.grid, self.grid)
        attention = replicate_grid(torch.sigmoid(logits), x.shape[2:])
        return attention * x + x, logits


class MultiScaleDeconv(nn.Module):
    """MDU: four parallel stride-2 transposed convolutions (k = 3, 5, 7, 9), each to C_in/4 channels with
    BatchNorm, ReLU and dropout, concatenated back to C_in channels at twice the size."""

    def __init__(self, channels: int, kernels: Sequence[int] = MDU_KERNELS, dropout: float = DROPOUT) -> None:
        super().__init__()
        if channels % len(kernels):
            raise ValueError(f"MDU needs channels divisible by {len(kernels)}, got {channels}")
        branch = channels // len(kernels)
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.ConvTranspose2d(channels, branch, k, stride=2, padding=(k - 1) // 2, output_padding=1),
                nn.BatchNorm2d(branch), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
            )
            for k in kernels
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


def _upsampler(kind: Upsampler, channels: int, dropout: float) -> nn.Module:
    if kind == "nearest":
        return nn.Upsample(scale_factor=2, mode="nearest")
    if kind == "mdu":
        return MultiScaleDeconv(channels, dropout=dropout)
    if kind == "deconv":
        return nn.Sequential(nn.ConvTranspose2d(channels, channels, 3, stride=2, padding=1, output_padding=1),
                             nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
    raise ValueError(f"unknown upsampler {kind!r}")


class DecoderStage(nn.Module):
    """Upsample (C_in kept), 3x3 conv to C_out, optional side output + CRL on the skip, concat, conv block."""

    def __init__(self, in_channels: int, out_channels: int, upsampler: Upsampler, side: bool,
                 dropout: float) -> None:
        super().__init__()
        self.up = _upsampler(upsampler, in_channels, dropout)
        self.reduce = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.side = nn.Conv2d(out_channels, 1, 1) if side else None
        self.block = ConvBlock(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor,
                positive: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        up = F.relu(self.reduce(self.up(x)))
        side_logits = None
        if self.side is not None:
            side_logits = self.side(up)
            # CRL: positive (coarse CPA) attention keeps lesion patches, reverse attention on the squared
            # features keeps what this stage's prediction has not yet found.
            reverse = 1.0 - torch.sigmoid(side_logits)
            skip = skip * positive + skip * skip * reverse
        return self.block(torch.cat([skip, up], dim=1)), side_logits


class _StrokeNet(nn.Module):
    def __init__(self, width: float, attention: bool, fusion: Literal["se", "cff"], upsampler: Upsampler,
                 side_outputs: bool, dropout: float) -> None:
        super().__init__()
        w2 = [_scaled(c, width) for c in WIDTHS_2D]
        w3 = [_scaled(c, width) for c in WIDTHS_3D]
        if any(a != b for a, b in zip(w2, w3, strict=False)):
            raise ValueError("2-D and 3-D widths must agree at the fused stages")
        self.side_outputs = side_outputs
        self.encoder_3d = nn.ModuleList(ConvBlock(i, o, dims=3) for i, o in zip([1, *w3[:-1]], w3, strict=True))
        self.encoder_2d = nn.ModuleList(ConvBlock(i, o) for i, o in zip([N_SLICES, *w2[:-1]], w2, strict=True))
        fusion_cls = SEFusion if fusion == "se" else CrossDimensionFusion
        # 3-D stage s (pooled s times in all three axes) is N_SLICES / 2^s slices deep.
        self.fusions = nn.ModuleDict({str(s): fusion_cls(w2[s], N_SLICES >> s) for s in FUSED_STAGES})
        self.attention = nn.ModuleList(CoarsePatchAttention() for _ in w2) if attention else None
        self.dropout = nn.Dropout(dropout)
        self.decoder = nn.ModuleList(
            DecoderStage(w2[s + 1], w2[s], upsampler, side_outputs, dropout) for s in reversed(range(len(w2) - 1))
        )
        self.head = nn.Conv2d(w2[0], 1, 1)

    def forward(self, x: torch.Tensor) -> StrokeOutput:
        if x.dim() != 4 or x.shape[1] != N_SLICES:
            raise ValueError(f"expected a (B, {N_SLICES}, H, W) slice stack, got shape {tuple(x.shape)}")
        if x.shape[2] % DIVISOR or x.shape[3] % DIVISOR:
            raise ValueError(f"H and W must be multiples of {DIVISOR}, got {tuple(x.shape[2:])}")
        maps_3d = []
        v = x.unsqueeze(1)  # (B, 1, 4, H, W): the slices as depth
        for s, block in enumerate(self.encoder_3d):
            v = block(v if s == 0 else F.max_pool3d(v, 2))
            maps_3d.append(v)
        skips, cpa_logits = [], []
        f = x
        for s, block in enumerate(self.encoder_2d):
            f = block(f if s == 0 else F.max_pool2d(f, 2))
            if s >= 3:
                f = self.dropout(f)
            if self.attention is not None:
                f, logits = self.attention[s](f)
                cpa_logits.append(logits)
            if str(s) in self.fusions:
                f = self.fusions[str(s)](f, maps_3d[s])
            skips.append(f)
        deepest = torch.sigmoid(cpa_logits[-1]) if self.side_outputs else None
        side_logits = []
        for stage, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            positive = replicate_grid(deepest, skip.shape[2:]) if deepest is not None else None
            f, side = stage(f, skip, positive)
            if side is not None:
                side_logits.append(side)
        return StrokeOutput(self.head(f), tuple(cpa_logits), tuple(side_logits))


class DUNet(_StrokeNet):
    """D-UNet backbone: 2-D U-Net (32..512) with a 3-D encoder (32, 64, 128) fused by SE gates at stages 2, 3."""

    def __init__(self, width: float = 1.0, dropout: float = DROPOUT) -> None:
        super().__init__(width, attention=False, fusion="se", upsampler="nearest", side_outputs=False,
                         dropout=dropout)


class AGMRNet(_StrokeNet):
    """AGMR-Net: D-UNet + CPA after every encoder stage + CFF fusion + MDU upsampling."""

    def __init__(self, width: float = 1.0, dropout: float = DROPOUT) -> None:
        super().__init__(width, attention=True, fusion="cff", upsampler="mdu", side_outputs=False,
                         dropout=dropout)


class TSRLNet(_StrokeNet):
    """TSRL-Net: D-UNet + CPA + CFF + four decoder side outputs + coarse-grained residual learning (CRL)."""

    def __init__(self, width: float = 1.0, dropout: float = DROPOUT) -> None:
        super().__init__(width, attention=True, fusion="cff", upsampler="deconv", side_outputs=True,
                         dropout=dropout)
