"""What the scanner adds: blur (reconstruction kernel), correlated noise, beam-hardening streaks, motion.

All of it works on float32 HU arrays in place where it can (the full-size
phantom is 80 M voxels), with separable Gaussian filters from scipy.ndimage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .raster import Grid

# Reconstruction kernels: in-plane PSF sigma (mm), unsharp-mask gain, noise correlation length (mm).
KERNELS = {"soft": (0.75, 0.0, 0.9), "standard": (0.55, 0.0, 0.65), "sharp": (0.45, 0.8, 0.4),
           "lung": (0.4, 1.2, 0.35)}


@dataclass
class Scanner:
    noise_hu: float = 30.0  # noise standard deviation in soft tissue
    kernel: str = "standard"
    streaks: bool = True
    motion: bool = False


class LowFrequencyField:
    """Smooth random texture (unit variance, ~``cell_mm`` correlation) served slab by slab.

    Built on a coarse grid and interpolated linearly: in-plane by two small
    matrix products once, along ``k`` per slab.
    """

    def __init__(self, grid: Grid, rng: np.random.Generator, cell_mm: float = 6.0) -> None:
        nk, nj, ni = grid.shape
        si, sj, sk = grid.spacing
        ck, cj, ci = (max(2, int(np.ceil(n * s / cell_mm)) + 2) for n, s in ((nk, sk), (nj, sj), (ni, si)))
        coarse = ndimage.gaussian_filter(rng.standard_normal((ck, cj, ci)).astype(np.float32), 1.0, mode="wrap")
        coarse /= max(float(coarse.std()), 1e-6)
        wj, wi = self._weights(nj, cj), self._weights(ni, ci)
        self.planes = np.einsum("kji,yj,xi->kyx", coarse, wj, wi, optimize=True).astype(np.float32)
        self.kpos = np.linspace(0, ck - 1.001, nk)

    @staticmethod
    def _weights(n: int, c: int) -> np.ndarray:
        pos = np.linspace(0, c - 1.001, n)
        i0 = np.floor(pos).astype(int)
        w = np.zeros((n, c), np.float32)
        w[np.arange(n), i0] = 1 - (pos - i0)
        w[np.arange(n), i0 + 1] = pos - i0
        return w

    def __call__(self, k0: int, k1: int) -> np.ndarray:
        pos = self.kpos[k0:k1]
        i0 = np.floor(pos).astype(int)
        t = (pos - i0).astype(np.float32)[:, None, None]
        return self.planes[i0] * (1 - t) + self.planes[i0 + 1] * t


def _sigma_vox(grid: Grid, mm_inplane: float, mm_z: float) -> tuple[float, float, float]:
    si, sj, sk = grid.spacing
    # Array order (k, j, i); the grid axes are treated as the scanner's (a rotated grid blurs slightly off-axis).
    return (mm_z / sk, mm_inplane / sj, mm_inplane / si)


def apply_scanner(ct: np.ndarray, grid: Grid, scanner: Scanner, rng: np.random.Generator,
                  body_fraction: np.ndarray | None = None, bone_center_lps: np.ndarray | None = None) -> None:
    """Blur, sharpen, streaks, motion and noise, in place on ``ct`` (float32 HU)."""
    psf, gain, corr = KERNELS.get(scanner.kernel, KERNELS["standard"])
    sk = grid.spacing[2]
    sigma = _sigma_vox(grid, psf, 0.45 * sk)
    if scanner.motion:
        _motion(ct, grid, rng)
    if gain > 0:
        blurred = ndimage.gaussian_filter(ct, sigma, mode="nearest")
        wide = ndimage.gaussian_filter(blurred, tuple(2 * s for s in sigma), mode="nearest")
        blurred -= wide  # band-pass detail
        blurred *= np.float32(gain)
        ndimage.gaussian_filter(ct, sigma, output=ct, mode="nearest")
        ct += blurred
        del blurred, wide
    else:
        ndimage.gaussian_filter(ct, sigma, output=ct, mode="nearest")
    if scanner.streaks and bone_center_lps is not None:
        _streaks(ct, grid, rng, bone_center_lps)
    _noise(ct, grid, scanner.noise_hu, corr, rng, body_fraction)


def _noise(ct: np.ndarray, grid: Grid, noise_hu: float, corr_mm: float, rng: np.random.Generator,
           body_fraction: np.ndarray | None) -> None:
    """Gaussian noise filtered to ``corr_mm`` (a CT noise texture), scaled to ``noise_hu`` in soft tissue."""
    if noise_hu <= 0:
        return
    noise = rng.standard_normal(ct.shape, dtype=np.float32)
    sig = _sigma_vox(grid, corr_mm, 0.5 * corr_mm)
    # Slightly wider laterally: photon-starved horizontal paths through the shoulders.
    sig = (sig[0], sig[1], sig[2] * 1.25)
    ndimage.gaussian_filter(noise, sig, output=noise, mode="wrap")
    # Std of filtered white noise is 1 / sqrt(prod(2 sqrt(pi) sigma)) for sigma >~ 0.7 voxel; measure it instead.
    sample = noise[:: max(1, ct.shape[0] // 8)]
    noise *= np.float32(noise_hu / max(float(sample.std()), 1e-6))
    if body_fraction is not None:
        # Less noise in the air around the patient (fewer photons absorbed on those paths).
        noise *= np.float32(0.55) + np.float32(0.45) * body_fraction
    ct += noise


def _streaks(ct: np.ndarray, grid: Grid, rng: np.random.Generator, center_lps: np.ndarray) -> None:
    """Faint dark/bright lines through the spine, varying along z (beam hardening between bones)."""
    nk, nj, ni = ct.shape
    c = grid.to_index(np.asarray(center_lps, float)[None])[0]
    jj, ii = np.mgrid[0:nj, 0:ni].astype(np.float32)
    si, sj = grid.spacing[0], grid.spacing[1]
    dx, dy = (ii - np.float32(c[0])) * si, (jj - np.float32(c[1])) * sj
    theta = np.arctan2(dy, dx)
    dist = np.sqrt(dx * dx + dy * dy)
    fade = np.exp(-dist / 90.0).astype(np.float32)
    block = max(1, int(round(30.0 / grid.spacing[2])))
    for k0 in range(0, nk, block):
        pattern = np.zeros((nj, ni), np.float32)
        for _ in range(int(rng.integers(2, 5))):
            phi = rng.uniform(0, np.pi)
            amp = rng.uniform(-18, 12)
            width = rng.uniform(0.01, 0.03)
            delta = np.angle(np.exp(1j * 2 * (theta - phi))) / 2  # lines through the centre, both directions
            pattern += np.float32(amp) * np.exp(-(delta / width) ** 2 / 2).astype(np.float32)
        ct[k0:k0 + block] += pattern * fade


def _motion(ct: np.ndarray, grid: Grid, rng: np.random.Generator) -> None:
    """Breathing/cardiac motion: a blur along the anterior-posterior and cranio-caudal axes in a few slabs."""
    nk = ct.shape[0]
    sigma_mm = rng.uniform(1.0, 2.5)
    k0 = int(rng.integers(0, max(1, nk // 2)))
    k1 = min(nk, k0 + max(4, nk // 3))
    part = ct[k0:k1]
    blurred = ndimage.gaussian_filter(part, (sigma_mm / grid.spacing[2], sigma_mm / grid.spacing[1], 0.0),
                                      mode="nearest")
    ramp_w = np.sin(np.linspace(0, np.pi, k1 - k0)).astype(np.float32)[:, None, None]
    part += ramp_w * (blurred - part)
