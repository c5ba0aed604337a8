"""Nodule candidates: multi-scale Hessian "dot" enhancement inside the search region.

At each scale sigma the image is smoothed and its Hessian eigenvalues l1 <= l2 <= l3 are taken; a
bright blob has all three negative and similar, a vessel (a tube) has l3 near zero and a wall (a plate)
l2 and l3 near zero. The dot response is sigma^2 * l3^2 / |l1| where all three are negative, else 0
(sigma^2 makes scales comparable): it is large only for blobs. A uniform sphere of radius r answers
most at sigma = r / sqrt(3), which gives each candidate's radius estimate. Candidates are the local
maxima of the response over scales, strongest first, with nearby weaker maxima dropped. Outside the
search region the image is replaced by lung density first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SIGMAS_MM = (0.9, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0, 9.0)  # blob radii ~1.6 to ~16 mm (3 to 30 mm nodules)
DETECTION_MM = 1.0  # finer axes are resampled to this step for the filter
CLIP_HU = (-1000.0, 100.0)  # bone and contrast above a solid nodule's density add nothing but ringing
MIN_RESPONSE = 12.0  # HU-scaled; a ground-glass nodule (~230 HU over lung) answers about 40-70
MAX_CANDIDATES = 400
OUTSIDE_HU = -850.0


@dataclass
class Candidate:
    """A blob: centre (float ``[k, j, i]`` index on the CT grid), scale, response and l3/l1 (1 = round)."""

    kji: np.ndarray
    sigma_mm: float
    response: float
    blobness: float

    @property
    def radius_mm(self) -> float:
        return float(np.sqrt(3.0) * self.sigma_mm)


def symmetric_eigenvalues(a11, a22, a33, a12, a13, a23) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) of many symmetric 3x3 matrices, closed form (trigonometric solution)."""
    q = (a11 + a22 + a33) / 3
    p1 = a12 * a12 + a13 * a13 + a23 * a23
    b11, b22, b33 = a11 - q, a22 - q, a33 - q
    p = np.sqrt(np.maximum((b11 * b11 + b22 * b22 + b33 * b33 + 2 * p1) / 6, 1e-20))
    det = b11 * (b22 * b33 - a23 * a23) - a12 * (a12 * b33 - a23 * a13) + a13 * (a12 * a23 - b22 * a13)
    r = np.clip(det / (2 * p ** 3), -1.0, 1.0)
    phi = np.arccos(r) / 3
    hi = q + 2 * p * np.cos(phi)
    lo = q + 2 * p * np.cos(phi + 2 * np.pi / 3)
    return lo, 3 * q - hi - lo, hi


def _dot_response(image: np.ndarray, region: np.ndarray, spacing: np.ndarray, sigma_mm: float):
    """(response, blobness) arrays of one scale, zero outside ``region``."""
    smooth = ndimage.gaussian_filter(image, sigma_mm / spacing, truncate=3.0)
    grads = np.gradient(smooth, *spacing)
    hzz, hzy, hzx = np.gradient(grads[0], *spacing)
    hyy, hyx = np.gradient(grads[1], spacing[1], spacing[2], axis=(1, 2))
    hxx = np.gradient(grads[2], spacing[2], axis=2)
    del grads, smooth
    where = region & (hzz + hyy + hxx < 0)
    l1, _, l3 = symmetric_eigenvalues(hzz[where], hyy[where], hxx[where], hzy[where], hzx[where], hyx[where])
    ok = l3 < 0
    response = np.zeros(image.shape, np.float32)
    blob = np.zeros(image.shape, np.float32)
    vals = np.zeros(l1.shape, np.float32)
    vals[ok] = sigma_mm ** 2 * l3[ok] ** 2 / -l1[ok]
    response[where] = vals
    ratio = np.zeros(l1.shape, np.float32)
    ratio[ok] = l3[ok] / l1[ok]
    blob[where] = ratio
    return response, blob


def detect_candidates(ct: np.ndarray, region: np.ndarray, spacing_ijk: tuple[float, float, float],
                      sigmas_mm: tuple[float, ...] = SIGMAS_MM, min_response: float = MIN_RESPONSE,
                      max_candidates: int = MAX_CANDIDATES) -> list[Candidate]:
    """Candidates in ``region`` of ``ct`` (HU, ``[k, j, i]``), strongest first (see the module docstring)."""
    spacing = np.asarray(spacing_ijk[::-1], float)
    margin = [int(np.ceil(2 * max(sigmas_mm) / s)) for s in spacing]
    where = np.argwhere(region)
    if where.size == 0:
        return []
    lo = np.maximum(where.min(0) - margin, 0)
    hi = np.minimum(where.max(0) + 1 + np.asarray(margin), region.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    image = np.clip(ct[box].astype(np.float32), *CLIP_HU)
    mask = region[box]
    zoom = np.where(spacing < DETECTION_MM * 0.95, spacing / DETECTION_MM, 1.0)
    if np.any(zoom != 1.0):
        image = ndimage.zoom(image, zoom, order=1)
        mask = ndimage.zoom(mask.astype(np.uint8), zoom, order=0).astype(bool)
    # Outside the (closed) lungs the image is set to lung density: a juxta-pleural nodule then stands
    # alone instead of a bump on the chest wall, which the Hessian would read as a plate.
    image = np.where(mask, image, OUTSIDE_HU).astype(np.float32)
    n_in, n_out = np.asarray(ct[box].shape), np.asarray(image.shape)
    step = np.where(n_out > 1, (n_in - 1) / np.maximum(n_out - 1, 1), 1.0)  # zoom's own index mapping
    det_spacing = spacing * step

    best = np.zeros(image.shape, np.float32)
    best_sigma = np.zeros(image.shape, np.float32)
    best_blob = np.zeros(image.shape, np.float32)
    for sigma in sigmas_mm:
        response, blob = _dot_response(image, mask, det_spacing, sigma)
        better = response > best
        best[better], best_sigma[better], best_blob[better] = response[better], sigma, blob[better]
        del response, blob
    peaks = (best >= ndimage.maximum_filter(best, size=3)) & (best > min_response)
    idx = np.argwhere(peaks)
    values = best[peaks]
    order = np.argsort(-values, kind="stable")
    kept: list[Candidate] = []
    kept_mm: list[np.ndarray] = []
    for n in order:
        p_mm = idx[n] * det_spacing
        sigma = float(best_sigma[tuple(idx[n])])
        if kept_mm:
            d = np.linalg.norm(np.asarray(kept_mm) - p_mm, axis=1)
            radii = np.array([c.radius_mm for c in kept])
            if np.any(d < np.maximum(0.8 * radii, 2.5)):
                continue
        kept.append(Candidate(lo + idx[n] * step, sigma, float(values[n]), float(best_blob[tuple(idx[n])])))
        kept_mm.append(p_mm)
        if len(kept) >= max_candidates:
            break
    return kept
