"""Blending weights for overlapping patches.

Weights are built as an outer product of one 1-D profile per axis. Because the sliding-window grid is a
Cartesian product of per-axis start positions, the sum of all patch weights at a voxel is then also an outer
product of per-axis sums, so the stitcher never needs a full-size weight-count volume.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InputError

BLENDING_MODES = ("gaussian", "constant")
_PROFILE_FLOOR = 1e-4  # per axis, so the 3-D weight is >= 1e-12; the default sigma never reaches it


def _check_patch(patch_size: Sequence[int]) -> tuple[int, ...]:
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != 3 or min(patch) < 1:
        raise InputError("patch_size", f"needs three positive sizes, got {tuple(patch_size)}")
    return patch


def axis_profiles(
    patch_size: Sequence[int], blending: str = "gaussian", sigma_scale: float = 0.125
) -> list[torch.Tensor]:
    """One float64 weight profile per axis (maximum 1, strictly positive everywhere)."""
    patch = _check_patch(patch_size)
    if blending not in BLENDING_MODES:
        raise InputError("blending", f"must be one of {BLENDING_MODES}, got {blending!r}")
    if blending == "constant":
        return [torch.ones(p, dtype=torch.float64) for p in patch]
    if not sigma_scale > 0:
        raise InputError("sigma_scale", f"must be > 0, got {sigma_scale}")
    profiles = []
    for p in patch:
        centre = (p - 1) / 2.0
        sigma = max(p * sigma_scale, 1e-6)
        x = torch.arange(p, dtype=torch.float64)
        log_g = -0.5 * ((x - centre) / sigma) ** 2
        g = torch.exp(log_g - log_g.max())  # normalised in log space: a narrow sigma cannot give 0 / 0
        # Tails of a narrow Gaussian underflow: floor them so that every voxel a patch covers keeps a
        # non-zero weight (normalisation never divides by 0) and the 3-D product stays a normal float32.
        g = torch.clamp(g, min=_PROFILE_FLOOR)
        profiles.append(g)
    return profiles


def gaussian_importance(patch_size: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    """Gaussian patch weight of shape ``patch_size`` (float32, maximum 1, strictly positive minimum).

    sigma is ``sigma_scale * patch`` per axis, so the border of a patch counts far less than its centre,
    where the network has seen the full context.
    """
    gz, gy, gx = axis_profiles(patch_size, "gaussian", sigma_scale)
    weight = gz[:, None, None] * gy[None, :, None] * gx[None, None, :]
    weight = weight / weight.max()
    return weight.to(torch.float32)


def monai_importance(patch_size: Sequence[int], blending: str = "gaussian", sigma_scale: float = 0.125) -> torch.Tensor:
    """The 3-D patch weight exactly as MONAI's ``compute_importance_map`` builds it (float32).

    Unlike ``axis_profiles`` the floor (at least 1e-3) applies to the 3-D product, so the weight is not
    separable: the stitcher then keeps an explicit weight-sum volume. Used with ``placement="stride"``, so a
    recipe validated with MONAI is reproduced voxel for voxel, not only closely.
    """
    patch = _check_patch(patch_size)
    if blending not in BLENDING_MODES:
        raise InputError("blending", f"must be one of {BLENDING_MODES}, got {blending!r}")
    if blending == "constant":
        return torch.ones(patch, dtype=torch.float32)
    weight = torch.ones((), dtype=torch.float32)
    for axis, p in enumerate(patch):
        x = torch.arange(-(p - 1) / 2.0, (p - 1) / 2.0 + 1, dtype=torch.float32)
        g = torch.exp(x**2 / (-2 * (p * sigma_scale) ** 2))
        weight = weight.unsqueeze(-1) * g if axis else g
    return torch.clamp(weight, min=max(float(weight.min()), 1e-3))
