"""Pruning with masks: L1-norm filter pruning (structured) and magnitude-threshold pruning (unstructured).

Filter pruning, as the OAR thesis (Algorithm 4-1) does it: in every prunable layer, rank the output filters
by the L1 norm of their kernel and zero the ``floor(C * fraction)`` smallest (the thesis drops the fraction:
96 x 0.15 = 14.4 -> 14). It is meant to be called with a growing fraction (0.05, 0.10, ... 0.20) and masked
fine-tuning between calls; filters pruned earlier have norm 0 and stay pruned. A pruned filter's bias and
the affine of the normalisation layer after it are masked too, so the channel is exactly zero downstream and
``remove_pruned_channels`` can delete it without changing the output.

Threshold pruning (Algorithm 4-2): zero every kernel weight with ``|w| < threshold`` (0.02 was kept; it gave
sparsity 0.150 on the pruned stage-1 model). Biases are left alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..nets.counting import kernel_layers
from .masks import ElementMask, FilterMask, find_parametrization
from .quantise import FakeQuant, layer_scale


def output_dim(layer: nn.Module) -> int:
    """Axis of ``layer.weight`` that indexes output channels (1 for transposed convolutions)."""
    return 1 if isinstance(layer, nn.modules.conv._ConvTransposeNd) else 0


def _refuse_if_quantised(layer: nn.Module, name: str) -> None:
    if find_parametrization(layer, "weight", FakeQuant) is not None:
        raise ValueError(f"{name} is already fake-quantised: prune before quantising")


def _prunable(model: nn.Module, layers: Sequence[str] | None) -> list[tuple[str, str | None]]:
    """(layer name, following norm name) pairs to prune."""
    graph = getattr(model, "channel_graph", None)
    nodes = graph() if graph is not None else []
    if layers is None:
        if graph is None:
            raise ValueError(f"{type(model).__name__} has no channel_graph(); name the layers to prune")
        return [(node.conv, node.norm) for node in nodes if node.prunable]
    # Named layers still get their norm masked (from the graph when there is one), or removal would not be exact.
    norms = {node.conv: node.norm for node in nodes}
    return [(name, norms.get(name)) for name in layers]


def _set_filter_mask(module: nn.Module, tensor_name: str, keep: torch.Tensor, dim: int) -> None:
    existing = find_parametrization(module, tensor_name, FilterMask)
    if existing is None:
        parametrize.register_parametrization(module, tensor_name, FilterMask(keep, dim))
    else:
        existing.keep.mul_(keep.to(existing.keep))


def filter_l1_norms(layer: nn.Module) -> torch.Tensor:
    """L1 norm of each output filter of a (transposed) convolution, from its effective weight."""
    dim = output_dim(layer)
    weight = layer.weight.detach().abs()
    return weight.transpose(0, dim).flatten(1).sum(dim=1)


@torch.no_grad()
def prune_filters_l1(model: nn.Module, fraction: float, layers: Sequence[str] | None = None) -> dict[str, int]:
    """Mask the ``floor(C * fraction)`` lowest-L1 filters of each prunable layer (from the model's
    ``channel_graph()`` unless ``layers`` names them). Returns the number of filters now masked per layer."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    pruned = {}
    for name, norm_name in _prunable(model, layers):
        layer = model.get_submodule(name)
        _refuse_if_quantised(layer, name)
        dim = output_dim(layer)
        norms = filter_l1_norms(layer)
        n_prune = math.floor(norms.numel() * fraction + 1e-9)
        keep = torch.ones_like(norms)
        if n_prune:
            keep[torch.argsort(norms, stable=True)[:n_prune]] = 0.0
        _set_filter_mask(layer, "weight", keep, dim)
        if layer.bias is not None:
            _set_filter_mask(layer, "bias", keep, 0)
        if norm_name is not None:
            norm = model.get_submodule(norm_name)
            for tensor_name in ("weight", "bias"):
                if getattr(norm, tensor_name, None) is not None:
                    _set_filter_mask(norm, tensor_name, keep, 0)
        pruned[name] = int((find_parametrization(layer, "weight", FilterMask).keep == 0).sum())
    return pruned


def pruned_filters(layer: nn.Module) -> torch.Tensor:
    """Boolean (C,) of the output filters masked by filter pruning (all False when none are)."""
    mask = find_parametrization(layer, "weight", FilterMask)
    if mask is None:
        return torch.zeros(layer.weight.shape[output_dim(layer)], dtype=torch.bool)
    return mask.keep == 0


@torch.no_grad()
def prune_weights_threshold(model: nn.Module, threshold: float = 0.02, layers: Sequence[str] | None = None,
                            relative: bool = False) -> float:
    """Mask every kernel weight with ``|w| < threshold`` in the named (default: all) convolution layers
    (``relative=True``: ``|w| < threshold x layer_scale``, the thesis's threshold in each layer's own frame, see
    ``quantise.layer_scale``); returns the sparsity of those layers' kernels afterwards."""
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    chosen = [(n, model.get_submodule(n)) for n in layers] if layers is not None else kernel_layers(model)
    for name, layer in chosen:
        _refuse_if_quantised(layer, name)
        limit = threshold * layer_scale(layer.weight) if relative else threshold
        keep = (layer.weight.detach().abs() >= limit).float()
        existing = find_parametrization(layer, "weight", ElementMask)
        if existing is None:
            parametrize.register_parametrization(layer, "weight", ElementMask(keep))
        else:
            existing.mask.mul_(keep)
    return kernel_sparsity(model, [n for n, _ in chosen])


@torch.no_grad()
def kernel_sparsity(model: nn.Module, layers: Sequence[str] | None = None) -> float:
    """Share of exactly-zero kernel weights over the named (default: all) convolution layers."""
    chosen = [model.get_submodule(n) for n in layers] if layers is not None else [m for _, m in kernel_layers(model)]
    total = sum(m.weight.numel() for m in chosen)
    zeros = sum(int((m.weight == 0).sum()) for m in chosen)
    return zeros / total if total else 0.0
