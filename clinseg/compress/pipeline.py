"""The thesis's compression sequence as one call: channel pruning in steps, physical removal, threshold pruning
in steps, 31-level quantisation-aware fine-tuning, each followed by masked fine-tuning.

Every stage leaves a plain snapshot (a freshly built model holding the effective weights) so that a caller can
measure size, time and Dice before and after each step. Snapshots are rebuilt from ``plain_state_dict``
through the caller's ``build`` rather than deep-copied: a deep copy of a parametrized module shares its
generated class with the original, and baking the copy would strip ``weight`` from the original too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from .finetune import Batch, fine_tune
from .masks import bake, plain_state_dict
from .prune import kernel_sparsity, prune_filters_l1, prune_weights_threshold
from .quantise import THESIS_LEVELS, THESIS_RANGE, UniformQuantiser, quantise_uniform
from .rebuild import remove_pruned_channels

Builder = Callable[[dict[str, torch.Tensor]], nn.Module]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class CompressionPlan:
    """The thesis's settings; ``steps`` fine-tuning iterations after every pruning / quantisation step
    (the thesis: 2000)."""

    prune_fraction: float = 0.20
    prune_step: float = 0.05
    threshold: float = 0.02
    threshold_step: float = 0.01
    levels: int = THESIS_LEVELS
    range: tuple[float, float] = THESIS_RANGE
    steps: int = 2000
    lr: float = 1e-4
    relative: bool = True  # threshold and grid in each layer's frame (quantise.layer_scale); False: absolute

    def fractions(self) -> list[float]:
        n = round(self.prune_fraction / self.prune_step)
        return [round(self.prune_step * (k + 1), 6) for k in range(n)] if self.prune_fraction > 0 else []

    def thresholds(self) -> list[float]:
        n = round(self.threshold / self.threshold_step)
        return [round(self.threshold_step * (k + 1), 6) for k in range(n)] if self.threshold > 0 else []


@dataclass
class Stage:
    name: str
    model: nn.Module  # plain (no parametrizations), eval mode
    quantiser: UniformQuantiser | dict[str, UniformQuantiser] | None = None
    sparsity: float = 0.0
    losses: list[float] = field(default_factory=list)


def snapshot(model: nn.Module, build: Builder) -> nn.Module:
    """A plain copy of ``model`` as it computes now (masks and fake quantisation baked in)."""
    state = plain_state_dict(model)
    copy = build(state)
    copy.load_state_dict(state)
    return copy.eval()


def compress(
    model: nn.Module,
    build: Builder,
    batches: Iterator[Batch],
    loss_fn: LossFn,
    plan: CompressionPlan = CompressionPlan(),
    log: Callable[[str], None] | None = None,
) -> list[Stage]:
    """Compress ``model`` in place following ``plan``; returns the stages (original, channel-pruned,
    threshold-pruned, quantised), each with a plain snapshot. ``build(state)`` must return an untrained
    model that can load ``state`` (e.g. ``OARUNet(channels=channels_from_state_dict(state))``)."""
    say = log or (lambda _: None)
    stages = [Stage("original", snapshot(model, build))]
    losses: list[float] = []
    if plan.fractions():
        for fraction in plan.fractions():
            prune_filters_l1(model, fraction)
            losses += fine_tune(model, batches, loss_fn, plan.steps, plan.lr)
            say(f"channel pruning {fraction:.0%}: fine-tuned {plan.steps} steps, last loss {_last(losses)}")
        remove_pruned_channels(model)
        stages.append(Stage(f"channel pruning {plan.prune_fraction:.0%}", snapshot(model, build), losses=losses))
    losses = []
    if plan.thresholds():
        for threshold in plan.thresholds():
            prune_weights_threshold(model, threshold, relative=plan.relative)
            losses += fine_tune(model, batches, loss_fn, plan.steps, plan.lr)
            say(f"threshold {threshold:g}: sparsity {kernel_sparsity(model):.3f}, last loss {_last(losses)}")
        stages.append(Stage(f"threshold {plan.threshold:g}", snapshot(model, build), sparsity=kernel_sparsity(model),
                            losses=losses))
    if plan.levels:
        quantiser = quantise_uniform(model, plan.levels, plan.range, fine_tune=True, relative=plan.relative)
        losses = fine_tune(model, batches, loss_fn, plan.steps, plan.lr)
        say(f"{plan.levels}-level STE fine-tuning: {plan.steps} steps, last loss {_last(losses)}")
        bake(model)
        stages.append(Stage(f"{plan.levels}-level quantisation", snapshot(model, build), quantiser,
                            kernel_sparsity(model), losses))
    model.eval()
    return stages


def _last(losses: list[float]) -> str:
    return f"{losses[-1]:.4f}" if losses else "-"
