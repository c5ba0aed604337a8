"""NoduleNet-style multi-task 3-D CNN: nodule detection, decoupled false-positive reduction, segmentation.

Written from the method description in the nodule project report (after Tang et al., MICCAI 2019); no
code of the original. Pure torch, no file or task knowledge. Boxes are ``(z, y, x, d, h, w)`` centre-size in
voxel-index coordinates of the input (see :mod:`clinseg.post.boxes`); the input is meant to be CT at 1 mm
isotropic spacing, HU clipped to [-1200, 600] and scaled to [0, 255], so anchor sizes 5..50 are millimetres.

Parameters at ``width=1.0`` (the document's network): 17,341,540 in all = FeatureNet 5,346,872 + RPN head
10,531 + FPR head 11,373,320 (11,239,936 of them in the first FC layer, 64*7^3 -> 512) + mask head 610,817.
``width=0.5``: 4,339,480; ``width=0.25``: 1,086,934.

Detection, image -> proposals -> FPR scores -> masks (B images, N boxes over the batch)::

    net = NoduleNet().eval()
    image = torch.rand(1, 1, 128, 128, 128) * 255    # (B, 1, D, H, W); any size, padded to multiples of 16
    with torch.no_grad():
        rpn = net(image)                   # rpn.logits (B, A), rpn.deltas (B, A, 6), rpn.anchors (A, 6),
                                           #   A = (D/4)(H/4)(W/4) * 5; rpn.features: the backbone's maps
        proposals = net.propose(rpn)       # Detections: batch_index (N,), scores (N,), boxes (N, 6)
        fpr = net.classify(rpn.features, proposals)   # RcnnOutput: logits (N, 2), deltas (N, 6)
        nodules = net.refine(proposals, fpr, rpn.features.shape)  # scores = P(nodule), refined boxes, NMS
        masks = net.segment(rpn.features, nodules)    # list of N MaskLogits: batch, start (3,), logits (d, h, w)
        prob = paste_mask(masks[0], image.shape[2:])  # (D, H, W) probabilities of nodule 0
    # or all at once: net.detect(image) -> NoduleDetections (boxes, scores, rpn_scores, masks)

Training uses the same pieces: ``net(image)`` for the RPN terms (targets from
:func:`clinseg.post.boxes.assign_anchor_targets`), ``classify`` on sampled proposals, ``segment`` on the
ground-truth boxes, and :func:`clinseg.train.nodule_losses.nodulenet_loss` over all three.

Choices where the description is silent: InstanceNorm in the mask head is affine; the FPR head regresses one
class-agnostic set of 6 deltas (one foreground class); the RPN has no dropout; the mask head's second
upsampling is followed by a conv like the first (64 -> 64, InstanceNorm, ReLU) before the CT crop is concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from clinseg.post.boxes import (
    ANCHOR_SIZES,
    NMS_IOU,
    STRIDE,
    anchor_grid,
    batched_nms_3d,
    box_corners,
    clip_boxes,
    decode_boxes,
    nms_3d,
)

DIVISOR = 16  # three 2x poolings after the stride-2 stem
ROI_SIZE = 7
MIN_SIZE = 1.0  # voxels: a clipped box thinner than this lies (almost) off the image
_EDGE_EPS = 1e-4  # a box edge landing on a cell border (up to float error) must not take in the next cell


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class ResBlock3d(nn.Module):
    """conv3-BN-ReLU-conv3-BN plus the input (through 1x1 conv + BN when the channel count changes), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm3d(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, kernel_size=1), nn.BatchNorm3d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


def _res_stack(in_channels: int, out_channels: int, count: int) -> nn.Sequential:
    return nn.Sequential(
        ResBlock3d(in_channels, out_channels), *[ResBlock3d(out_channels, out_channels) for _ in range(count - 1)]
    )


def _up(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose3d(channels, channels, kernel_size=2, stride=2), nn.BatchNorm3d(channels), nn.ReLU(inplace=True)
    )


