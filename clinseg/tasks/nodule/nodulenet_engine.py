"""NoduleNet as the nodule engine's detector: the whole network of document 004 proposes and scores the nodules.

The CT goes onto the network's grid as the document pre-processes it (``network_image``: 1 mm, HU clipped to
[-1200, 600] and scaled to 0..255, ``PAD_VALUE`` outside the search region, as NoduleNet masks the lungs). The RPN
proposes boxes, the decoupled FPR head rescores and moves them, and each box kept becomes a candidate (its centre,
half its side as the radius) with the network's score. The engine then segments and measures them as it does the
blob candidates (``classical.segment_scored``), so the table, the masks and a click do not depend on the detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...preprocess import resample
from ...volume import Volume
from .candidates import Candidate

SPACING_MM = 1.0
HU_RANGE = (-1200.0, 600.0)
PAD_VALUE = 170  # 0..255 units: about 0 HU, NoduleNet's pad and outside-the-lungs value
RPN_SCORE = 0.05  # proposals kept for the FPR head (the document's 0.5 would cut the FROC curve short)
MAX_PROPOSALS = 300


def to_network_units(hu: np.ndarray) -> np.ndarray:
    """HU -> uint8 0..255 over ``HU_RANGE`` (the document's intensity pre-processing)."""
    lo, hi = HU_RANGE
    return np.rint((np.clip(hu, lo, hi) - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def network_image(ct: Volume, region: np.ndarray) -> Volume:
    """``ct`` (HU, padding filled) on the 1 mm grid in network units, ``PAD_VALUE`` outside ``region``
    (bool ``[k, j, i]`` on ``ct``'s grid)."""
    iso = resample(ct, SPACING_MM, order=1, default_value=-1024.0)
    inside = resample(Volume(region.astype(np.uint8), ct.spacing, ct.origin, ct.direction), SPACING_MM, order=0)
    image = to_network_units(iso.array)
    image[inside.array == 0] = PAD_VALUE
    return Volume(image, iso.spacing, iso.origin, iso.direction, ct.name)


@dataclass(frozen=True)
class NoduleNetDetector:
    """A registered NoduleNet in eval mode (``model_id``) on ``device``."""

    model_id: str
    network: torch.nn.Module
    device: str = "cpu"

    @torch.no_grad()
    def detect(self, image: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(centres ``[k, j, i]`` on ``image``'s grid, sides in voxels, scores) of the boxes kept, best first."""
        x = torch.from_numpy(image.array[None, None]).to(self.device).float()
        found = self.network.detect(x, rpn_score_threshold=RPN_SCORE, score_threshold=0.0,
                                    max_proposals=MAX_PROPOSALS, with_masks=False)
        boxes, scores = found.boxes.cpu().numpy(), found.scores.cpu().numpy()
        order = np.argsort(-scores, kind="stable")
        return boxes[order, :3], boxes[order, 3:].mean(axis=1), scores[order]

    def candidates(self, ct: np.ndarray, region: np.ndarray,
                   spacing_ijk: tuple[float, float, float]) -> tuple[list[Candidate], list[float]]:
        """The network's nodules of ``ct`` (HU ``[k, j, i]``, padding filled) in ``region`` as candidates on
        ``ct``'s grid, with their scores."""
        volume = Volume(ct, spacing_ijk)
        image = network_image(volume, region)
        centres, sides, scores = self.detect(image)
        if not len(scores):
            return [], []
        kji = volume.physical_to_index(image.index_to_physical(centres[:, ::-1]))[:, ::-1]
        inside = np.all((kji >= -0.5) & (kji <= np.asarray(ct.shape) - 0.5), axis=1)
        radii = sides * SPACING_MM / 2
        cands = [Candidate(k, float(r / np.sqrt(3.0)), float(s), 1.0) for k, r, s, ok in
                 zip(kji, radii, scores, inside) if ok]
        return cands, [float(s) for s, ok in zip(scores, inside) if ok]
