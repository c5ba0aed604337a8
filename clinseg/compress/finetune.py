"""The short masked / quantisation-aware fine-tuning run between compression steps.

The thesis retrains 2000 iterations after every pruning step (Adam, batch 1). Masks and fake quantisation are
parametrizations, so any optimiser loop keeps them: this one only fixes the order of the calls and returns the
losses so that a caller can see the recovery.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]


def fine_tune(
    model: nn.Module,
    batches: Iterator[Batch],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    steps: int,
    lr: float = 1e-4,
) -> list[float]:
    """``steps`` Adam steps of ``loss_fn(model(x), y)`` over ``batches`` (an endless iterator); returns the
    loss of every step. The model is left in eval mode."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    losses: list[float] = []
    if steps == 0:
        return losses
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        x, y = next(batches)
        optimiser.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses
