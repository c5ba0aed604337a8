"""3-D boxes for nodule detection: anchors, delta encoding, IoU, NMS and training-target assignment.

Box convention (everywhere in the nodule code): a box is ``(z, y, x, d, h, w)``, its centre and its side
lengths, in voxel-index coordinates of the network input: voxel ``i`` is centred at ``i`` and spans
``[i - 0.5, i + 0.5]``, so a centre converts to a physical point with the volume's index-to-LPS matrix
directly. A box spans ``[c - s/2, c + s/2]`` along each axis. Sizes are in voxels; at the NoduleNet input
spacing of 1 mm they are millimetres.

Deltas (NoduleNet / Faster R-CNN style, per axis, relative to an anchor ``a``):
``t_c = (g_c - a_c) / a_s`` for the centre and ``t_s = log(g_s / a_s)`` for the size, each divided by an
optional weight (all 1 by default).

Everything takes torch tensors (numpy arrays and lists are converted) and returns torch tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

ANCHOR_SIZES = (5.0, 10.0, 20.0, 30.0, 50.0)  # NoduleNet's cubic anchors, voxels (= mm at 1 mm spacing)
STRIDE = 4  # feature-map-4
NMS_IOU = 0.1
POSITIVE_IOU = 0.5
NEGATIVE_IOU = 0.02
# exp() of a larger log-ratio would give a box ~60x its anchor: clamp before decoding so wild early deltas stay finite
_MAX_LOG_RATIO = math.log(1000.0 / 16.0)


def _as_boxes(boxes: object, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = torch.as_tensor(boxes)
    if not t.is_floating_point():
        t = t.float()
    if dtype is not None:
        t = t.to(dtype)
    if t.ndim == 1 and t.numel() == 0:
        t = t.reshape(0, 6)
    if t.shape[-1] != 6:
        raise ValueError(f"boxes must end in 6 values (z, y, x, d, h, w), got shape {tuple(t.shape)}")
    return t


def anchor_grid(
    feature_shape: Sequence[int],
    stride: int = STRIDE,
    sizes: Sequence[float] = ANCHOR_SIZES,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Cubic anchors for a ``(D, H, W)`` feature map: ``(D*H*W*len(sizes), 6)``, ordered ``(z, y, x, size)``.

    Cell ``k`` covers input voxels ``stride*k .. stride*k + stride-1``, so its anchors are centred at
    ``stride*k + (stride-1)/2``. The order matches :class:`clinseg.nets.nodulenet.RpnHead`'s flattening.
    """
    if len(feature_shape) != 3:
        raise ValueError(f"feature_shape must be (D, H, W), got {tuple(feature_shape)}")
    offset = (stride - 1) / 2.0
    axes = [torch.arange(n, device=device, dtype=dtype) * stride + offset for n in feature_shape]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    centres = torch.stack([zz, yy, xx], dim=-1).reshape(-1, 1, 3)
    side = torch.as_tensor(list(sizes), device=device, dtype=dtype).reshape(1, -1, 1).expand(1, len(sizes), 3)
    centres = centres.expand(-1, len(sizes), 3)
    return torch.cat([centres, side.expand_as(centres)], dim=-1).reshape(-1, 6)


def _weights(weights: Sequence[float] | None, like: torch.Tensor) -> torch.Tensor:
    if weights is None:
        return torch.ones(6, dtype=like.dtype, device=like.device)
    w = torch.as_tensor(list(weights), dtype=like.dtype, device=like.device)
    if w.shape != (6,):
        raise ValueError(f"delta weights must be 6 numbers, got {tuple(w.shape)}")
    return w


def encode_boxes(boxes: object, anchors: object, weights: Sequence[float] | None = None) -> torch.Tensor:
    """Deltas that turn ``anchors`` into ``boxes`` (both ``(..., 6)``, broadcast together)."""
    g = _as_boxes(boxes)
    a = _as_boxes(anchors, g.dtype).to(g.device)
    centre = (g[..., :3] - a[..., :3]) / a[..., 3:]
    size = torch.log(g[..., 3:] / a[..., 3:])
    return torch.cat([centre, size], dim=-1) / _weights(weights, g)


