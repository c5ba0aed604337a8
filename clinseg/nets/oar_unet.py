"""The head & neck organs-at-risk 3-D U-Net of the XJTU 2020 thesis (Table 3-3): three poolings, base width 24.

Encoder: two 3x3x3 convolutions per level (1->24->24, 24->48->48, 48->96->96, 96->192->192), 2x max-pooling
between levels, dropout on the 192-channel bottom. Decoder: a 2x2x2 stride-2 transposed convolution halves
the channels, its output is concatenated with the encoder features of that level (upsampled first, skip
second), two 3x3x3 convolutions follow; a 3x3x3 head gives ``out_channels`` logits (9 for stage 1: background
and 8 organs; 2 for the stage-2 organ-versus-background models). Softmax is left to the loss / inference.

Layer names follow the table: ``conv1``..``conv14``, ``tconv1``..``tconv3``, ``conv15`` (the head). Their
kernel weights total 3,154,896 at width 24 with 9 outputs (the thesis's "12.03M" is that count in float32
MiB); see ``clinseg.nets.counting``.

Not stated in the thesis, our choices: ReLU after every 3x3x3 convolution except the head (the U-Net the
thesis builds on), no activation after the transposed convolutions, dropout p = 0.5, and no normalisation
by default (the table lists none; ``norm="batch"`` adds BatchNorm3d after each convolution and drops the
then-redundant conv biases). ``channels`` overrides the width of individual layers: that is how a network
whose filters were pruned away is rebuilt at its smaller size (``channels_from_state_dict``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .channel_graph import NETWORK_INPUT, ChannelNode

Norm = Literal["none", "batch"]
POOLINGS = 3
STAGE1_CLASSES = 9  # background + brainstem, eye L/R, optic nerve L/R, parotid L/R, mandible
STAGE1_INPUT = (72, 208, 208)  # (D, H, W) of the resized stage-1 volume
THESIS_WEIGHT_COUNT = 3_154_896

# name -> (width multiple of the base width, producers concatenated to form its input); execution order.
_LAYOUT: dict[str, tuple[int, tuple[str, ...]]] = {
    "conv1": (1, (NETWORK_INPUT,)),
    "conv2": (1, ("conv1",)),
    "conv3": (2, ("conv2",)),
    "conv4": (2, ("conv3",)),
    "conv5": (4, ("conv4",)),
    "conv6": (4, ("conv5",)),
    "conv7": (8, ("conv6",)),
    "conv8": (8, ("conv7",)),
    "tconv1": (4, ("conv8",)),
    "conv9": (4, ("tconv1", "conv6")),
    "conv10": (4, ("conv9",)),
    "tconv2": (2, ("conv10",)),
    "conv11": (2, ("tconv2", "conv4")),
    "conv12": (2, ("conv11",)),
    "tconv3": (1, ("conv12",)),
    "conv13": (1, ("tconv3", "conv2")),
    "conv14": (1, ("conv13",)),
}
HEAD = "conv15"
PRUNABLE_LAYERS = tuple(_LAYOUT)


class OARUNet(nn.Module):
    """Stage-1 (``out_channels=9``) or stage-2 (``out_channels=2``) OAR U-Net; input ``(N, C, D, H, W)`` with
    D, H, W multiples of 8; output logits of the same spatial size."""

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = STAGE1_CLASSES,
        width: int = 24,
        norm: Norm = "none",
        dropout: float = 0.5,
        channels: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        if norm not in ("none", "batch"):
            raise ValueError(f"norm must be 'none' or 'batch', got {norm!r}")
        unknown = set(channels or {}) - set(_LAYOUT)
        if unknown:
            raise ValueError(f"unknown OAR U-Net layers in channels: {sorted(unknown)}")
        self.norm = norm
        widths = {name: (channels or {}).get(name, mult * width) for name, (mult, _) in _LAYOUT.items()}
        widths[NETWORK_INPUT] = in_channels
        self.convs = nn.ModuleDict()
        self.norms = nn.ModuleDict()
        for name, (_, sources) in _LAYOUT.items():
            c_in = sum(widths[s] for s in sources)
            if name.startswith("tconv"):
                self.convs[name] = nn.ConvTranspose3d(c_in, widths[name], kernel_size=2, stride=2)
            else:
                self.convs[name] = nn.Conv3d(c_in, widths[name], kernel_size=3, padding=1, bias=norm == "none")
                if norm == "batch":
                    self.norms[name] = nn.BatchNorm3d(widths[name])
        self.convs[HEAD] = nn.Conv3d(widths["conv14"], out_channels, kernel_size=3, padding=1)
        self.dropout = nn.Dropout3d(dropout)

    def _unit(self, name: str, x: torch.Tensor) -> torch.Tensor:
        x = self.convs[name](x)
        if name in self.norms:
            x = self.norms[name](x)
        return F.relu(x)

    def _double(self, first: str, second: str, x: torch.Tensor) -> torch.Tensor:
        return self._unit(second, self._unit(first, x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 2**POOLINGS
        if x.dim() != 5 or any(s % factor for s in x.shape[2:]):
            raise ValueError(f"OARUNet expects (N, C, D, H, W), D, H, W multiples of {factor}, got {tuple(x.shape)}")
        skip1 = self._double("conv1", "conv2", x)
        skip2 = self._double("conv3", "conv4", F.max_pool3d(skip1, 2))
        skip3 = self._double("conv5", "conv6", F.max_pool3d(skip2, 2))
        bottom = self.dropout(self._double("conv7", "conv8", F.max_pool3d(skip3, 2)))
        up = self._double("conv9", "conv10", torch.cat([self.convs["tconv1"](bottom), skip3], dim=1))
        up = self._double("conv11", "conv12", torch.cat([self.convs["tconv2"](up), skip2], dim=1))
        up = self._double("conv13", "conv14", torch.cat([self.convs["tconv3"](up), skip1], dim=1))
        return self.convs[HEAD](up)

    def channel_graph(self) -> list[ChannelNode]:
        """The channel flow between the layers (for structured pruning; see ``clinseg.nets.channel_graph``)."""
        nodes = [
            ChannelNode(f"convs.{name}", tuple(f"convs.{s}" if s else s for s in sources),
                        f"norms.{name}" if name in self.norms else None)
            for name, (_, sources) in _LAYOUT.items()
        ]
        nodes.append(ChannelNode(f"convs.{HEAD}", ("convs.conv14",), None, prunable=False))
        return nodes

    def layer_channels(self) -> dict[str, int]:
        """Output channels of each prunable layer as built now (the ``channels`` argument that rebuilds it)."""
        return {name: _out_channels(self.convs[name]) for name in _LAYOUT}


def _out_channels(layer: nn.Module) -> int:
    # Conv weights are (out, in, ...), transposed conv weights (in, out, ...).
    return layer.weight.shape[1] if isinstance(layer, nn.ConvTranspose3d) else layer.weight.shape[0]


def channels_from_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Per-layer widths of a (possibly channel-pruned) ``OARUNet`` state dict, for ``OARUNet(channels=...)``."""
    out = {}
    for name in _LAYOUT:
        weight = state[f"convs.{name}.weight"]
        out[name] = int(weight.shape[1] if name.startswith("tconv") else weight.shape[0])
    return out


class OARCascade(nn.Module):
    """The two-stage model as one module (one weights file): ``stage1`` (multi-class, whole downsampled scan)
    and ``stage2[key]`` (binary organ-versus-background U-Nets on crops), keyed by organ (``"lens_l"``...).

    It has no ``forward``: the pipeline runs the stages separately (stage 2 on crops stage 1 locates).
    """

    def __init__(self, stage1: Mapping | None = None, stage2: Mapping[str, Mapping] | None = None) -> None:
        super().__init__()
        self.stage1 = OARUNet(**dict(stage1 or {}))
        self.stage2 = nn.ModuleDict({key: OARUNet(**{"out_channels": 2, **dict(kw)}) for key, kw in
                                     (stage2 or {}).items()})
