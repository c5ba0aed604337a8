"""Two-stage OAR inference (document 001) with a registered ``OARCascade``.

Stage 1: the whole scan resampled to the card's spacing, windowed, run through the sliding-window engine; the
class probabilities are brought back to the CT grid organ by organ (each inside its own box, so memory stays
that of one float map of the CT) and the label is the arg-max. Stage 2: for each small organ the card lists
(``postprocessing`` ops ``stage2``), a fixed-size crop at a finer spacing is placed by the op's anchor rule
(``anchors``: anchor organs' centroid plus an offset, mirrored for one side) or, without a rule, where stage 1
put the organ; the organ's binary model runs on it, and its mask replaces stage 1's for that organ. An op whose
``inputs`` list ``stage1_prob`` also gives its model stage 1's probability of the organ on the same crop, as a
second channel, so it refines stage 1 instead of starting from the CT alone; one whose ``blend`` is ``stage1_prob``
takes the mean of its model's and stage 1's probabilities of the organ on the crop. Before
that, each organ is kept to its head-to-foot band (op ``z_band``, ``zbands``) and paired organs are handed out
by side of the midsagittal plane (op ``left_right_by_midline``, ``sides``). After stage 2, a bone organ's outline
may be moved onto the CT's bone edge (op ``bone_edge``, ``bone_edge``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ...engine import SlidingWindowInferer, select_device
from ...preprocess import crop, resample, resample_to, window
from ...progress import CancelToken, ProgressCallback
from ...registry import get_registry
from ...volume import Volume
from .anchors import AnchorRule, anchor_point, crop_grid, organ_centroids
from .bone_edge import apply_bone_edges
from .sides import assign_sides, midline_plane, paired_labels
from .zbands import MIN_ANCHOR_ML, apply_z_bands

AIR_HU = -1000.0
STAGE1_PROB = "stage1_prob"  # a stage-2 op's ``inputs`` entry: stage 1's probability of the organ as a channel


@dataclass
class OrganPrediction:
    labels: Volume  # uint8 on the CT grid
    stage2: list[str] = field(default_factory=list)  # organs refined by a stage-2 model
    missing_stage2: list[str] = field(default_factory=list)  # stage-2 organs stage 1 did not locate
    midline: np.ndarray | None = None  # (a, b, c) of the midsagittal plane x = a + b*y + c*z (LPS mm), if used
    probabilities: dict[str, Volume] = field(default_factory=dict)  # organ -> stage 1's probability (its grid)


def covering_box(ct: Volume, grid: Volume, box: tuple[slice, ...], pad: int = 1) -> tuple[slice, ...] | None:
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
    target = covering_box(ct, coarse, box)
    if target is None:
        return
    patch = crop(coarse.with_array(prob), box)
    up = resample_to(patch, crop(ct.with_array(best), target), order=1, default_value=0.0).array
    sub_best, sub_labels = best[target], labels[target]
    win = up > sub_best
    sub_best[win] = up[win]
    sub_labels[win] = value


def _card_op(card, name: str) -> dict | None:
    return next((op for op in card.postprocessing if op.get("op") == name), None)


def _bands(prob: np.ndarray, seen: Volume, card) -> None:
    """Organs kept to their head-to-foot band around the anchor organ (card op ``z_band``)."""
    op = _card_op(card, "z_band")
    if op is None:
        return
    value = {s.name: s.label for s in card.segments()}
    bands = {value[name]: tuple(band) for name, band in op["bands_mm"].items() if name in value}
    if op["anchor"] in value:
        apply_z_bands(prob, seen, value[op["anchor"]], bands,  # type: ignore[arg-type]
                      float(op.get("min_anchor_ml", MIN_ANCHOR_ML)))


def _sides(prob: np.ndarray, seen: Volume, card) -> np.ndarray | None:
    """Paired organs handed out by side of the midsagittal plane (card op ``left_right_by_midline``)."""
    op = _card_op(card, "left_right_by_midline")
    if op is None:
        return None
    segments = card.segments()
    value = {s.name: s.label for s in segments}
    midline = [value[name] for name in op.get("midline_organs", ()) if name in value]
    plane = midline_plane(seen, prob.argmax(0), midline, seen.array)
    assign_sides(prob, seen, paired_labels(segments), plane)
    return plane


def left_right_axis(grid: Volume) -> int:
    """The array axis (0 = k, 1 = j, 2 = i) that runs most nearly along the patient's left-right (LPS x)."""
    direction = np.asarray(grid.direction, float).reshape(3, 3)  # columns: i, j, k in LPS
    return 2 - int(np.argmax(np.abs(direction[0])))


