"""The network false-positive reducer: candidate patches -> ``NoduleFPR`` -> nodule probability.

Each candidate is read as a ``PATCH``^3 patch at 1 mm around its centre (trilinear, HU clipped to
[-1200, 600] and scaled to 0..1 as NoduleNet's pre-processing), with four scalars of the blob filter. The
weights are the built-in model ``MODEL_ID`` (trained on phantoms only, see its card); without them the
classical engine keeps its logistic score.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ...errors import InputError
from ...nets.nodule_fpr import PATCH
from .candidates import Candidate
from .nodulenet_engine import NoduleNetDetector

MODEL_ID = "nodule-fpr-phantom"  # the default of --engine auto/model
THICK_MODEL_ID = "nodule-fpr-thick-phantom"  # the default instead on voxels coarser than THICK_SLICE_MM
THICK_SLICE_MM = 2.0  # the engine was built and checked on voxels of at most 1.4 mm (docs/nodule.md)
FPR_CLASS = "nodule_fpr:NoduleFPR"
NODULENET_CLASS = "nodulenet:NoduleNet"
PATCH_MM = 1.0
HU_RANGE = (-1200.0, 600.0)
ROI_MARGIN_MM = 4.0  # the ROI holds the candidate's radius plus this much surroundings
BATCH = 128
# The network was trained on batches a quarter positive, while 393 of the 19,441 candidates of its training
# phantoms (2.0 %) lie on a nodule: its logit is moved by logit(0.020) - logit(0.25) so that the score is a
# probability at the candidates' own prior (the ranking, hence FROC and CPM, does not change).
PRIOR_SHIFT = float(np.log(393 / (19441 - 393)) - np.log(0.25 / 0.75))


def _linear_weights(coords: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower and upper neighbour indices (clamped to 0..n-1, ``map_coordinates``' "nearest" mode) and the
    upper one's weight for linear interpolation at ``coords``."""
    floor = np.floor(coords)
    below = floor.astype(int)
    return np.clip(below, 0, n - 1), np.clip(below + 1, 0, n - 1), coords - floor


def patches(ct: np.ndarray, spacing_ijk: tuple[float, float, float], centres_kji: np.ndarray) -> np.ndarray:
    """(N, PATCH, PATCH, PATCH) uint8 patches (HU_RANGE -> 0..255) centred on float ``[k, j, i]`` indices."""
    spacing = np.asarray(spacing_ijk[::-1], float)
    offsets = (np.arange(PATCH) - (PATCH - 1) / 2) * PATCH_MM
    out = np.zeros((len(centres_kji), PATCH, PATCH, PATCH), np.uint8)
    lo_hu, hi_hu = HU_RANGE
    half = np.ceil(((PATCH - 1) / 2 * PATCH_MM) / spacing).astype(int) + 2
    for n, c in enumerate(np.asarray(centres_kji, float).reshape(-1, 3)):
        # Interpolate in a small crop. The patch grid is axis-aligned, so trilinear interpolation is three
        # 1-D linear passes (as map_coordinates with order=1 and mode="nearest" gives, at a tenth of its time).
        lo = np.maximum(np.floor(c).astype(int) - half, 0)
        hi = np.minimum(np.floor(c).astype(int) + half + 2, ct.shape)
        values = ct[tuple(slice(a, b) for a, b in zip(lo, hi))].astype(np.float64)
        for axis in range(3):
            below, above, w = _linear_weights(c[axis] - lo[axis] + offsets / spacing[axis], values.shape[axis])
            shape = [1, 1, 1]
            shape[axis] = PATCH
            w = w.reshape(shape)
            values = np.take(values, below, axis=axis) * (1 - w) + np.take(values, above, axis=axis) * w
        values = values.astype(np.float32)
        out[n] = np.rint((np.clip(values, lo_hu, hi_hu) - lo_hu) * (255.0 / (hi_hu - lo_hu)))
    return out


def scalars(cands: list[Candidate]) -> np.ndarray:
    """(N, 4): log radius, log response, blobness, ground-glass pass."""
    return np.array([[np.log(c.radius_mm), np.log(max(c.response, 1e-3)), c.blobness, float(c.ggo)]
                     for c in cands], np.float32).reshape(-1, 4)


def roi_half_mm(cands: list[Candidate]) -> np.ndarray:
    return np.array([c.radius_mm + ROI_MARGIN_MM for c in cands], np.float32)


def network_inputs(patch: np.ndarray, scalar: np.ndarray, half: np.ndarray) -> tuple[torch.Tensor, ...]:
    """The network's tensors from uint8 patches, scalars and ROI half-sizes."""
    x = torch.from_numpy(patch).float().div_(255.0)[:, None]
    return x, torch.from_numpy(scalar), torch.from_numpy(half)


@dataclass(frozen=True)
class FPReducer:
    """A registered reducer network in eval mode and the logit shift to its training candidates' prior."""

    model_id: str
    network: torch.nn.Module
    prior_shift: float

    def logits(self, ct: np.ndarray, spacing_ijk: tuple[float, float, float], cands: list[Candidate]) -> np.ndarray:
        """One logit per candidate at the candidates' prior (higher: more likely a nodule)."""
        out = np.zeros(len(cands), np.float32)
        with torch.inference_mode():
            for start in range(0, len(cands), BATCH):
                part = cands[start:start + BATCH]
                p = patches(ct, spacing_ijk, np.array([c.kji for c in part]))
                out[start:start + len(part)] = self.network(*network_inputs(p, scalars(part),
                                                                            roi_half_mm(part))).numpy()
        return out + self.prior_shift


@lru_cache(maxsize=2)
def load_fpr(model_id: str = MODEL_ID, device: str = "cpu") -> FPReducer | NoduleNetDetector | None:
    """The registered network ``model_id``, or None when not installed: a false-positive reducer (card class
    ``nodule_fpr:NoduleFPR``) that scores the blob candidates, or a whole NoduleNet (``nodulenet:NoduleNet``) that
    finds the candidates too (on ``device``).

    A reducer's prior shift comes from its card (``figures.prior_shift``, written by ``clinseg train nodule``)."""
    from ...registry import get_registry

    registry = get_registry()
    if not registry.is_installed(model_id):
        return None
    card = registry.card(model_id)
    if card.architecture[0] == NODULENET_CLASS:
        return NoduleNetDetector(model_id, registry.load_network(model_id, device).eval(), device)
    if card.architecture[0] != FPR_CLASS:
        raise InputError(model_id, f"is a {card.architecture[0]} network; the nodule engine runs false-positive "
                                   f"reducers ({FPR_CLASS}) and NoduleNet ({NODULENET_CLASS}) only")
    shift = float(card.figures.get("prior_shift", PRIOR_SHIFT))
    return FPReducer(model_id, registry.load_network(model_id, "cpu").eval(), shift)


def default_fpr(spacing_ijk: tuple[float, float, float]) -> FPReducer | NoduleNetDetector | None:
    """The built-in reducer for this sampling: the one fine-tuned on 2.5 mm slices when a voxel is coarser than
    ``THICK_SLICE_MM`` (and it is installed), else ``MODEL_ID``; None when neither is installed."""
    if max(spacing_ijk) > THICK_SLICE_MM:
        thick = load_fpr(THICK_MODEL_ID)
        if thick is not None:
            return thick
    return load_fpr()
