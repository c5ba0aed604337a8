"""Nodule candidates: multi-scale Hessian "dot" enhancement inside the search region.

At each scale sigma the image is smoothed and its Hessian eigenvalues l1 <= l2 <= l3 are taken; a
bright blob has all three negative and similar, a vessel (a tube) has l3 near zero and a wall (a plate)
l2 and l3 near zero. The dot response is sigma^2 * l3^2 / |l1| where all three are negative, else 0
(sigma^2 makes scales comparable): it is large only for blobs. A uniform sphere of radius r answers
most at sigma = r / sqrt(3), which gives each candidate's radius estimate. Candidates are the local
maxima of the response over scales, strongest first, with nearby weaker maxima dropped. Outside the
search region the image is replaced by lung density first.

A second pass runs on a ground-glass window of the image (lung 0, -700..-450 HU full, solid tissue back to 0):
there a vessel is only its thin partial-volume shell, so a ground-glass nodule beside a vessel, which the
first pass sees as a dent in a much brighter tube, stands alone as a blob.

A third pass (on request, see ``detect_candidates``) runs the small scales on the vessel-suppressed image
(``bulges.py``: what straight segments of 8 mm do not fit in): a small solid nodule on the side of a vessel,
a dent in a tube to the first pass, stands alone there. Only maxima of solid density, round enough and
surrounded mostly by lung are kept (the pass's other maxima are bits of curved vessels and of the chest wall
the search region takes in).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ...parallel import available_threads
from .bulges import vessel_suppressed

SIGMAS_MM = (0.9, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0, 9.0)  # blob radii ~1.6 to ~16 mm (3 to 30 mm nodules)
DETECTION_MM = 1.0  # finer axes are resampled to this step for the filter
CLIP_HU = (-1000.0, 100.0)  # bone and contrast above a solid nodule's density add nothing but ringing
MIN_RESPONSE = 8.0  # HU-scaled; a ground-glass nodule (~230 HU over lung) answers about 40-70
GGO_SIGMAS_MM = (0.9, 1.25, 1.75, 2.5, 3.5)  # ground-glass pass: the small nodules the first pass misses
GGO_WINDOW_HU = (-850.0, -700.0, -450.0, -150.0)  # ramp up, plateau, ramp down (solid tissue -> 0)
GGO_LEVEL_HU = 230.0  # the window's plateau in HU-like units, so both passes share MIN_RESPONSE
MAX_CANDIDATES = 400  # per pass
NMS_MIN_MM = 2.5  # a weaker maximum this close to a stronger one is the same structure
GGO_SAME_MM = 2.0  # a ground-glass maximum this close to a first-pass candidate is that candidate
OUTSIDE_HU = -850.0
BULGE_SIGMAS_MM = (0.9, 1.25, 1.75)  # vessel-bulge pass: 3-6 mm nodules
BULGE_MIN_HU = -300.0  # at the maximum: solid tissue (a 3 mm nodule's partial-volume centre is -280..-90 HU)
BULGE_MIN_BLOBNESS = 0.45
BULGE_LUNG_HU = -500.0  # lung density below this ...
BULGE_LUNG_MM = 10.0  # ... in this cube around the maximum ...
BULGE_MIN_LUNG = 0.6  # ... at least this share: inside the lung, not in the chest wall
BULGE_SAME_MM = 2.5  # a bulge maximum this close to an earlier candidate is that candidate
MAX_BULGES = 100


@dataclass
class Candidate:
    """A blob: centre (float ``[k, j, i]`` index on the CT grid), scale, response, l3/l1 (1 = round), pass."""

    kji: np.ndarray
    sigma_mm: float
    response: float
    blobness: float
    ggo: bool = False  # found by the ground-glass pass
    bulge: bool = False  # found by the vessel-bulge pass

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


def _derivative(f: np.ndarray, axis: int, dx: float, out: np.ndarray) -> np.ndarray:
    """``np.gradient(f, dx, axis=axis)`` (edge order 1) with the same arithmetic, written in place into ``out``:
    numpy's full-size temporaries (a float64 quotient per call) were half of the detection's time."""
    n = f.shape[axis]

    def at(a: int | None, b: int | None) -> tuple[slice, ...]:
        s = [slice(None)] * f.ndim
        s[axis] = slice(a, b)
        return tuple(s)

    interior = out[at(1, -1)]
    np.subtract(f[at(2, None)], f[at(None, -2)], out=interior)
    np.divide(interior, 2.0 * dx, out=interior)
    for edge, hi, lo in ((at(0, 1), at(1, 2), at(0, 1)), (at(n - 1, n), at(n - 1, n), at(n - 2, n - 1))):
        np.subtract(f[hi], f[lo], out=out[edge])
        np.divide(out[edge], dx, out=out[edge])
    return out


def _dot_response(image: np.ndarray, region: np.ndarray, spacing: np.ndarray, sigma_mm: float,
                  buffers: list[np.ndarray]):
    """(flat indices, response, blobness) of one scale where it can be non-zero (in ``region``, negative
    Laplacian); zero elsewhere. ``buffers``: ten arrays of the image's shape, reused across scales (fresh ones
    cost page faults: reused, the full 512x512x300 phantom's candidates took 24.9 s of CPU instead of 27.0 s)."""
    smooth, grads, hess = buffers[0], buffers[1:4], buffers[4:10]
    ndimage.gaussian_filter(image, sigma_mm / spacing, output=smooth, truncate=3.0)
    for axis in range(3):
        _derivative(smooth, axis, spacing[axis], grads[axis])
    hzz, hzy, hzx, hyy, hyx, hxx = hess
    for axis, h in enumerate((hzz, hzy, hzx)):
        _derivative(grads[0], axis, spacing[axis], h)
    _derivative(grads[1], 1, spacing[1], hyy)
    _derivative(grads[1], 2, spacing[2], hyx)
    _derivative(grads[2], 2, spacing[2], hxx)
    laplacian = np.add(hzz, hyy, out=smooth)
    laplacian += hxx
    idx = np.flatnonzero(region & (laplacian < 0))
    l1, _, l3 = symmetric_eigenvalues(*(np.take(h.ravel(), idx) for h in (hzz, hyy, hxx, hzy, hzx, hyx)))
    ok = l3 < 0
    vals = np.zeros(l1.shape, np.float32)
    vals[ok] = sigma_mm ** 2 * l3[ok] ** 2 / -l1[ok]
    ratio = np.zeros(l1.shape, np.float32)
    ratio[ok] = l3[ok] / l1[ok]
    return idx, vals, ratio