def decode_boxes(deltas: object, anchors: object, weights: Sequence[float] | None = None) -> torch.Tensor:
    """Boxes from ``deltas`` applied to ``anchors``; the inverse of :func:`encode_boxes`."""
    t = _as_boxes(deltas)
    a = _as_boxes(anchors, t.dtype).to(t.device)
    t = t * _weights(weights, t)
    centre = a[..., :3] + t[..., :3] * a[..., 3:]
    size = a[..., 3:] * torch.exp(t[..., 3:].clamp(max=_MAX_LOG_RATIO))
    return torch.cat([centre, size], dim=-1)


def box_corners(boxes: object) -> torch.Tensor:
    """``(..., 6)`` centre-size boxes as ``(z0, y0, x0, z1, y1, x1)`` extents."""
    b = _as_boxes(boxes)
    half = b[..., 3:] / 2.0
    return torch.cat([b[..., :3] - half, b[..., :3] + half], dim=-1)


def clip_boxes(boxes: object, shape: Sequence[int]) -> torch.Tensor:
    """Boxes cut to the input volume of ``shape`` (D, H, W), i.e. to ``[-0.5, n - 0.5]`` per axis."""
    corners = box_corners(boxes)
    upper = torch.as_tensor([n - 0.5 for n in shape], dtype=corners.dtype, device=corners.device)
    lo = torch.maximum(corners[..., :3], torch.full_like(upper, -0.5))
    hi = torch.minimum(corners[..., 3:], upper)
    hi = torch.maximum(hi, lo)
    return torch.cat([(lo + hi) / 2.0, hi - lo], dim=-1)


def box_iou(a: object, b: object) -> torch.Tensor:
    """Intersection over union of every box in ``a`` (N, 6) with every box in ``b`` (M, 6): ``(N, M)``."""
    ca = box_corners(a)
    cb = box_corners(b).to(ca)
    lo = torch.maximum(ca[:, None, :3], cb[None, :, :3])
    hi = torch.minimum(ca[:, None, 3:], cb[None, :, 3:])
    inter = (hi - lo).clamp(min=0).prod(dim=-1)
    vol_a = (ca[:, 3:] - ca[:, :3]).prod(dim=-1)
    vol_b = (cb[:, 3:] - cb[:, :3]).prod(dim=-1)
    union = vol_a[:, None] + vol_b[None, :] - inter
    return inter / union.clamp(min=1e-12)