def _with_mirror_pass(logits: torch.Tensor, image: np.ndarray, seen: Volume, card, inferer, network, progress,
                      cancel) -> torch.Tensor:
    """Mean of the logits and those of the left-right mirrored scan, whose paired channels are swapped back: a
    mirrored head is still a plausible head, so the second pass is a second opinion at no training cost."""
    axis = left_right_axis(seen)
    mirrored = inferer(np.ascontiguousarray(np.flip(image, axis)), network, progress=progress, cancel=cancel)
    order = list(range(logits.shape[0]))
    for left, right in paired_labels(card.segments()):
        order[left], order[right] = right, left
    return (logits + torch.flip(mirrored, (axis + 1,))[order]) / 2


def _stage1(ct: Volume, network: torch.nn.Module, card, device: torch.device, progress, cancel,
            keep: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray | None, dict[int, Volume]]:
    """Stage-1 labels on the CT grid, the midline plane and, for the label values in ``keep``, the final
    probabilities (after the bands and sides) on the working grid."""
    from ...preprocess import bounding_box

    inputs, inference = card.inputs, card.inference
    spacing = card.working_spacing(ct.spacing) or ct.spacing
    low, high = inputs["intensity"]["clip"]
    seen = resample(ct, spacing, order=1, default_value=AIR_HU)
    inferer = SlidingWindowInferer(tuple(inputs["patch_size"]), overlap=float(inputs.get("overlap", 0.25)),
                                   batch_size=int(inference.get("batch_size", 2)),
                                   precision=inference.get("precision", "auto"), device=device)
    image = window(seen.array, low, high)
    logits = inferer(image, network, progress=progress, cancel=cancel)
    if inference.get("mirror_tta"):
        logits = _with_mirror_pass(logits, image, seen, card, inferer, network, progress, cancel)
    prob = torch.softmax(logits, dim=0).numpy()
    _bands(prob, seen, card)
    plane = _sides(prob, seen, card)
    coarse_labels = prob.argmax(0)
    best = resample_to(seen.with_array(prob[0]), ct, order=1, default_value=1.0).array
    labels = np.zeros(ct.shape, np.uint8)
    for value in range(1, prob.shape[0]):
        box = bounding_box(coarse_labels == value, 2)
        if box is not None:
            _paste_max(ct, seen, prob[value], box, value, best, labels)
    return labels, plane, {value: seen.with_array(prob[value].copy(), name="stage1_prob") for value in keep}


def stage2_input(ct: Volume, grid: Volume, op: Mapping, clip: Sequence[float],
                 probability: Volume | None = None) -> np.ndarray:
    """The channels (C, D, H, W) a stage-2 model sees on its crop grid: the windowed CT and, for an op whose
    ``inputs`` list ``stage1_prob``, stage 1's probability of the organ resampled onto the crop (mirrored with it;
    0 outside stage 1's grid or where none was kept)."""
    channels = [window(resample_to(ct, grid, order=1, default_value=AIR_HU).array, *clip)]
    if STAGE1_PROB in op.get("inputs", ()):
        channels.append(np.zeros(grid.shape, np.float32) if probability is None else
                        resample_to(probability, grid, order=1, default_value=0.0).array.astype(np.float32))
    return np.stack(channels)