class FeatureNet(nn.Module):
    """The U-Net backbone. Input (B, in, D, H, W) with D, H, W multiples of 16.

    Returns ``(down2, down4, fmap4)``: forw1's output (32 ch, stride 2), forw2's (64 ch, stride 4) and the
    decoder's feature-map-4 (128 ch, stride 4); channel counts at ``width=1``.
    """

    def __init__(self, in_channels: int = 1, width: float = 1.0) -> None:
        super().__init__()
        c24, c32, c64, c128 = (_scaled(n, width) for n in (24, 32, 64, 128))
        self.channels = {"down2": c32, "down4": c64, "fmap4": c128}
        self.preBlock = nn.Sequential(
            nn.Conv3d(in_channels, c24, kernel_size=3, padding=1, stride=2),
            nn.BatchNorm3d(c24),
            nn.ReLU(inplace=True),
            nn.Conv3d(c24, c24, kernel_size=3, padding=1),
            nn.BatchNorm3d(c24),
            nn.ReLU(inplace=True),
        )
        self.forw1 = _res_stack(c24, c32, 2)
        self.forw2 = _res_stack(c32, c64, 2)
        self.forw3 = _res_stack(c64, c64, 3)
        self.forw4 = _res_stack(c64, c64, 3)
        self.path1 = _up(c64)
        self.back3 = _res_stack(2 * c64, c64, 3)
        self.path2 = _up(c64)
        self.back2 = _res_stack(2 * c64, c128, 3)
        self.pool = nn.MaxPool3d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        down2 = self.forw1(self.preBlock(x))  # stride 2
        down4 = self.forw2(self.pool(down2))  # stride 4
        out8 = self.forw3(self.pool(down4))  # stride 8
        out16 = self.forw4(self.pool(out8))  # stride 16
        comb8 = self.back3(torch.cat([self.path1(out16), out8], dim=1))
        fmap4 = self.back2(torch.cat([self.path2(comb8), down4], dim=1))
        return down2, down4, fmap4


