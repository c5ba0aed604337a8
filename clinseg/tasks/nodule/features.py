"""False-positive reduction: shape and density features of a candidate's mask, mapped to a 0..1 score.

The score is a logistic function of the features; its weights were fitted (L2-regularised logistic
regression, ``bench/nodule.py --fit``) on the candidates of training phantoms (seeds 100-107), never on
the held-out seeds the bench reports. Vessel bifurcations and crossings leak out of the ball limit or
are elongated / flat; scars are flat and thin; nodules are round, compact and fill their sphere.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .candidates import Candidate
from .segment import NoduleMask

FEATURES = ("log_diameter", "elongation", "flatness", "fill", "leak", "blobness", "log_response", "contrast",
            "offset", "halo", "pleura")

# Fitted by ``bench/nodule.py --fit`` on 670 candidates of seeds 100-107, 42 of them on nodules (standardised
# features: (value - mean) / sd). Largest weights: blobness +1.45, small size +1.47 (log_diameter -1.47: the
# large candidates are vessel junctions), halo +1.12, fill +1.04, response +1.01, offset -0.75, pleura -0.67.
MEAN = np.array([2.151, 2.776, 1.594, 0.5363, 0.2242, 0.5704, 3.253, 0.6571, 0.7681, 0.2304, 0.1274])
SD = np.array([0.6015, 1.341, 0.8467, 0.218, 0.2666, 0.1338, 0.5212, 0.2253, 0.403, 0.4211, 0.1892])
WEIGHTS = np.array([-1.47, -0.1121, -0.1625, 1.044, 0.1398, 1.449, 1.01, -0.1863, -0.7497, 1.118, -0.6685])
BIAS = -6.206

def candidate_features(cand: Candidate, seg: NoduleMask, spacing_ijk: tuple[float, float, float]) -> np.ndarray:
    """The ``FEATURES`` vector of one segmented candidate."""
    spacing = np.asarray(spacing_ijk[::-1], float)
    pts = np.argwhere(seg.mask) * spacing
    n = len(pts)
    volume = n * float(np.prod(spacing))
    diameter = (6 * volume / np.pi) ** (1 / 3)
    centroid = pts.mean(axis=0)
    ev = principal_axes(pts, spacing)[0][::-1]
    elongation = float(np.sqrt(ev[0] / max(ev[2], 1e-6)))
    flatness = float(np.sqrt(ev[1] / max(ev[2], 1e-6)))
    radius = diameter / 2
    fill = float(np.count_nonzero(np.linalg.norm(pts - centroid, axis=1) <= radius)) / n
    lo = np.array([s.start for s in seg.box])
    offset = float(np.linalg.norm(centroid - (cand.kji - lo) * spacing)) / max(radius, 0.5)
    # Share of the mask's outer shell outside the search region: contact with the pleura.
    shell = _shell(seg.mask)
    pleura = float(np.count_nonzero(shell & ~seg.allowed)) / max(1, np.count_nonzero(shell))
    return np.array([
        np.log(diameter), elongation, flatness, fill, seg.leak, cand.blobness, np.log(max(cand.response, 1e-3)),
        (seg.core_hu - seg.background_hu) / 1000.0, offset, float(seg.halo), pleura,
    ])


def principal_axes(pts: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Variances (ascending) and axes (columns) of points in mm; a voxel's own extent counts, so that a one-voxel
    mask is round."""
    cov = np.cov(pts.T) if len(pts) > 1 else np.zeros((3, 3))
    return np.linalg.eigh(cov + np.diag(spacing ** 2 / 12))


def _shell(mask: np.ndarray) -> np.ndarray:
    """Voxels just outside ``mask`` (its 6-connected outer shell)."""
    return ndimage.binary_dilation(mask) & ~mask


def score(features: np.ndarray) -> np.ndarray:
    """Nodule probability (0..1) of one feature vector or an (n, len(FEATURES)) array."""
    z = (np.atleast_2d(features) - MEAN) / SD
    return 1.0 / (1.0 + np.exp(-(z @ WEIGHTS + BIAS)))
