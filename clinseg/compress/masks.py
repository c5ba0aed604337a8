"""Masks and fake quantisation attached to layer tensors as ``torch.nn.utils.parametrize`` parametrizations.

A parametrization is applied on every access to ``layer.weight``, so a masked tensor stays masked whatever
the optimiser does to the stored original (Adam's momentum included), and the gradient reaching a masked
entry is zero. The chain order on a weight is: filter mask, element mask, fake quantisation.
``bake`` writes the effective values back into plain parameters; ``plain_state_dict`` gives those values
under the plain names without touching the model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


class FilterMask(nn.Module):
    """Zeroes whole output channels: ``keep`` (C,) of 0/1 broadcast along axis ``dim`` of the tensor."""

    def __init__(self, keep: torch.Tensor, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("keep", keep.detach().float().clone())

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        shape = [1] * tensor.dim()
        shape[self.dim] = -1
        return tensor * self.keep.view(shape).to(tensor.dtype)


class ElementMask(nn.Module):
    """Zeroes single entries (``mask`` of the tensor's shape, 0/1)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().float().clone())

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor * self.mask.to(tensor.dtype)


def find_parametrization(module: nn.Module, tensor_name: str, kind: type[nn.Module]) -> nn.Module | None:
    """The parametrization of class ``kind`` on ``module.<tensor_name>``, if one is registered."""
    if not parametrize.is_parametrized(module, tensor_name):
        return None
    for p in module.parametrizations[tensor_name]:
        if isinstance(p, kind):
            return p
    return None


def has_parametrization(module: nn.Module, tensor_name: str, kind: type[nn.Module]) -> bool:
    return find_parametrization(module, tensor_name, kind) is not None


def bake(model: nn.Module) -> nn.Module:
    """Replace every parametrized tensor of ``model`` by its current effective value (in place; masks and
    fake quantisation are gone afterwards, their effect kept)."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return model


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with parametrized tensors replaced by their effective values under the plain
    names (``conv.weight`` rather than ``conv.parametrizations.weight.original``) and the masks left out."""
    state: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for prefix, module in model.named_modules():
            lead = f"{prefix}." if prefix else ""
            parametrized = set(module.parametrizations.keys()) if parametrize.is_parametrized(module) else set()
            for name, param in module.named_parameters(recurse=False):
                state[lead + name] = param.detach().clone()
            for name in parametrized:
                state[lead + name] = getattr(module, name).detach().clone()
            for name, buf in module.named_buffers(recurse=False):
                if buf is not None and name not in module._non_persistent_buffers_set:
                    state[lead + name] = buf.detach().clone()
    # Parametrization containers and their masks appear as submodules; drop what they contributed.
    return {k: v for k, v in state.items() if ".parametrizations." not in k and not k.startswith("parametrizations.")}
