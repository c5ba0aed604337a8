"""Label-quality scoring for training on noisy annotations (Pick-and-Learn, CTV thesis chapter 3).

QAM (quality awareness module): a VGG-like CNN reads the image concatenated with its label (image channels
+ label channels) and ends in a 1-channel convolution and global average pooling: one unbounded score per
sample. OCM (overfitting control module): ``s = lambda * tanh(score)`` bounds the scores to (-lambda, lambda),
so after the softmax over the batch no sample's weight exceeds another's by more than ``e^(2 lambda)``
(lambda = 2 in the thesis), which keeps the QAM from piling all the weight on a few samples early on.

The thesis used 2-D chest X-rays; ``dims=3`` is our generalisation to 3-D patches (batches of >= 2 patches).
Not stated there, our choices: stage widths 16/32/64/64, two 3x3(x3) conv + ReLU per stage, 2x max-pooling
between stages, no normalisation (batch statistics would let one sample's score depend on the others').
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

OCM_LAMBDA = 2.0
QAM_WIDTHS = (16, 32, 64, 64)


class QualityAwarenessModule(nn.Module):
    """``forward(image, label) -> (N,)`` raw quality scores; ``image`` and ``label`` are ``(N, C, *spatial)``."""

    def __init__(
        self,
        image_channels: int = 1,
        label_channels: int = 1,
        dims: int = 3,
        widths: Sequence[int] = QAM_WIDTHS,
        convs_per_stage: int = 2,
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        pool = nn.MaxPool3d if dims == 3 else nn.MaxPool2d
        self.image_channels = image_channels
        self.label_channels = label_channels
        layers: list[nn.Module] = []
        c_in = image_channels + label_channels
        for stage, width in enumerate(widths):
            if stage:
                layers.append(pool(2))
            for _ in range(convs_per_stage):
                layers += [conv(c_in, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                c_in = width
        layers.append(conv(c_in, 1, kernel_size=1))
        self.features = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if image.shape[1] != self.image_channels or label.shape[1] != self.label_channels:
            raise ValueError(f"QAM expects {self.image_channels} image and {self.label_channels} label channels, "
                             f"got {image.shape[1]} and {label.shape[1]}")
        x = torch.cat([image, label.to(image.dtype)], dim=1)
        return self.features(x).flatten(1).mean(dim=1)


def ocm_scores(scores: torch.Tensor, lam: float = OCM_LAMBDA) -> torch.Tensor:
    """The OCM squashing ``lam * tanh(score)``."""
    return lam * torch.tanh(scores)


def sample_weights(scores: torch.Tensor, lam: float | None = OCM_LAMBDA) -> torch.Tensor:
    """Per-sample loss weights: softmax over the batch of the OCM-squashed scores (``lam=None``: QAM alone)."""
    if scores.dim() != 1:
        raise ValueError(f"expected one score per sample (shape (N,)), got {tuple(scores.shape)}")
    squashed = scores if lam is None else ocm_scores(scores, lam)
    return torch.softmax(squashed, dim=0)