class RpnHead(nn.Module):
    """1x1x1 conv to 64 ch + ReLU, then per-anchor logit and 6 deltas; outputs flattened in anchor-grid order."""

    def __init__(self, in_channels: int, num_anchors: int, hidden: int = 64) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        self.conv = nn.Sequential(nn.Conv3d(in_channels, hidden, kernel_size=1), nn.ReLU(inplace=True))
        self.logits = nn.Conv3d(hidden, num_anchors, kernel_size=1)
        self.deltas = nn.Conv3d(hidden, 6 * num_anchors, kernel_size=1)

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, D, H, W)`` -> logits ``(B, D*H*W*A)`` and deltas ``(B, D*H*W*A, 6)``."""
        h = self.conv(fmap)
        b, _, d, hh, w = h.shape
        logits = self.logits(h).permute(0, 2, 3, 4, 1).reshape(b, -1)
        deltas = self.deltas(h).reshape(b, self.num_anchors, 6, d, hh, w).permute(0, 3, 4, 5, 1, 2).reshape(b, -1, 6)
        return logits, deltas


class RcnnHead(nn.Module):
    """False-positive reduction on fixed-size ROI crops: FC (C*7^3 -> 512 -> 256), class logits and 6 deltas."""

    def __init__(
        self, in_channels: int, roi_size: int = ROI_SIZE, hidden: Sequence[int] = (512, 256), num_classes: int = 2
    ) -> None:
        super().__init__()
        h1, h2 = hidden
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * roi_size**3, h1),
            nn.ReLU(inplace=True),
            nn.Linear(h1, h2),
            nn.ReLU(inplace=True),
        )
        self.logits = nn.Linear(h2, num_classes)
        self.deltas = nn.Linear(h2, 6)

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc(crops)
        return self.logits(h), self.deltas(h)


def _norm_relu_conv(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.InstanceNorm3d(out_channels, affine=True),
        nn.ReLU(inplace=True),
    ]


class MaskHead(nn.Module):
    """Per-box segmentation from a feature-map-4 crop, refined with the down-2 and raw CT crops (2x, then 2x)."""

    def __init__(
        self, in_channels: int, down2_channels: int, image_channels: int = 1, hidden: int = 64, num_masks: int = 1
    ) -> None:
        super().__init__()
        up = {"scale_factor": 2, "mode": "trilinear", "align_corners": False}
        self.up1 = nn.Sequential(nn.Upsample(**up), *_norm_relu_conv(in_channels, hidden))
        self.back1 = nn.Sequential(*_norm_relu_conv(hidden + down2_channels, hidden))
        self.up2 = nn.Sequential(nn.Upsample(**up), *_norm_relu_conv(hidden, hidden))
        self.back2 = nn.Sequential(*_norm_relu_conv(hidden + image_channels, hidden))
        self.logits = nn.Conv3d(hidden, num_masks, kernel_size=1)

    def forward(self, fmap_crop: torch.Tensor, down2_crop: torch.Tensor, image_crop: torch.Tensor) -> torch.Tensor:
        """Crops of the same box: ``(n, C, d, h, w)`` of feature-map-4, ``(n, C2, 2d, 2h, 2w)`` of down-2 and
        ``(n, 1, 4d, 4h, 4w)`` of the CT -> voxel logits ``(n, 1, 4d, 4h, 4w)``.
        """
        x = self.back1(torch.cat([self.up1(fmap_crop), down2_crop], dim=1))
        x = self.back2(torch.cat([self.up2(x), image_crop], dim=1))
        return self.logits(x)


# ---- ROI cropping ------------------------------------------------------------------------------------------


def image_boxes_to_rois(boxes: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    """Centre-size boxes in input voxels -> ``(z0, y0, x0, z1, y1, x1)`` extents in feature-map cells.

    Cell ``k`` of a stride-``s`` map spans ``[k, k + 1)`` here, i.e. input voxels ``s*k .. s*k + s - 1``.
    """
    return (box_corners(boxes) + 0.5) / stride


def roi_bounds(rois: torch.Tensor, feature_shape: Sequence[int]) -> torch.Tensor:
    """Integer ``[start, stop)`` cells ``(N, 6)`` covering each extent, inside the map, at least 1 cell wide."""
    rois = torch.as_tensor(rois).reshape(-1, 6)
    size = torch.as_tensor(list(feature_shape), dtype=torch.long, device=rois.device)
    start = torch.floor(rois[:, :3] + _EDGE_EPS).long()
    stop = torch.ceil(rois[:, 3:] - _EDGE_EPS).long()
    start = torch.minimum(start.clamp(min=0), size - 1)
    stop = torch.maximum(torch.minimum(stop, size), start + 1)
    return torch.cat([start, stop], dim=1)


def crop_rois(
    features: torch.Tensor,
    rois: torch.Tensor,
    batch_index: torch.Tensor,
    output_size: int | Sequence[int] | None = ROI_SIZE,
) -> torch.Tensor | list[torch.Tensor]:
    """Crops of ``features`` (B, C, D, H, W) at ``rois`` (N, 6 extents in feature cells, see :func:`roi_bounds`).

    With ``output_size`` each crop is adaptive-max-pooled to it and the result is ``(N, C, *output_size)``;
    with ``None`` the raw crops come back as a list of ``(C, d, h, w)`` tensors.
    """
    bounds = roi_bounds(rois, features.shape[2:])
    batch = torch.as_tensor(batch_index, dtype=torch.long).reshape(-1)
    if batch.numel() != bounds.shape[0]:
        raise ValueError(f"{bounds.shape[0]} ROIs but {batch.numel()} batch indices")
    crops = []
    for b, (z0, y0, x0, z1, y1, x1) in zip(batch.tolist(), bounds.tolist()):
        crop = features[b, :, z0:z1, y0:y1, x0:x1]
        crops.append(crop if output_size is None else F.adaptive_max_pool3d(crop, output_size))
    if output_size is None:
        return crops
    if not crops:
        size = (output_size,) * 3 if isinstance(output_size, int) else tuple(output_size)
        return features.new_zeros((0, features.shape[1], *size))
    return torch.stack(crops)


# ---- outputs -------------------------------------------------------------------------------------------------


class FeatureMaps(NamedTuple):
    """Backbone maps of a (padded) batch; ``shape`` is the input's spatial size before padding."""

    image: torch.Tensor
    down2: torch.Tensor
    down4: torch.Tensor
    fmap4: torch.Tensor
    shape: tuple[int, int, int]


