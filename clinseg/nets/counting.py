"""Parameter counts in the two senses papers use: kernel weights only, and everything trainable.

"Weights-only" counts the ``weight`` tensors of convolution and transposed-convolution layers (the kernels
a table of layer shapes lists); biases, normalisation affines and other parameters are left out. The OAR
thesis's 3,154,896 for its stage-1 U-Net is a count of this kind.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

_KERNEL_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class ParameterCount(NamedTuple):
    weights_only: int  # convolution kernels
    full: int  # every parameter (kernels + biases + norm affines + ...)


def kernel_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The convolution and transposed-convolution layers of ``model``, in module order, with their names."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, _KERNEL_LAYERS)]


def count_parameters(model: nn.Module) -> ParameterCount:
    """Weights-only and full parameter counts of ``model`` (see the module docstring)."""
    weights = sum(m.weight.numel() for _, m in kernel_layers(model))
    return ParameterCount(weights_only=weights, full=sum(p.numel() for p in model.parameters()))
