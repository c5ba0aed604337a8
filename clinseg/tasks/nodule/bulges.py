"""Vessel-suppressed image for the candidates' third pass: bulges on vessels.

A small nodule on the side of a vessel is, to the dot filter, a dent in a tube: no blob maximum of its own.
A vessel is long and straight over a few millimetres, a nodule is not: the grey opening of the image with a
straight segment of ``LINE_MM`` (erosion then dilation along it) keeps a vessel wherever the segment fits
inside it in one of 13 directions, and drops what is shorter than the segment in every direction. The image
minus the largest of the 13 openings (a white top-hat by segments) is the vessel-suppressed image: round
structures, a nodule's part that sticks out of its vessel included, stand alone there.
"""

from __future__ import annotations

import itertools

import numpy as np

LINE_MM = 8.0  # longer than a 3-4 mm nodule plus its vessel's calibre, shorter than a straight vessel run
# The 13 directions of the 26-neighbourhood, one of each opposite pair.
DIRECTIONS = tuple(d for d in itertools.product((-1, 0, 1), repeat=3) if d > (0, 0, 0))


def _pair(shape: tuple[int, ...], offset: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """(here, there) slices: ``a[here]`` and ``a[there]`` are the voxels x and x + offset, both in the grid."""
    here, there = [], []
    for o, n in zip(offset, shape):
        here.append(slice(max(0, -o), n - max(0, o)))
        there.append(slice(max(0, o), n + min(0, o)))
    return tuple(here), tuple(there)


def _line_extreme(f: np.ndarray, step: tuple[int, ...], points: int, erode: bool, fill: float) -> np.ndarray:
    """Minimum (``erode``) of f over x, x + step, ..., x + (points - 1) step, ``fill`` where the segment leaves
    the grid; or the maximum over x, x - step, ... (the dilation that completes the opening), by doubling."""
    out, spare = f.copy(), np.empty_like(f)
    span = 1
    sign = 1 if erode else -1
    op = np.minimum if erode else np.maximum
    while span < points:
        s = min(span, points - span)
        here, there = _pair(f.shape, tuple(sign * s * c for c in step))
        # Two buffers: an in-place op on overlapping views would make numpy copy one of them each time.
        op(out[here], out[there], out=spare[here])
        for axis, c in enumerate(step):  # the voxels whose partner is off the grid
            o = sign * s * c
            if o:
                edge = [slice(None)] * f.ndim
                edge[axis] = slice(f.shape[axis] - o, None) if o > 0 else slice(None, -o)
                # eroding, the segment does not fit there; dilating, nothing comes from off the grid
                spare[tuple(edge)] = fill if erode else out[tuple(edge)]
        out, spare = spare, out
        span += s
    return out


def line_opening(image: np.ndarray, spacing_kji: np.ndarray, length_mm: float = LINE_MM) -> np.ndarray:
    """The largest of the grey openings of ``image`` with straight segments of ``length_mm`` in 13 directions."""
    fill = float(image.min())
    best = np.full(image.shape, fill, image.dtype)
    for d in DIRECTIONS:
        step_mm = float(np.linalg.norm(np.asarray(d) * spacing_kji))
        points = int(np.ceil(length_mm / step_mm)) + 1
        eroded = _line_extreme(image, d, points, True, fill)
        np.maximum(best, _line_extreme(eroded, d, points, False, fill), out=best)
    return best


def vessel_suppressed(image: np.ndarray, spacing_kji: np.ndarray, background: float,
                      length_mm: float = LINE_MM) -> np.ndarray:
    """``background`` plus what the segment openings of ``image`` leave out (see the module docstring)."""
    out = image - line_opening(image, spacing_kji, length_mm)
    out += background
    return out
