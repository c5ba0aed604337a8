"""Uniform multi-level weight quantisation with straight-through-estimator (STE) fine-tuning.

The OAR thesis quantises the pruned stage-1 kernels to 31 levels over [-0.45, 0.45] (its trained weights lie
mostly within +-0.4, symmetric about 0): the range is cut into ``levels`` cells of width
``(high - low) / levels`` (0.9 / 31 = 0.029, the thesis's "0.03") and each weight takes the value of its cell's
centre; weights outside the range take the outermost level. With an odd level count and a symmetric range 0
is a level, so pruned (zero) weights stay zero. Biases, and everything that is not a convolution kernel,
are not quantised (a bias costs one addition, there is nothing to save).

Deviation, documented: the thesis's printed 5- and 7-level formulas map a cell to its inner edge (e.g.
(0.09, 0.27] -> 0.09), which is not a uniform grid; we use the cell centres (0, +-0.18, +-0.36 for 5 levels).

Fine-tuning: ``FakeQuant`` quantises on every forward pass while the float weights are kept and updated;
its backward pass is the identity (STE: the gradient at the quantised weight is applied to the float one,
as the thesis's Algorithm 4-3 does). The codes (cell indices) are what ``pack`` stores.
An INT8 export through ONNX Runtime is a later step; ``UniformQuantiser.scheme`` names the scheme so that
other quantisers (per-channel affine INT8) can sit beside this one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..nets.counting import kernel_layers
from .masks import bake

THESIS_LEVELS = 31
THESIS_RANGE = (-0.45, 0.45)
RELATIVE_QUANTILE, RELATIVE_REFERENCE = 0.99, 0.40  # see layer_scale


@dataclass(frozen=True)
class UniformQuantiser:
    """``levels`` equal cells over ``[low, high]``, each represented by its centre."""

    levels: int = THESIS_LEVELS
    low: float = THESIS_RANGE[0]
    high: float = THESIS_RANGE[1]
    scheme: str = "uniform-cell-centre"
    scale: float = 1.0  # the grid is ``scale`` x the levels (per-layer quantisers; 1 is the thesis's absolute grid)

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        if not 2 <= self.levels <= 256:
            raise ValueError(f"levels must be within 2..256, got {self.levels}")
        if not self.high > self.low:
            raise ValueError(f"range must have high > low, got ({self.low}, {self.high})")

    @property
    def step(self) -> float:
        return (self.high - self.low) / self.levels

    @property
    def bits(self) -> int:
        """Bits per code when packed tightly."""
        return max(1, math.ceil(math.log2(self.levels)))

    def codes(self, weight: torch.Tensor) -> torch.Tensor:
        """Cell index of each weight, 0..levels-1 (uint8)."""
        cell = torch.floor((weight.detach().double() / self.scale - self.low) / self.step)
        return cell.clamp_(0, self.levels - 1).to(torch.uint8)

    def values(self, codes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The level of each code. Written as ``centre + (k - middle) * step`` so that with a symmetric range
        and odd ``levels`` the middle code gives exactly 0."""
        centre = (self.low + self.high) / 2.0
        middle = (self.levels - 1) / 2.0
        return (((codes.to(torch.float64) - middle) * self.step + centre) * self.scale).to(dtype)

    def quantise(self, weight: torch.Tensor) -> torch.Tensor:
        return self.values(self.codes(weight), weight.dtype).to(weight.device)

    def scaled(self, scale: float) -> UniformQuantiser:
        return UniformQuantiser(self.levels, self.low, self.high, self.scheme, float(scale))

    def grid(self) -> torch.Tensor:
        """All levels, ascending."""
        return self.values(torch.arange(self.levels))


class _STEQuantise(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, weight: torch.Tensor, quantiser: UniformQuantiser) -> torch.Tensor:
        return quantiser.quantise(weight)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class FakeQuant(nn.Module):
    """Parametrization: the weight as seen by the layer is quantised; gradients pass straight through."""

    def __init__(self, quantiser: UniformQuantiser) -> None:
        super().__init__()
        self.quantiser = quantiser

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return _STEQuantise.apply(weight, self.quantiser)


def layer_scale(weight: torch.Tensor) -> float:
    """How much wider than the thesis's weights a layer's are: its 99th |w| percentile over 0.40.

    The thesis's absolute numbers (range +-0.45, threshold 0.02) fit its trained kernels, "mostly within
    +-0.4". A PyTorch-initialised 3-D kernel is ~1/sqrt(fan-in) wide (+-0.014 for 192 x 27 inputs), so on
    such a layer the absolute grid would set almost every weight to 0. Dividing by this scale first puts
    each layer in the thesis's frame (deviation, documented; ``relative=False`` keeps the absolute grid).
    """
    magnitude = weight.detach().abs().flatten().float()
    if magnitude.numel() > 2**24:  # torch.quantile's limit; a strided sample is plenty for a percentile
        magnitude = magnitude[:: magnitude.numel() // 2**23 + 1]
    value = float(torch.quantile(magnitude, RELATIVE_QUANTILE)) / RELATIVE_REFERENCE
    return value if value > 0 else 1.0


def quantise_uniform(
    model: nn.Module,
    levels: int = THESIS_LEVELS,
    range: tuple[float, float] = THESIS_RANGE,  # shadows the builtin: the brief's name
    fine_tune: bool = False,
    layers: Sequence[str] | None = None,
    relative: bool = False,
) -> UniformQuantiser | dict[str, UniformQuantiser]:
    """Quantise the kernels of the named (default: all) convolution layers of ``model``.

    ``fine_tune=True`` installs ``FakeQuant`` (float weights kept, quantised forward, STE backward) for
    quantisation-aware fine-tuning; call ``masks.bake(model)`` afterwards to keep the quantised values.
    ``fine_tune=False`` quantises in place: it bakes every mask and quantiser into plain parameters.
    Returns the quantiser (needed to pack the weights); with ``relative=True`` one quantiser per layer
    (``{layer name: quantiser}``), each scaled by ``layer_scale`` of that layer's weight now.
    """
    quantiser = UniformQuantiser(levels, float(range[0]), float(range[1]))
    chosen = [(n, model.get_submodule(n)) for n in layers] if layers is not None else kernel_layers(model)
    per_layer: dict[str, UniformQuantiser] = {}
    for name, layer in chosen:
        if parametrize.is_parametrized(layer, "weight") and any(
            isinstance(p, FakeQuant) for p in layer.parametrizations["weight"]
        ):
            raise ValueError(f"{name} is already fake-quantised")
        per_layer[name] = quantiser.scaled(layer_scale(layer.weight)) if relative else quantiser
        parametrize.register_parametrization(layer, "weight", FakeQuant(per_layer[name]))
    if not fine_tune:
        bake(model)
    return per_layer if relative else quantiser
