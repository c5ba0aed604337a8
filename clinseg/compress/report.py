"""How big a model is: parameters, nonzero parameters and bytes on disk (float32 safetensors, and packed
when a quantiser is given)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from safetensors.torch import save as st_save
from torch import nn
from torch.nn.utils import parametrize

from ..nets.counting import count_parameters, kernel_layers
from .masks import plain_state_dict
from .pack import Quantisers, packed_bytes


class SizeReport(NamedTuple):
    params: int  # every parameter
    weights_only: int  # convolution kernels
    nonzero_params: int
    nonzero_weights: int
    file_bytes: int  # the plain state dict as a safetensors file
    weights_only_bytes: int  # the kernels in float32 (the thesis's "12.03M" measure, in bytes)
    packed_bytes: int | None  # the packed quantised file, when a quantiser is given

    @property
    def sparsity(self) -> float:
        """Share of zero kernel weights."""
        return 1.0 - self.nonzero_weights / self.weights_only if self.weights_only else 0.0


def _effective_parameters(model: nn.Module) -> list[torch.Tensor]:
    """Every parameter as the model uses it (parametrized ones through their masks / quantisers)."""
    out = []
    for module in model.modules():
        if isinstance(module, parametrize.ParametrizationList):
            continue  # its 'original' is counted through the owning module below
        out += [p.detach() for _, p in module.named_parameters(recurse=False)]
        if parametrize.is_parametrized(module):
            out += [getattr(module, name).detach() for name in module.parametrizations]
    return out


def model_size_report(
    model: nn.Module, quantiser: Quantisers | None = None, bits: int | None = None
) -> SizeReport:
    """Sizes of ``model`` as it computes now (masks applied); ``quantiser`` adds the packed file's size."""
    state = plain_state_dict(model)
    counts = count_parameters(model)
    nonzero = sum(int((t != 0).sum()) for t in _effective_parameters(model))
    kernel_keys = {f"{n}.weight" if n else "weight" for n, _ in kernel_layers(model)}
    nonzero_weights = sum(int((state[k] != 0).sum()) for k in kernel_keys)
    file_bytes = len(st_save({k: v.contiguous() for k, v in state.items()}))
    packed = len(packed_bytes(model, quantiser, bits)) if quantiser is not None else None
    return SizeReport(counts.full, counts.weights_only, nonzero, nonzero_weights, file_bytes,
                      4 * counts.weights_only, packed)
