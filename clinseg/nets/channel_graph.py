"""How channels flow between a network's convolutions: what structured pruning needs to rebuild it smaller.

A network that supports physical channel removal lists, in execution order, one ``ChannelNode`` per
convolution: which earlier convolutions' outputs are concatenated (in order) to form its input, the
normalisation layer that follows it, and whether its output channels may be pruned (a classifier head's
channels are the classes and may not). Everything between nodes must map channels one to one
(activations, pooling, dropout).
"""

from __future__ import annotations

from typing import NamedTuple

NETWORK_INPUT = ""  # the source name of the network's own input channels


class ChannelNode(NamedTuple):
    conv: str  # dotted module name of a Conv*/ConvTranspose* layer
    inputs: tuple[str, ...]  # producers whose outputs are concatenated to form this layer's input
    norm: str | None = None  # dotted name of the normalisation layer right after it, if any
    prunable: bool = True
