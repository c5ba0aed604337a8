"""Physical channel removal after filter pruning: every masked filter, its bias, the normalisation channel
after it and the input slices of the layers that read it are deleted, and smaller layers are built.

Works on any network with a ``channel_graph()`` (``clinseg.nets.channel_graph``). The rebuilt layers hold
the effective values of the old ones (element masks and fake quantisation baked in, their parametrizations
dropped), so the rebuilt network computes what the masked one did, with fewer channels.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..nets.channel_graph import NETWORK_INPUT
from .prune import output_dim, pruned_filters


class ChannelChange(NamedTuple):
    before: int
    after: int


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _plain_class(module: nn.Module) -> type[nn.Module]:
    # A parametrized module's class is a generated subclass of the layer's own class.
    return type(module).__bases__[0] if parametrize.is_parametrized(module) else type(module)


def _rebuilt_conv(layer: nn.Module, keep_in: torch.Tensor, keep_out: torch.Tensor) -> nn.Module:
    if layer.groups != 1:
        raise ValueError("channel removal supports ungrouped convolutions only")
    transposed = isinstance(layer, nn.modules.conv._ConvTransposeNd)
    kwargs = dict(kernel_size=layer.kernel_size, stride=layer.stride, padding=layer.padding,
                  dilation=layer.dilation, bias=layer.bias is not None, padding_mode=layer.padding_mode)
    if transposed:
        kwargs["output_padding"] = layer.output_padding
    new = _plain_class(layer)(len(keep_in), len(keep_out), **kwargs)
    weight = layer.weight.detach()
    if transposed:  # (in, out, ...)
        weight = weight[keep_in][:, keep_out]
    else:  # (out, in, ...)
        weight = weight[keep_out][:, keep_in]
    with torch.no_grad():
        new.weight.copy_(weight)
        if layer.bias is not None:
            new.bias.copy_(layer.bias.detach()[keep_out])
    new.train(layer.training)
    return new.to(weight.device)


def _rebuilt_norm(norm: nn.Module, keep: torch.Tensor) -> nn.Module:
    if not isinstance(norm, nn.modules.batchnorm._BatchNorm):
        raise ValueError(f"channel removal supports BatchNorm layers after convolutions, got {type(norm).__name__}")
    new = _plain_class(norm)(len(keep), eps=norm.eps, momentum=norm.momentum, affine=norm.affine,
                     track_running_stats=norm.track_running_stats)
    with torch.no_grad():
        if norm.affine:
            new.weight.copy_(norm.weight.detach()[keep])
            new.bias.copy_(norm.bias.detach()[keep])
        if norm.track_running_stats:
            new.running_mean.copy_(norm.running_mean[keep])
            new.running_var.copy_(norm.running_var[keep])
            new.num_batches_tracked.copy_(norm.num_batches_tracked)
    new.train(norm.training)
    return new.to(norm.running_mean.device if norm.running_mean is not None else "cpu")


@torch.no_grad()
def remove_pruned_channels(model: nn.Module) -> dict[str, ChannelChange]:
    """Rebuild, in place, every layer of ``model.channel_graph()`` without its pruned channels; returns the
    output channels of each layer before and after."""
    graph = getattr(model, "channel_graph", None)
    if graph is None:
        raise ValueError(f"{type(model).__name__} has no channel_graph(); cannot rebuild it smaller")
    nodes = graph()
    kept: dict[str, torch.Tensor] = {}  # producer -> kept output channel indices
    widths: dict[str, int] = {}  # producer -> output channels before removal
    changes: dict[str, ChannelChange] = {}
    for node in nodes:
        layer = model.get_submodule(node.conv)
        dim = output_dim(layer)
        n_out = layer.weight.shape[dim]
        drop = pruned_filters(layer) if node.prunable else torch.zeros(n_out, dtype=torch.bool)
        keep_out = torch.nonzero(~drop.cpu()).flatten()
        n_in = layer.weight.shape[1 - dim]
        own = n_in - sum(widths[s] for s in node.inputs if s != NETWORK_INPUT)
        pieces, offset = [], 0
        for source in node.inputs:
            if source == NETWORK_INPUT:
                pieces.append(torch.arange(own) + offset)
                offset += own
            else:
                pieces.append(kept[source] + offset)
                offset += widths[source]
        if offset != n_in:
            raise ValueError(f"{node.conv}: its inputs give {offset} channels, the layer reads {n_in}")
        keep_in = torch.cat(pieces)
        new = _rebuilt_conv(layer, keep_in.to(layer.weight.device), keep_out.to(layer.weight.device))
        if node.norm is not None:
            _replace(model, node.norm, _rebuilt_norm(model.get_submodule(node.norm), keep_out))
        _replace(model, node.conv, new)
        kept[node.conv], widths[node.conv] = keep_out, n_out
        changes[node.conv] = ChannelChange(n_out, len(keep_out))
    return changes