class RpnOutput(NamedTuple):
    features: FeatureMaps
    logits: torch.Tensor  # (B, A)
    deltas: torch.Tensor  # (B, A, 6)
    anchors: torch.Tensor  # (A, 6)


class Detections(NamedTuple):
    """Boxes over a batch: ``batch_index`` (N,), ``scores`` (N,) in [0, 1], ``boxes`` (N, 6)."""

    batch_index: torch.Tensor
    scores: torch.Tensor
    boxes: torch.Tensor


class RcnnOutput(NamedTuple):
    logits: torch.Tensor  # (N, num_classes)
    deltas: torch.Tensor  # (N, 6), relative to the proposal box


class MaskLogits(NamedTuple):
    """One box's voxel logits ``(d, h, w)``, covering input voxels ``start .. start + logits.shape - 1``."""

    batch: int
    start: tuple[int, int, int]
    logits: torch.Tensor


class NoduleDetections(NamedTuple):
    """Final nodules: FPR ``scores``, the RPN's ``rpn_scores`` of their proposals, and one mask each."""

    batch_index: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    rpn_scores: torch.Tensor
    masks: list[MaskLogits]


def paste_mask(mask: MaskLogits, shape: Sequence[int]) -> torch.Tensor:
    """The mask's probabilities (sigmoid) placed in a zero volume of ``shape`` (D, H, W)."""
    out = mask.logits.new_zeros(tuple(shape))
    stop = [min(s + n, full) for s, n, full in zip(mask.start, mask.logits.shape, shape)]
    z0, y0, x0 = mask.start
    out[z0 : stop[0], y0 : stop[1], x0 : stop[2]] = torch.sigmoid(
        mask.logits[: stop[0] - z0, : stop[1] - y0, : stop[2] - x0]
    )
    return out


def _empty_detections(device: torch.device) -> Detections:
    return Detections(
        torch.zeros(0, dtype=torch.long, device=device), torch.zeros(0, device=device), torch.zeros(0, 6, device=device)
    )


# ---- the network ---------------------------------------------------------------------------------------------