def nms_3d(boxes: object, scores: object, iou_threshold: float = NMS_IOU, max_keep: int | None = None) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, highest score first.

    A box is dropped when its IoU with a kept, higher-scoring box is above ``iou_threshold`` (NoduleNet: 0.1,
    nodules seldom overlap).
    """
    b = _as_boxes(boxes)
    s = torch.as_tensor(scores, device=b.device)
    if b.shape[0] != s.shape[0]:
        raise ValueError(f"{b.shape[0]} boxes but {s.shape[0]} scores")
    order = torch.argsort(s, descending=True, stable=True)
    if order.numel() == 0:
        return order
    iou = box_iou(b[order], b[order])
    suppressed = torch.zeros(order.numel(), dtype=torch.bool, device=b.device)
    keep: list[int] = []
    # One pass over the sorted boxes; each kept box suppresses its overlaps further down the list.
    for i in range(order.numel()):
        if suppressed[i]:
            continue
        keep.append(i)
        if max_keep is not None and len(keep) >= max_keep:
            break
        suppressed |= iou[i] > iou_threshold
    return order[torch.as_tensor(keep, dtype=torch.long, device=b.device)]


def batched_nms_3d(boxes: object, scores: object, batch_index: object, iou_threshold: float = NMS_IOU) -> torch.Tensor:
    """:func:`nms_3d` within each image of a batch; kept indices, grouped by image, each by score."""
    idx = torch.as_tensor(batch_index)
    kept = []
    for image in torch.unique(idx, sorted=True):
        members = torch.nonzero(idx == image).flatten()
        b = _as_boxes(boxes)[members]
        kept.append(members[nms_3d(b, torch.as_tensor(scores)[members], iou_threshold)])
    return torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long)


class AnchorTargets(NamedTuple):
    """Training targets of one image's anchors (or proposals).

    ``labels``: 1 positive, 0 negative, -1 ignored (between the thresholds); ``matched``: index of the
    ground-truth box each anchor overlaps most (-1 when there is none); ``deltas``: regression targets
    (zero where the label is not 1).
    """

    labels: torch.Tensor
    matched: torch.Tensor
    deltas: torch.Tensor


def assign_anchor_targets(
    anchors: object,
    gt_boxes: object,
    positive_iou: float = POSITIVE_IOU,
    negative_iou: float = NEGATIVE_IOU,
    match_best: bool = True,
    weights: Sequence[float] | None = None,
) -> AnchorTargets:
    """Label each anchor against the image's ground-truth boxes.

    Positive: IoU >= ``positive_iou`` (0.5) with some box. Negative: IoU < ``negative_iou`` (0.02) with every
    box, i.e. practically disjoint from all nodules, so a partly covering anchor is never taught to be
    background. Others are ignored. With ``match_best`` each box also makes its best anchor(s) positive (ties
    all count): at stride 4 a 3-4 mm nodule can reach no anchor at IoU 0.5, and would otherwise never be a
    positive. The same function labels RCNN proposals (e.g. ``match_best=False``).
    """
    a = _as_boxes(anchors)
    g = _as_boxes(gt_boxes, a.dtype).to(a.device)
    n = a.shape[0]
    labels = torch.zeros(n, dtype=torch.long, device=a.device)
    matched = torch.full((n,), -1, dtype=torch.long, device=a.device)
    deltas = torch.zeros(n, 6, dtype=a.dtype, device=a.device)
    if g.shape[0] == 0 or n == 0:
        return AnchorTargets(labels, matched, deltas)
    iou = box_iou(a, g)
    best_iou, best_gt = iou.max(dim=1)
    labels[best_iou >= negative_iou] = -1
    labels[best_iou >= positive_iou] = 1
    if match_best:
        per_gt = iou.max(dim=0).values
        is_best = (iou == per_gt[None, :]) & (per_gt[None, :] > 0)
        rows, cols = torch.nonzero(is_best, as_tuple=True)
        labels[rows] = 1
        best_gt[rows] = cols  # an anchor that is some box's best regresses to that box
    touched = best_iou > 0
    matched[touched] = best_gt[touched]
    pos = labels == 1
    matched[pos] = best_gt[pos]
    if pos.any():
        deltas[pos] = encode_boxes(g[best_gt[pos]], a[pos], weights)
    return AnchorTargets(labels, matched, deltas)


def hard_negative_mining(
    labels: torch.Tensor,
    scores: torch.Tensor,
    num_hard: int,
    num_random: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Labels with all but the hardest negatives set to -1 (ignored); positives and ignores unchanged.

    Hardest: the ``num_hard`` negatives the network scores highest. With ``num_random`` they are chosen from a
    random pool of that many negatives (so the mined set varies between steps, as in NoduleNet), otherwise
    from all. ``labels`` and ``scores`` have one entry per anchor (any shape, same shape); scores are
    detached, so mining never carries gradient.
    """
    if labels.shape != scores.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and scores {tuple(scores.shape)} differ in shape")
    flat_labels = labels.reshape(-1).clone()
    flat_scores = scores.detach().reshape(-1)
    negatives = torch.nonzero(flat_labels == 0).flatten()
    if num_random is not None and negatives.numel() > num_random:
        pick = torch.randperm(negatives.numel(), generator=generator)[:num_random].to(negatives.device)
        pool = negatives[pick]
    else:
        pool = negatives
    k = min(max(num_hard, 0), pool.numel())
    hardest = pool[torch.topk(flat_scores[pool], k).indices] if k else pool[:0]
    flat_labels[negatives] = -1
    flat_labels[hardest] = 0
    return flat_labels.reshape(labels.shape)
