"""Two-stage OAR inference (document 001) with a registered ``OARCascade``.

Stage 1: the whole scan resampled to the card's spacing, windowed, run through the sliding-window engine; the
class probabilities are brought back to the CT grid organ by organ (each inside its own box, so memory stays
that of one float map of the CT) and the label is the arg-max. Stage 2: for each small organ the card lists
(``postprocessing`` ops ``stage2``), a fixed-size crop at a finer spacing is centred where stage 1 put the organ,
the organ's binary model runs on it, and its mask replaces stage 1's for that organ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ...engine import SlidingWindowInferer, select_device
from ...preprocess import crop, resample, resample_to, window
from ...progress import CancelToken, ProgressCallback
from ...registry import get_registry
from ...volume import Volume

AIR_HU = -1000.0


@dataclass
class OrganPrediction:
    labels: Volume  # uint8 on the CT grid
    stage2: list[str] = field(default_factory=list)  # organs refined by a stage-2 model
    missing_stage2: list[str] = field(default_factory=list)  # stage-2 organs stage 1 did not locate


def _native_box(ct: Volume, grid: Volume, box: tuple[slice, ...], pad: int = 1) -> tuple[slice, ...] | None:
    """The CT-grid index box covering ``box`` of another grid (``grid``) in physical space."""
    corners = np.array([[i, j, k] for k in (box[0].start - 0.5, box[0].stop - 0.5)
                        for j in (box[1].start - 0.5, box[1].stop - 0.5)
                        for i in (box[2].start - 0.5, box[2].stop - 0.5)], float)
    ijk = ct.physical_to_index(grid.index_to_physical(corners))
    lo = np.floor(ijk.min(0)).astype(int) - pad
    hi = np.ceil(ijk.max(0)).astype(int) + pad + 1
    size = np.array(ct.size_ijk)
    lo, hi = np.clip(lo, 0, size), np.clip(hi, 0, size)
    if np.any(hi <= lo):
        return None
    return tuple(slice(int(lo[a]), int(hi[a])) for a in (2, 1, 0))


def _paste_max(ct: Volume, coarse: Volume, prob: np.ndarray, box: tuple[slice, ...], value: int,
               best: np.ndarray, labels: np.ndarray) -> None:
    """Resample ``prob[box]`` (on ``coarse``'s grid) onto the CT grid and take the label where it wins."""
    target = _native_box(ct, coarse, box)
    if target is None:
        return
    patch = crop(coarse.with_array(prob), box)
    up = resample_to(patch, crop(ct.with_array(best), target), order=1, default_value=0.0).array
    sub_best, sub_labels = best[target], labels[target]
    win = up > sub_best
    sub_best[win] = up[win]
    sub_labels[win] = value


def _stage1(ct: Volume, network: torch.nn.Module, card, device: torch.device, progress, cancel) -> np.ndarray:
    from ...preprocess import bounding_box

    inputs, inference = card.inputs, card.inference
    spacing = card.working_spacing(ct.spacing) or ct.spacing
    low, high = inputs["intensity"]["clip"]
    seen = resample(ct, spacing, order=1, default_value=AIR_HU)
    inferer = SlidingWindowInferer(tuple(inputs["patch_size"]), overlap=float(inputs.get("overlap", 0.25)),
                                   batch_size=int(inference.get("batch_size", 2)),
                                   precision=inference.get("precision", "auto"), device=device)
    logits = inferer(window(seen.array, low, high), network, progress=progress, cancel=cancel)
    prob = torch.softmax(logits, dim=0).numpy()
    coarse_labels = prob.argmax(0)
    best = resample_to(seen.with_array(prob[0]), ct, order=1, default_value=1.0).array
    labels = np.zeros(ct.shape, np.uint8)
    for value in range(1, prob.shape[0]):
        box = bounding_box(coarse_labels == value, 2)
        if box is not None:
            _paste_max(ct, seen, prob[value], box, value, best, labels)
    return labels


def _stage2_grid(ct: Volume, centre_lps: np.ndarray, spacing, patch) -> Volume:
    """An empty crop grid of ``patch`` voxels (D, H, W) at ``spacing``, centred on a point, axes as the CT's."""
    size_ijk = np.array(patch[::-1], float)
    sp = np.asarray(spacing, float)
    origin = centre_lps - ct.direction @ (sp * (size_ijk - 1) / 2)
    return Volume(np.zeros(tuple(patch), np.float32), tuple(sp), tuple(origin), ct.direction.copy(), "crop")


def _stage2(ct: Volume, labels: np.ndarray, network, op: dict, card, device: torch.device) -> bool:
    value = int(op["label"])
    mask = labels == value
    if not mask.any():
        return False
    centre = ct.index_to_physical(np.argwhere(mask).mean(0)[::-1])
    grid = _stage2_grid(ct, centre, op["spacing"], op["patch"])
    low, high = card.inputs["intensity"]["clip"]
    seen = resample_to(ct, grid, order=1, default_value=AIR_HU)
    x = torch.from_numpy(window(seen.array, low, high))[None, None].to(device)
    model = network.stage2[op["key"]]
    with torch.no_grad():
        prob = torch.softmax(model(x).float(), dim=1)[0, 1].cpu().numpy()
    target = _native_box(ct, grid, tuple(slice(0, n) for n in grid.shape), pad=0)
    if target is None:
        return False
    up = resample_to(grid.with_array(prob), crop(ct.with_array(labels), target), order=1, default_value=0.0).array
    if not (up > 0.5).any():
        return False  # stage 2 found nothing: keep stage 1's mask rather than lose the organ
    labels[mask] = 0
    sub = labels[target]
    sub[up > 0.5] = value
    return True


def predict_organs(ct: Volume, model_id: str, device: str = "auto", use_stage2: bool = True,
                   progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> OrganPrediction:
    """Organ labels (the card's label values) on the CT grid."""
    registry = get_registry()
    card = registry.card(model_id)
    torch_device = select_device(device)
    network = registry.load_network(model_id, torch_device)
    stage1 = getattr(network, "stage1", network)
    labels = _stage1(ct, stage1, card, torch_device, progress, cancel)
    result = OrganPrediction(ct.with_array(labels, name="organs"))
    if not use_stage2:
        return result
    for op in card.postprocessing:
        if op.get("op") != "stage2" or op.get("key") not in getattr(network, "stage2", {}):
            continue
        if cancel is not None:
            cancel.check("oar")
        (result.stage2 if _stage2(ct, labels, network, op, card, torch_device) else result.missing_stage2).append(
            str(op.get("organ")))
    return result