class NoduleNet(nn.Module):
    """FeatureNet + RPN + decoupled FPR head + mask head (see the module docstring for the call sequence).

    ``width`` scales every channel and hidden width (1.0 is the document's network; 0.5 or 0.25 make quick
    CPU variants). ``pad_value`` fills the padding up to multiples of 16 (in the network's input units).
    """

    def __init__(
        self,
        width: float = 1.0,
        in_channels: int = 1,
        anchor_sizes: Sequence[float] = ANCHOR_SIZES,
        num_classes: int = 2,
        roi_size: int = ROI_SIZE,
        pad_value: float = 0.0,
        rpn_delta_weights: Sequence[float] | None = None,
        rcnn_delta_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.stride = STRIDE
        self.anchor_sizes = tuple(float(s) for s in anchor_sizes)
        self.pad_value = pad_value
        self.roi_size = roi_size
        self.rpn_delta_weights = rpn_delta_weights
        self.rcnn_delta_weights = rcnn_delta_weights
        self.feature_net = FeatureNet(in_channels, width)
        ch = self.feature_net.channels
        self.rpn = RpnHead(ch["fmap4"], len(self.anchor_sizes), hidden=_scaled(64, width))
        self.rcnn_head = RcnnHead(ch["down4"], roi_size, (_scaled(512, width), _scaled(256, width)), num_classes)
        self.mask_head = MaskHead(ch["fmap4"], ch["down2"], in_channels, hidden=_scaled(64, width))

    # -- stage 1 --
    def features(self, image: torch.Tensor) -> FeatureMaps:
        """Pad ``image`` (B, C, D, H, W) at the far end of each axis to multiples of 16 and run the backbone."""
        if image.ndim != 5:
            raise ValueError(f"image must be (B, C, D, H, W), got shape {tuple(image.shape)}")
        shape = tuple(int(n) for n in image.shape[2:])
        pad = [(-n) % DIVISOR for n in shape]
        if any(pad):
            image = F.pad(image, (0, pad[2], 0, pad[1], 0, pad[0]), value=self.pad_value)
        down2, down4, fmap4 = self.feature_net(image)
        return FeatureMaps(image, down2, down4, fmap4, shape)  # type: ignore[arg-type]

    def forward(self, image: torch.Tensor) -> RpnOutput:
        feats = self.features(image)
        logits, deltas = self.rpn(feats.fmap4)
        anchors = anchor_grid(
            feats.fmap4.shape[2:], self.stride, self.anchor_sizes, device=logits.device, dtype=logits.dtype
        )
        return RpnOutput(feats, logits, deltas, anchors)

    @torch.no_grad()
    def propose(
        self,
        rpn: RpnOutput,
        score_threshold: float = 0.5,
        pre_nms_top_n: int = 1000,
        max_proposals: int = 100,
        nms_iou: float = NMS_IOU,
        min_size: float = MIN_SIZE,
    ) -> Detections:
        """RPN boxes per image: score >= threshold, top ``pre_nms_top_n``, decoded, clipped, NMS, ``max_proposals``.

        Boxes under ``min_size`` voxels along an axis after clipping (mostly ones off the image) are dropped.
        """
        out = []
        for b in range(rpn.logits.shape[0]):
            scores = torch.sigmoid(rpn.logits[b])
            idx = torch.nonzero(scores >= score_threshold).flatten()
            if idx.numel() > pre_nms_top_n:
                idx = idx[torch.topk(scores[idx], pre_nms_top_n).indices]
            boxes = clip_boxes(
                decode_boxes(rpn.deltas[b, idx], rpn.anchors[idx], self.rpn_delta_weights), rpn.features.shape
            )
            big = (boxes[:, 3:] >= min_size).all(dim=1)
            idx, boxes = idx[big], boxes[big]
            keep = nms_3d(boxes, scores[idx], nms_iou, max_keep=max_proposals)
            out.append(
                (torch.full((keep.numel(),), b, dtype=torch.long, device=boxes.device), scores[idx][keep], boxes[keep])
            )
        if not out:
            return _empty_detections(rpn.logits.device)
        return Detections(*(torch.cat(parts) for parts in zip(*out)))

    # -- stage 2: false-positive reduction on the shallower down-4 map --
    def classify(
        self, features: FeatureMaps, boxes: Detections | torch.Tensor, batch_index: torch.Tensor | None = None
    ) -> RcnnOutput:
        """FPR logits and box deltas for ``boxes`` (Detections, or (N, 6) boxes with their ``batch_index``)."""
        boxes, batch_index = _boxes_and_batch(boxes, batch_index)
        rois = image_boxes_to_rois(boxes, self.stride)
        crops = crop_rois(features.down4, rois, batch_index, self.roi_size)
        return RcnnOutput(*self.rcnn_head(crops))

    @torch.no_grad()
    def refine(
        self,
        proposals: Detections,
        rcnn: RcnnOutput,
        shape: Sequence[int],
        score_threshold: float = 0.0,
        nms_iou: float = NMS_IOU,
    ) -> Detections:
        """Proposals rescored by P(nodule) (softmax class 1), moved by the FPR deltas, thresholded, NMS'd per image."""
        keep, scores, boxes = self._rescore(proposals, rcnn, shape, score_threshold, nms_iou)
        return Detections(proposals.batch_index[keep], scores[keep], boxes[keep])

    def _rescore(
        self, proposals: Detections, rcnn: RcnnOutput, shape: Sequence[int], score_threshold: float, nms_iou: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scores = torch.softmax(rcnn.logits, dim=1)[:, 1]
        boxes = clip_boxes(decode_boxes(rcnn.deltas, proposals.boxes, self.rcnn_delta_weights), shape)
        sel = torch.nonzero((scores >= score_threshold) & (boxes[:, 3:] >= MIN_SIZE).all(dim=1)).flatten()
        keep = sel[batched_nms_3d(boxes[sel], scores[sel], proposals.batch_index[sel], nms_iou).to(sel.device)]
        return keep, scores, boxes

    # -- stage 3: masks --
    def segment(
        self, features: FeatureMaps, boxes: Detections | torch.Tensor, batch_index: torch.Tensor | None = None
    ) -> list[MaskLogits]:
        """Voxel logits per box over the box's stride-4-aligned region, cut to the unpadded input."""
        boxes, batch_index = _boxes_and_batch(boxes, batch_index)
        # cells that hold some unpadded voxel, so every mask starts inside the input
        cells = [-(-n // self.stride) for n in features.shape]
        bounds = roi_bounds(image_boxes_to_rois(boxes, self.stride), cells)
        masks = []
        for b, (z0, y0, x0, z1, y1, x1) in zip(batch_index.tolist(), bounds.tolist()):
            s2, s4 = self.stride // 2, self.stride
            f = features.fmap4[b : b + 1, :, z0:z1, y0:y1, x0:x1]
            d2 = features.down2[b : b + 1, :, z0 * s2 : z1 * s2, y0 * s2 : y1 * s2, x0 * s2 : x1 * s2]
            im = features.image[b : b + 1, :, z0 * s4 : z1 * s4, y0 * s4 : y1 * s4, x0 * s4 : x1 * s4]
            logits = self.mask_head(f, d2, im)[0, 0]
            start = (z0 * s4, y0 * s4, x0 * s4)
            keep = [min(n, full - s) for n, full, s in zip(logits.shape, features.shape, start)]
            masks.append(MaskLogits(int(b), start, logits[: keep[0], : keep[1], : keep[2]]))
        return masks

    @torch.no_grad()
    def detect(
        self,
        image: torch.Tensor,
        rpn_score_threshold: float = 0.5,
        score_threshold: float = 0.5,
        nms_iou: float = NMS_IOU,
        pre_nms_top_n: int = 1000,
        max_proposals: int = 100,
        with_masks: bool = True,
    ) -> NoduleDetections:
        """The whole inference chain on ``image`` (B, 1, D, H, W). Call ``eval()`` first (BatchNorm statistics)."""
        rpn = self(image)
        proposals = self.propose(rpn, rpn_score_threshold, pre_nms_top_n, max_proposals, nms_iou)
        fpr = self.classify(rpn.features, proposals)
        keep, scores, boxes = self._rescore(proposals, fpr, rpn.features.shape, score_threshold, nms_iou)
        batch_index, boxes = proposals.batch_index[keep], boxes[keep]
        masks = self.segment(rpn.features, boxes, batch_index) if with_masks else []
        return NoduleDetections(batch_index, boxes, scores[keep], proposals.scores[keep], masks)


def _boxes_and_batch(
    boxes: Detections | torch.Tensor, batch_index: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(boxes, Detections):
        return boxes.boxes, boxes.batch_index
    boxes = torch.as_tensor(boxes).reshape(-1, 6)
    if batch_index is None:
        batch_index = torch.zeros(boxes.shape[0], dtype=torch.long, device=boxes.device)
    return boxes, torch.as_tensor(batch_index, dtype=torch.long).reshape(-1)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