def _stage2(ct: Volume, labels: np.ndarray, network, op: dict, card, device: torch.device,
            centroids: dict[str, np.ndarray], probability: Volume | None = None, refill: int = 0) -> bool:
    """One stage-2 organ: its binary model on a crop placed by the op's anchor rule (or, without one, on stage 1's
    own organ), given stage 1's ``probability`` of the organ too when the op asks for it; its mask replaces stage
    1's when it finds the organ. Stage 1's voxels it does not keep become ``refill`` (the label of the op's
    ``refill`` organ, the one that contains it, e.g. the canal around the cord; default background)."""
    value = int(op["label"])
    mask = labels == value
    rule = AnchorRule.from_op(op)
    if rule is not None:
        centre = anchor_point(rule, centroids)
    else:
        centre = ct.index_to_physical(np.argwhere(mask).mean(0)[::-1]) if mask.any() else None
    if centre is None:
        return False
    grid = crop_grid(ct, centre, op["spacing"], op["patch"], rule is not None and rule.mirror)
    x = torch.from_numpy(stage2_input(ct, grid, op, card.inputs["intensity"]["clip"], probability))[None].to(device)
    model = network.stage2[op["key"]]
    with torch.no_grad():
        prob = torch.softmax(model(x).float(), dim=1)[0, 1].cpu().numpy()
    if op.get("blend") == STAGE1_PROB and probability is not None:
        # Two opinions with opposite volume biases (the brainstem: stage 1 too large, stage 2 too small): their mean.
        prob = (prob + resample_to(probability, grid, order=1, default_value=0.0).array) / 2
    target = covering_box(ct, grid, tuple(slice(0, n) for n in grid.shape), pad=0)
    if target is None:
        return False
    native = crop(ct.with_array(labels), target)
    up = resample_to(grid.with_array(prob), native, order=1, default_value=0.0).array
    if not (up > 0.5).any():
        return False  # stage 2 found nothing: keep stage 1's mask rather than lose the organ
    if op.get("replace") == "crop":  # an organ longer than the crop (the cord) keeps stage 1's mask outside it
        # Only where the crop reaches: the box's end rows lie partly beyond it, and clearing them too cut the cord
        # in three there, of which the largest-component step kept one.
        inside = resample_to(grid.with_array(np.ones(grid.shape, np.uint8)), native, order=0).array > 0
        labels[target][mask[target] & inside] = refill
    else:
        labels[mask] = refill
    sub = labels[target]
    sub[up > 0.5] = value
    return True


def stage2_order(ops: list[dict]) -> list[dict]:
    """Stage-2 ops by decreasing crop volume, so an organ inside another's crop (the lens in the eye's) is painted
    after it, not under it; among equal crops an op with ``refill`` (its organ lies inside another: the cord in the
    canal) comes after the others, then the card's order."""
    return sorted(ops, key=lambda op: (-float(np.prod(op["patch"]) * np.prod(op["spacing"])), bool(op.get("refill"))))


def predict_organs(ct: Volume, model_id: str, device: str = "auto", use_stage2: bool = True,
                   progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                   probabilities: Iterable[str] = ()) -> OrganPrediction:
    """Organ labels (the card's label values) on the CT grid; ``probabilities``: organs whose stage-1
    probability maps (working grid) the result keeps, besides those the stage-2 ops ask for."""
    registry = get_registry()
    card = registry.card(model_id)
    torch_device = select_device(device)
    network = registry.load_network(model_id, torch_device)
    stage1 = getattr(network, "stage1", network)
    ops = [op for op in card.postprocessing if op.get("op") == "stage2" and op.get("key") in
           getattr(network, "stage2", {})] if use_stage2 else []
    values = {s.name: s.label for s in card.segments()}
    wanted = {*probabilities, *(op["organ"] for op in ops
                                if STAGE1_PROB in op.get("inputs", ()) or op.get("blend") == STAGE1_PROB)}
    keep = {values[name]: name for name in wanted if name in values}
    labels, plane, kept = _stage1(ct, stage1, card, torch_device, progress, cancel, tuple(keep))
    result = OrganPrediction(ct.with_array(labels, name="organs"), midline=plane,
                             probabilities={keep[value]: prob for value, prob in kept.items()})
    if not use_stage2:
        return result
    ops = stage2_order(ops)
    anchors = {name for op in ops for name in (op.get("anchor") or {}).get("organs", ())}
    centroids = organ_centroids(result.labels, values, anchors)  # stage 1's, before any stage 2 changes them
    for op in ops:
        if cancel is not None:
            cancel.check("oar")
        found = _stage2(ct, labels, network, op, card, torch_device, centroids,
                        result.probabilities.get(str(op.get("organ"))), values.get(op.get("refill"), 0))
        (result.stage2 if found else result.missing_stage2).append(str(op.get("organ")))
    bone_ops = [op for op in card.postprocessing if op.get("op") == "bone_edge"]
    if bone_ops:
        apply_bone_edges(np.asarray(ct.array), labels, ct.spacing, bone_ops, values)
    return result
