"""Data augmentation on patch batches ``(N, 1, D, H, W)``, with every random draw from one ``torch.Generator``.

Spatial transforms (flips, a small rotation/scale about the patch centre) move image and label together:
the image is resampled trilinearly, the label by nearest neighbour, on the same sampling grid, so they stay
aligned (the thesis says it left labels un-augmented, which would misalign them under flips and affines).
Intensity transforms touch the image only: gamma, a smooth multiplicative bias field, Gaussian blur and
Gaussian noise. The thesis's motion, spike and ghosting artefacts are not reproduced.
Random parameters are drawn on the CPU; tensors may live on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities (per sample) and ranges; the defaults are moderate, nnU-Net-like settings."""

    flip_p: float = 0.5  # per axis
    affine_p: float = 0.3
    max_rotation_deg: float = 10.0  # per axis
    scale_range: tuple[float, float] = (0.9, 1.1)
    gamma_p: float = 0.15
    gamma_range: tuple[float, float] = (0.7, 1.5)
    bias_p: float = 0.1
    bias_strength: float = 0.3  # maximum |coefficient| of the log-field's quadratic polynomial
    blur_p: float = 0.1
    blur_sigma: tuple[float, float] = (0.5, 1.0)  # voxels
    noise_p: float = 0.15
    noise_sigma: float = 0.03  # maximum standard deviation, in [0, 1] intensity units

    @classmethod
    def none(cls) -> AugmentConfig:
        """Every transform off."""
        return cls(flip_p=0.0, affine_p=0.0, gamma_p=0.0, bias_p=0.0, blur_p=0.0, noise_p=0.0)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _happens(generator: torch.Generator, p: float) -> bool:
    return p > 0 and float(torch.rand((), generator=generator)) < p


def rotation_scale_matrix(angles_deg: tuple[float, float, float], scale: float) -> torch.Tensor:
    """3x3 matrix in array axis order (z, y, x): rotations about the z, y and x axes, then isotropic scale."""
    a, b, c = (math.radians(v) for v in angles_deg)
    rz = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]], dtype=torch.float64)
    ry = torch.tensor([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]], dtype=torch.float64)
    rx = torch.tensor([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]], dtype=torch.float64)
    return (rz @ ry @ rx) * scale


def affine_pair(image: torch.Tensor, label: torch.Tensor, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample one sample ``(1, D, H, W)`` image and label so that output voxel ``p`` reads input
    ``c + matrix @ (p - c)`` (voxel units, array order, ``c`` the patch centre). Image trilinear, label
    nearest; both repeat their edge voxels outside the patch, so they stay consistent there too (zeros
    would be air, i.e. lumen-like, in the image)."""
    size = torch.tensor(image.shape[1:], dtype=torch.float64)
    half = torch.diag(size / 2)
    # affine_grid works in normalised (x, y, z) coordinates: undo the voxel scaling and reverse the axes.
    theta = torch.linalg.inv(half) @ matrix.to(torch.float64) @ half
    theta = theta.flip(0).flip(1)
    theta = torch.cat([theta, torch.zeros(3, 1, dtype=torch.float64)], dim=1)[None].to(torch.float32)
    grid = F.affine_grid(theta.to(image.device), [1, 1, *image.shape[1:]], align_corners=False)
    new_image = F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    new_label = F.grid_sample(label[None].float(), grid, mode="nearest", padding_mode="border", align_corners=False)
    return new_image[0].to(image.dtype), new_label[0].to(label.dtype)


def spatial_augment(
    image: torch.Tensor, label: torch.Tensor, generator: torch.Generator, config: AugmentConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint flips and affine of one sample ``(1, D, H, W)``."""
    dims = [d for d in (1, 2, 3) if _happens(generator, config.flip_p)]
    if dims:
        image, label = image.flip(dims), label.flip(dims)
    if _happens(generator, config.affine_p):
        r = config.max_rotation_deg
        angles = (_uniform(generator, -r, r), _uniform(generator, -r, r), _uniform(generator, -r, r))
        scale = _uniform(generator, *config.scale_range)
        image, label = affine_pair(image, label, rotation_scale_matrix(angles, scale))
    return image, label


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(C, D, H, W)`` (same sigma on every axis, edge values replicated)."""
    radius = max(1, math.ceil(2 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=image.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = image.float()[:, None]  # (C, 1, D, H, W): channels as batch
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = -1
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out, pad, mode="replicate"), kernel.reshape(shape))
    return out[:, 0].to(image.dtype)


def bias_field(shape: tuple[int, int, int], coefficients: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``exp`` of a quadratic polynomial in normalised coordinates (9 coefficients: z, y, x, z2, y2, x2, zy, zx, yx)."""
    z, y, x = torch.meshgrid(*(torch.linspace(-1, 1, n, device=device) for n in shape), indexing="ij")
    terms = torch.stack([z, y, x, z * z, y * y, x * x, z * y, z * x, y * x])
    return torch.exp((coefficients.to(device).reshape(-1, 1, 1, 1) * terms).sum(0))


def intensity_augment(image: torch.Tensor, generator: torch.Generator, config: AugmentConfig) -> torch.Tensor:
    """Gamma, bias field, blur and noise on one sample ``(1, D, H, W)`` with values in about [0, 1]."""
    if _happens(generator, config.gamma_p):
        image = image.clamp(0, 1) ** _uniform(generator, *config.gamma_range)
    if _happens(generator, config.bias_p):
        s = config.bias_strength
        coefficients = (torch.rand(9, generator=generator) * 2 - 1) * s
        image = image * bias_field(tuple(image.shape[1:]), coefficients, image.device)
    if _happens(generator, config.blur_p):
        image = gaussian_blur(image, _uniform(generator, *config.blur_sigma))
    if _happens(generator, config.noise_p):
        sigma = _uniform(generator, 0.0, config.noise_sigma)
        seed = int(torch.randint(0, 2**62, (), generator=generator))
        noise_generator = torch.Generator(device=image.device).manual_seed(seed)
        image = image + sigma * torch.randn(image.shape, generator=noise_generator, device=image.device)
    return image


def augment_batch(
    images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, config: AugmentConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment each sample of ``(N, 1, D, H, W)`` image and label batches independently."""
    out_images, out_labels = [], []
    for image, label in zip(images, labels):
        image, label = spatial_augment(image, label, generator, config)
        out_images.append(intensity_augment(image, generator, config))
        out_labels.append(label)
    return torch.stack(out_images), torch.stack(out_labels)
