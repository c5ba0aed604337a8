"""Stage-1 OAR training pairs from head & neck phantoms: the CT windowed as the OAR thesis does and resized
to one fixed grid, with a 9-class label map (background + the thesis's 8 organs).

Pre-processing after the thesis: HU clipped to [-1000, 600] and scaled to [0, 1]. Not done here, our choice:
the thesis's dataset z-score (a constant shift and scale that a network absorbs in its first layer) and its
augmentation. The grid is the caller's (the thesis: 72 x 208 x 208; small benches use less).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .headneck import generate_headneck

STAGE1_ORGANS = ("Brainstem", "Eye L", "Eye R", "Optic nerve L", "Optic nerve R", "Parotid L", "Parotid R",
                 "Mandible")  # label k + 1, the order of clinseg.nets.oar_unet.STAGE1_CLASSES
HU_WINDOW = (-1000.0, 600.0)


def window(hu: np.ndarray) -> np.ndarray:
    """HU -> [0, 1] over the thesis's window."""
    low, high = HU_WINDOW
    return ((np.clip(hu.astype(np.float32), low, high) - low) / (high - low)).astype(np.float32)


def stage1_case(seed: int, grid: tuple[int, int, int], spacing: tuple[float, float, float] = (2.0, 2.0, 3.0)
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """One phantom on ``grid`` (D, H, W): image (1, D, H, W) float32 and labels (D, H, W) int64."""
    phantom = generate_headneck(seed, spacing=spacing, with_tumour=False)
    labels = np.zeros(phantom.ct.shape, np.uint8)
    for k, name in enumerate(STAGE1_ORGANS, start=1):
        labels[phantom.mask(name)] = k  # the eye mask includes its lens
    image = torch.from_numpy(window(phantom.ct.array))[None, None]
    image = F.interpolate(image, size=grid, mode="trilinear", align_corners=False)[0]
    resized = F.interpolate(torch.from_numpy(labels)[None, None].float(), size=grid, mode="nearest-exact")
    return image.contiguous(), resized[0, 0].long()


def stage1_cases(seeds: range | list[int], grid: tuple[int, int, int],
                 spacing: tuple[float, float, float] = (2.0, 2.0, 3.0)) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [stage1_case(s, grid, spacing) for s in seeds]