def _scale_maxima(image: np.ndarray, mask: np.ndarray, det_spacing: np.ndarray, sigmas_mm: tuple[float, ...],
                  min_response: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(index, response, sigma, blobness) of the local maxima of the best response over ``sigmas_mm``."""
    best = np.zeros(image.shape, np.float32)
    best_sigma = np.zeros(image.shape, np.float32)
    best_blob = np.zeros(image.shape, np.float32)
    flat_best, flat_sigma, flat_blob = best.ravel(), best_sigma.ravel(), best_blob.ravel()
    buffers = [np.empty(image.shape, np.float32) for _ in range(10)]
    for sigma in sigmas_mm:
        idx, response, blob = _dot_response(image, mask, det_spacing, sigma, buffers)
        better = response > flat_best[idx]
        at = idx[better]
        flat_best[at], flat_sigma[at], flat_blob[at] = response[better], sigma, blob[better]
        del idx, response, blob
    del buffers
    peaks = (best >= ndimage.maximum_filter(best, size=3)) & (best > min_response)
    return np.argwhere(peaks), best[peaks], best_sigma[peaks], best_blob[peaks]


def ggo_window(image: np.ndarray) -> np.ndarray:
    """The ground-glass window (see the module docstring) of an HU image, in HU-like units."""
    a, b, c, d = GGO_WINDOW_HU
    up = np.clip((image - a) / (b - a), 0.0, 1.0)
    down = np.clip((d - image) / (d - c), 0.0, 1.0)
    return (np.minimum(up, down) * GGO_LEVEL_HU).astype(np.float32)


def _suppress(order: np.ndarray, pos_mm: np.ndarray, radii: np.ndarray, min_mm: float,
              limit: int) -> list[int]:
    """Greedy suppression: keep a maximum unless a kept stronger one lies within 0.8 of its radius (>= min_mm)."""
    kept: list[int] = []
    for n in order:
        if kept:
            d = np.linalg.norm(pos_mm[kept] - pos_mm[n], axis=1)
            if np.any(d < np.maximum(0.8 * radii[kept], min_mm)):
                continue
        kept.append(int(n))
        if len(kept) >= limit:
            break
    return kept


def detect_candidates(ct: np.ndarray, region: np.ndarray, spacing_ijk: tuple[float, float, float],
                      sigmas_mm: tuple[float, ...] = SIGMAS_MM, min_response: float = MIN_RESPONSE,
                      max_candidates: int = MAX_CANDIDATES,
                      ggo_sigmas_mm: tuple[float, ...] = GGO_SIGMAS_MM,
                      bulge_sigmas_mm: tuple[float, ...] = ()) -> list[Candidate]:
    """Candidates in ``region`` of ``ct`` (HU, ``[k, j, i]``): the first pass's strongest first, then the
    ground-glass pass's and the vessel-bulge pass's that are not already near one (see the module docstring).

    The vessel-bulge pass runs only when asked (``bulge_sigmas_mm=BULGE_SIGMAS_MM``): it gives 7 more of the 80
    validation nodules a candidate, but with the shipped false-positive network it leaves the validation CPM
    where it was (docs/nodule.md)."""
    spacing = np.asarray(spacing_ijk[::-1], float)
    margin = [int(np.ceil(2 * max(sigmas_mm) / s)) for s in spacing]
    where = np.argwhere(region)
    if where.size == 0:
        return []
    lo = np.maximum(where.min(0) - margin, 0)
    hi = np.minimum(where.max(0) + 1 + np.asarray(margin), region.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    raw = ct[box].astype(np.float32)
    mask = region[box]
    zoom = np.where(spacing < DETECTION_MM * 0.95, spacing / DETECTION_MM, 1.0)
    if np.any(zoom != 1.0):
        raw = ndimage.zoom(raw, zoom, order=1)
        mask = ndimage.zoom(mask.astype(np.uint8), zoom, order=0).astype(bool)
    n_in, n_out = np.asarray(ct[box].shape), np.asarray(raw.shape)
    step = np.where(n_out > 1, (n_in - 1) / np.maximum(n_out - 1, 1), 1.0)  # zoom's own index mapping
    det_spacing = spacing * step
    # Outside the (closed) lungs the image is set to lung density: a juxta-pleural nodule then stands
    # alone instead of a bump on the chest wall, which the Hessian would read as a plate.
    image = np.where(mask, np.clip(raw, *CLIP_HU), OUTSIDE_HU).astype(np.float32)
    jobs = {"first": (image, sigmas_mm)}
    if ggo_sigmas_mm:
        jobs["ggo"] = (np.where(mask, ggo_window(raw), 0.0).astype(np.float32), ggo_sigmas_mm)
    # The passes are independent, one thread each: on two cores the full phantom's candidates took 20 s, not 27 s.
    with ThreadPoolExecutor(min(len(jobs), available_threads())) as pool:
        found = pool.map(lambda job: _scale_maxima(job[0], mask, det_spacing, job[1], min_response), jobs.values())
        passes = dict(zip(jobs, found))
    suppressed = vessel_suppressed(image, det_spacing, OUTSIDE_HU) if bulge_sigmas_mm else None
    del image, jobs
    if suppressed is not None:
        # Only solid maxima are kept: the response is needed at solid voxels and their neighbours alone
        # (the same maxima there, at a fraction of the eigenvalues' cost).
        near_solid = ndimage.maximum_filter((raw >= BULGE_MIN_HU).view(np.uint8), size=3).view(bool) & mask
        passes["bulge"] = _bulge_maxima(_scale_maxima(suppressed, near_solid, det_spacing, bulge_sigmas_mm,
                                                      min_response), raw, det_spacing)
        del suppressed
    out: list[Candidate] = []
    earlier_mm = np.zeros((0, 3))
    for name, (idx, values, sigmas, blobs) in passes.items():
        pos_mm = idx * det_spacing
        radii = np.sqrt(3.0) * sigmas
        order = np.argsort(-values, kind="stable")
        if name != "first" and len(earlier_mm) and len(pos_mm):
            # A later pass's maximum on an earlier candidate is that candidate seen again.
            same = GGO_SAME_MM if name == "ggo" else BULGE_SAME_MM
            near = np.array([np.min(np.linalg.norm(earlier_mm - p, axis=1)) for p in pos_mm])
            order = np.array([n for n in order if near[n] >= same], int)
        kept = _suppress(order, pos_mm, radii, NMS_MIN_MM, MAX_BULGES if name == "bulge" else max_candidates)
        out += [Candidate(lo + idx[n] * step, float(sigmas[n]), float(values[n]), float(blobs[n]), name == "ggo",
                          name == "bulge") for n in kept]
        earlier_mm = np.concatenate([earlier_mm, pos_mm[kept].reshape(-1, 3)])
    return out


def _bulge_maxima(maxima: tuple[np.ndarray, ...], raw: np.ndarray, det_spacing: np.ndarray) -> tuple[np.ndarray, ...]:
    """The vessel-bulge pass's maxima that are solid, round enough and inside the lung (constants above)."""
    idx, values, sigmas, blobs = maxima
    at = tuple(idx.T)
    size = np.maximum(np.rint(BULGE_LUNG_MM / det_spacing), 1).astype(int)
    lung = ndimage.uniform_filter((raw < BULGE_LUNG_HU).astype(np.float32), size, mode="nearest")
    keep = (raw[at] >= BULGE_MIN_HU) & (blobs >= BULGE_MIN_BLOBNESS) & (lung[at] >= BULGE_MIN_LUNG)
    return idx[keep], values[keep], sigmas[keep], blobs[keep]
