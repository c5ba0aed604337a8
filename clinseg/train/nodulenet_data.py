"""NoduleNet's input and training crops: a CT at 1 mm as the document pre-processes it, and random crops of it.

``prepare_case``: the CT as the engine gives it to the network (``tasks.nodule.nodulenet_engine.network_image``: 1 mm,
HU [-1200, 600] -> 0..255, ``PAD_VALUE`` outside the search region, as NoduleNet masks the lungs). Nodules become
cubic boxes ``(z, y, x, d, h, w)`` on that grid (the side is the diameter), with their label in the nodule label
map when the source has one (generated phantoms), for the mask head.

``random_crop``: a ``CROP``^3 crop, around a nodule (anywhere in the crop's inner part), around one of the case's
known false positives (``hard_points``, mined by ``nodulenet.mine_false_positives``) or anywhere in the region,
flipped and axis-permuted at random (the grid is isotropic).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..anatomy.lungs import chest_masks
from ..preprocess import fill_ct_padding, resample
from ..tasks.nodule.nodulenet_engine import PAD_VALUE, SPACING_MM, network_image
from ..tasks.nodule.region import search_region
from ..volume import Volume

CROP = 96  # the document crops 128^3; 96^3 holds the largest anchor (50) with room, in 0.42 of the voxels
EDGE_MM = 4.0  # a positive crop keeps its nodule this far inside its border
HARD_EDGE_MM = 16.0  # a crop around a false positive keeps it this far inside (room for its anchors' boxes)


@dataclass
class PreparedCase:
    """One CT on NoduleNet's grid: ``image`` uint8 ``[k, j, i]`` (its geometry in ``grid``), the nodules' boxes
    ``(n, 6)`` in voxels of it, their ``label`` values in ``labels`` (None: the source has no masks), a sample
    of the region's voxels for background crops and the centres of a network's false positives on it."""

    name: str
    grid: Volume
    boxes: np.ndarray
    box_labels: np.ndarray
    labels: np.ndarray | None
    region_points: np.ndarray
    hard_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))

    @property
    def image(self) -> np.ndarray:
        return self.grid.array


def prepare_case(name: str, ct: Volume, nodules: list[tuple[np.ndarray, float]], labels: Volume | None = None,
                 label_values: list[int] | None = None, seed: int = 0) -> PreparedCase:
    """A training or validation case from a CT in HU and its nodules (centre LPS mm, diameter mm); ``labels``
    (on ``ct``'s grid) and ``label_values`` (one per nodule) give the mask head its targets."""
    region = search_region(chest_masks(ct), ct.spacing)
    grid = network_image(fill_ct_padding(ct), region)
    boxes = np.zeros((len(nodules), 6), np.float32)
    for n, (centre, diameter) in enumerate(nodules):
        boxes[n, :3] = grid.physical_to_index(np.asarray(centre, float))[::-1]
        boxes[n, 3:] = diameter / SPACING_MM
    resampled = None
    if labels is not None:
        resampled = resample(labels, SPACING_MM, order=0).array
        if resampled.shape != grid.array.shape:  # same rule, same sizes; a mismatch would misplace every mask
            raise ValueError(f"{name}: label grid {resampled.shape} differs from the image's {grid.array.shape}")
    values = np.asarray(label_values if label_values is not None else [0] * len(nodules), np.int32)
    inside = np.argwhere(grid.array != PAD_VALUE)
    rng = np.random.default_rng(seed)
    points = inside[rng.choice(len(inside), min(len(inside), 20000), replace=False)] if len(inside) else inside
    return PreparedCase(name, grid, boxes, values, resampled, points.astype(np.int32))


def _window(array: np.ndarray, lo: np.ndarray, size: int, fill: float) -> np.ndarray:
    """``array[lo : lo + size]`` on each axis, ``fill`` where it runs off the array."""
    out = np.full((size,) * 3, fill, array.dtype)
    src_lo = np.maximum(lo, 0)
    src_hi = np.minimum(lo + size, array.shape)
    if np.any(src_hi <= src_lo):
        return out
    dst = tuple(slice(a - b, c - b) for a, b, c in zip(src_lo, lo, src_hi))
    out[dst] = array[tuple(slice(a, c) for a, c in zip(src_lo, src_hi))]
    return out


@dataclass
class Crop:
    image: np.ndarray  # uint8 (CROP,)*3
    boxes: np.ndarray  # (n, 6) nodules whose centre lies inside, in crop voxels
    box_labels: np.ndarray  # (n,)
    labels: np.ndarray | None  # the label map's crop (None: no masks)


def random_crop(case: PreparedCase, rng: np.random.Generator, size: int = CROP, positive: bool = True,
                hard: bool = False) -> Crop:
    """A crop around a random nodule (``positive`` and the case has one), a known false positive (``hard`` and
    the case has one) or a random region voxel, augmented."""
    if positive and len(case.boxes):
        box = case.boxes[rng.integers(len(case.boxes))]
        room = np.maximum(size / 2 - box[3:] / 2 - EDGE_MM / SPACING_MM, 0)
        centre = box[:3] + rng.uniform(-room, room)
    elif hard and len(case.hard_points):
        room = max(size / 2 - HARD_EDGE_MM / SPACING_MM, 0.0)  # a crop under 32 mm centres on it
        centre = case.hard_points[rng.integers(len(case.hard_points))] + rng.uniform(-room, room, 3)
    elif len(case.region_points):
        centre = case.region_points[rng.integers(len(case.region_points))].astype(float)
    else:
        centre = np.asarray(case.image.shape, float) / 2
    lo = np.rint(centre - size / 2).astype(int)
    image = _window(case.image, lo, size, PAD_VALUE)
    labels = _window(case.labels, lo, size, 0) if case.labels is not None else None
    boxes = case.boxes.copy()
    boxes[:, :3] -= lo
    inside = np.all((boxes[:, :3] >= 0) & (boxes[:, :3] <= size - 1), axis=1)
    boxes, values = boxes[inside], case.box_labels[inside]
    for axis in range(3):
        if rng.random() < 0.5:
            image = np.flip(image, axis)
            labels = np.flip(labels, axis) if labels is not None else None
            boxes[:, axis] = size - 1 - boxes[:, axis]
    order = rng.permutation(3)
    image = np.ascontiguousarray(image.transpose(order))
    labels = np.ascontiguousarray(labels.transpose(order)) if labels is not None else None
    boxes = np.concatenate([boxes[:, :3][:, order], boxes[:, 3:][:, order]], axis=1)
    return Crop(image, boxes, values, labels)
