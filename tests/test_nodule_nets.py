"""NoduleNet family: parameter counts, shapes, ROI crops, box arithmetic, target assignment, losses, overfitting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_airway import one_torch_thread  # noqa: F401  (autouse: one torch thread per test)

from clinseg.nets.nodulenet import (
    NoduleNet,
    count_parameters,
    crop_rois,
    image_boxes_to_rois,
    paste_mask,
    roi_bounds,
)
from clinseg.post.boxes import (
    anchor_grid,
    assign_anchor_targets,
    batched_nms_3d,
    box_iou,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    hard_negative_mining,
    nms_3d,
)
from clinseg.train.nodule_losses import box_loss, focal_loss, mask_dice_loss, nodulenet_loss

# ---- the network ---------------------------------------------------------------------------------------------


def test_parameter_counts_width_1():
    net = NoduleNet()
    assert count_parameters(net) == 17_341_540
    assert count_parameters(net.feature_net) == 5_346_872
    assert count_parameters(net.rpn) == 8_256 + 325 + 1_950  # 1x1 conv 128->64, 5 logits, 30 deltas
    assert count_parameters(net.rcnn_head) == 11_373_320
    assert count_parameters(net.rcnn_head.fc[1]) == 64 * 7**3 * 512 + 512
    assert count_parameters(net.mask_head) == 610_817


@pytest.mark.parametrize(("width", "expected"), [(0.5, 4_339_480), (0.25, 1_086_934)])
def test_parameter_counts_quick_variants(width, expected):
    assert count_parameters(NoduleNet(width=width)) == expected


def test_width_must_be_positive():
    with pytest.raises(ValueError):
        NoduleNet(width=0)


def test_shapes_64_cube_width_1():
    torch.manual_seed(0)
    net = NoduleNet().eval()
    with torch.no_grad():
        rpn = net(torch.rand(1, 1, 64, 64, 64) * 255)
        feats = rpn.features
        assert feats.down2.shape == (1, 32, 32, 32, 32)
        assert feats.down4.shape == (1, 64, 16, 16, 16)
        assert feats.fmap4.shape == (1, 128, 16, 16, 16)
        assert rpn.logits.shape == (1, 16**3 * 5)
        assert rpn.deltas.shape == (1, 16**3 * 5, 6)
        assert rpn.anchors.shape == (16**3 * 5, 6)
        boxes = torch.tensor([[31.5, 31.5, 31.5, 10.0, 10.0, 10.0], [10.0, 50.0, 20.0, 30.0, 5.0, 8.0]])
        fpr = net.classify(feats, boxes)
        assert fpr.logits.shape == (2, 2) and fpr.deltas.shape == (2, 6)
        masks = net.segment(feats, boxes)
    # box 0 spans voxels 27..36 -> cells 6..9 -> voxels 24..39; box 1: z 0..25 -> 0..27, y 48..52 -> 48..55,
    # x [16, 24] touches voxels 16..24 -> cells 4..6 -> 16..27
    assert masks[0].start == (24, 24, 24) and masks[0].logits.shape == (16, 16, 16)
    assert masks[1].start == (0, 48, 16) and masks[1].logits.shape == (28, 8, 12)


def test_odd_input_is_padded_and_batched():
    torch.manual_seed(1)
    net = NoduleNet(width=0.25, pad_value=-1.0).eval()
    image = torch.rand(2, 1, 50, 45, 40)
    with torch.no_grad():
        rpn = net(image)
        feats = rpn.features
        assert feats.shape == (50, 45, 40)
        assert feats.image.shape == (2, 1, 64, 48, 48)
        assert torch.equal(feats.image[:, :, :50, :45, :40], image)
        assert bool((feats.image[:, :, 50:] == -1).all()) and bool((feats.image[:, :, :, :, 40:] == -1).all())
        assert rpn.logits.shape == (2, 16 * 12 * 12 * 5)
        found = net.detect(image, rpn_score_threshold=0.0, score_threshold=0.0, max_proposals=8)
        nothing = net.detect(image, rpn_score_threshold=1.1)  # no proposal at all: empty, not an error
    assert nothing.boxes.shape == (0, 6) and nothing.masks == [] and nothing.scores.numel() == 0
    n = found.boxes.shape[0]
    assert 0 < n <= 16 and len(found.masks) == n and found.scores.shape == found.rpn_scores.shape == (n,)
    assert set(found.batch_index.tolist()) <= {0, 1}
    corners = torch.cat([found.boxes[:, :3] - found.boxes[:, 3:] / 2, found.boxes[:, :3] + found.boxes[:, 3:] / 2], 1)
    assert bool((corners[:, :3] >= -0.5 - 1e-5).all())
    assert bool((corners[:, 3:] <= torch.tensor([49.5, 44.5, 39.5]) + 1e-5).all())
    for mask in found.masks:  # masks stay inside the unpadded input
        assert all(0 <= s and s + n <= full for s, n, full in zip(mask.start, mask.logits.shape, (50, 45, 40)))
    full = paste_mask(found.masks[0], (50, 45, 40))
    assert full.shape == (50, 45, 40)
    assert float(full.sum()) == pytest.approx(float(torch.sigmoid(found.masks[0].logits).sum()), rel=1e-5)


def test_segment_uses_the_aligned_crops():
    torch.manual_seed(2)
    net = NoduleNet(width=0.25).eval()
    with torch.no_grad():
        feats = net.features(torch.rand(1, 1, 32, 32, 32))
        (mask,) = net.segment(feats, torch.tensor([[7.5, 11.5, 15.5, 8.0, 8.0, 8.0]]))
        # voxels 4..11, 8..15, 12..19 = cells 1..2, 2..3, 3..4 of the stride-4 map
        expected = net.mask_head(
            feats.fmap4[:, :, 1:3, 2:4, 3:5], feats.down2[:, :, 2:6, 4:8, 6:10], feats.image[:, :, 4:12, 8:16, 12:20]
        )[0, 0]
    assert mask.start == (4, 8, 12)
    assert torch.allclose(mask.logits, expected)


# ---- ROI cropping --------------------------------------------------------------------------------------------


def test_crop_rois_exact_and_pooled():
    features = torch.arange(2 * 3 * 8 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8, 8)
    rois = torch.tensor([[1.0, 2.0, 3.0, 4.0, 6.0, 5.0], [0.2, 0.7, 6.5, 2.5, 1.2, 9.0]])
    raw = crop_rois(features, rois, torch.tensor([1, 0]), output_size=None)
    assert torch.equal(raw[0], features[1, :, 1:4, 2:6, 3:5])
    assert torch.equal(raw[1], features[0, :, 0:3, 0:2, 6:8])  # fractions widen outwards, the far end is cut
    pooled = crop_rois(features, rois, torch.tensor([1, 0]), output_size=2)
    assert pooled.shape == (2, 3, 2, 2, 2)
    assert torch.equal(pooled[0], F.adaptive_max_pool3d(features[1, :, 1:4, 2:6, 3:5], 2))
    # the feature values grow along every axis, so each pooled corner is its cell's far corner
    assert float(pooled[0, 0, 1, 1, 1]) == float(features[1, 0, 3, 5, 4])
    assert crop_rois(features, rois[:0], torch.zeros(0, dtype=torch.long)).shape == (0, 3, 7, 7, 7)


def test_roi_bounds_clamp_and_keep_one_cell():
    bounds = roi_bounds(torch.tensor([[-3.0, 2.0, 7.5, -1.0, 2.0, 12.0]]), (8, 8, 8))
    assert bounds.tolist() == [[0, 2, 7, 1, 3, 8]]


def test_image_boxes_to_rois():
    # voxels 4..11 of a stride-4 map are exactly cells 1 and 2
    rois = image_boxes_to_rois(torch.tensor([[7.5, 7.5, 9.5, 8.0, 8.0, 8.0]]), stride=4)
    assert torch.allclose(rois, torch.tensor([[1.0, 1.0, 1.5, 3.0, 3.0, 3.5]]))
    assert roi_bounds(rois, (16, 16, 16)).tolist() == [[1, 1, 1, 3, 3, 4]]


# ---- boxes ---------------------------------------------------------------------------------------------------


def test_anchor_grid_order_and_centres():
    anchors = anchor_grid((2, 3, 4), stride=4)
    assert anchors.shape == (2 * 3 * 4 * 5, 6)
    # entry ((z*3 + y)*4 + x)*5 + a
    assert anchors[((1 * 3 + 2) * 4 + 3) * 5 + 2].tolist() == [5.5, 9.5, 13.5, 20.0, 20.0, 20.0]
    assert anchors[:5, 3].tolist() == [5.0, 10.0, 20.0, 30.0, 50.0]


def test_encode_decode():
    anchor = torch.tensor([[0.0, 0.0, 0.0, 10.0, 10.0, 10.0]])
    box = torch.tensor([[5.0, 0.0, -2.0, 20.0, 10.0, 5.0]])
    assert torch.allclose(encode_boxes(box, anchor), torch.tensor([[0.5, 0.0, -0.2, math.log(2), 0.0, -math.log(2)]]))
    g = torch.Generator().manual_seed(0)
    anchors = torch.cat([torch.rand(50, 3, generator=g) * 100, torch.rand(50, 3, generator=g) * 40 + 3], 1)
    boxes = torch.cat([torch.rand(50, 3, generator=g) * 100, torch.rand(50, 3, generator=g) * 40 + 1], 1)
    weights = (10.0, 10.0, 10.0, 5.0, 5.0, 5.0)
    for w in (None, weights):
        assert torch.allclose(decode_boxes(encode_boxes(boxes, anchors, w), anchors, w), boxes, atol=1e-4)
    assert torch.allclose(encode_boxes(boxes, anchors, weights) * torch.tensor(weights), encode_boxes(boxes, anchors))


def test_box_iou_known_values():
    a = np.array([[0, 0, 0, 2, 2, 2], [0, 0, 0, 4, 4, 4]], dtype=np.float64)
    b = np.array([[0, 0, 1, 2, 2, 2], [0, 0, 0, 2, 2, 2], [10, 0, 0, 2, 2, 2]], dtype=np.float64)
    iou = box_iou(a, b)
    expected = [[4 / 12, 1.0, 0.0], [8 / 64, 8 / 64, 0.0]]
    assert torch.allclose(iou, torch.tensor(expected, dtype=torch.float64))
    # cuboids: 2x4x6 against 2x2x2 at the same centre
    assert float(box_iou([[0, 0, 0, 2, 4, 6]], [[0, 0, 0, 2, 2, 2]])[0, 0]) == pytest.approx(8 / 48)


def test_nms_known_answer():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 0.0, 2.0, 2.0, 2.0],  # A 0.9
            [0.0, 0.0, 1.0, 2.0, 2.0, 2.0],  # B 0.8, IoU(A) = 1/3: suppressed at 0.1
            [20.0, 0.0, 0.0, 2.0, 2.0, 2.0],  # C 0.7
            [20.0, 0.0, 1.9, 2.0, 2.0, 2.0],  # D 0.75, IoU(C) = 0.4/15.6 = 0.026: kept
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.75])
    assert nms_3d(boxes, scores).tolist() == [0, 3, 2]
    assert nms_3d(boxes, scores, iou_threshold=0.5).tolist() == [0, 1, 3, 2]
    assert nms_3d(boxes, scores, max_keep=2).tolist() == [0, 3]
    assert nms_3d(boxes[:0], scores[:0]).numel() == 0
    # the same two boxes in two images do not suppress each other
    kept = batched_nms_3d(boxes[[0, 1, 0, 1]], scores[[0, 1, 0, 1]], torch.tensor([0, 0, 1, 1]))
    assert kept.tolist() == [0, 2]


def test_clip_boxes():
    clipped = clip_boxes(torch.tensor([[0.0, 5.0, 9.0, 4.0, 2.0, 4.0]]), (10, 10, 10))
    # z [-2, 2] -> [-0.5, 2], x [7, 11] -> [7, 9.5]
    assert torch.allclose(clipped, torch.tensor([[0.75, 5.0, 8.25, 2.5, 2.0, 2.5]]))


def test_anchor_assignment_on_a_known_box():
    anchors = anchor_grid((12, 12, 12))
    gt = torch.tensor([[25.5, 25.5, 25.5, 10.0, 10.0, 10.0]])  # centre of cell (6, 6, 6), the size-10 anchor
    targets = assign_anchor_targets(anchors, gt)
    centre = ((6 * 12 + 6) * 12 + 6) * 5 + 1
    assert torch.nonzero(targets.labels == 1).flatten().tolist() == [centre]
    assert targets.matched[centre] == 0 and torch.allclose(targets.deltas[centre], torch.zeros(6))
    # the size-10 anchor one cell along x: IoU 6*10*10 / 1400 = 0.43, between the thresholds
    neighbour = ((6 * 12 + 6) * 12 + 7) * 5 + 1
    assert float(box_iou(anchors[neighbour : neighbour + 1], gt)[0, 0]) == pytest.approx(600 / 1400)
    assert targets.labels[neighbour] == -1
    far = 0  # cell (0, 0, 0), size 5: disjoint from the box
    assert targets.labels[far] == 0 and targets.matched[far] == -1
    best = box_iou(anchors, gt)[:, 0]
    ignored, negative = targets.labels == -1, targets.labels == 0
    assert int(ignored.sum()) > 0 and bool((best[ignored] >= 0.02).all()) and bool((best[ignored] < 0.5).all())
    assert bool((best[negative] < 0.02).all()) and int(negative.sum()) + int(ignored.sum()) == anchors.shape[0] - 1


def test_small_nodule_gets_its_best_anchor():
    anchors = anchor_grid((8, 8, 8))
    gt = torch.tensor([[14.0, 14.0, 14.0, 3.0, 3.0, 3.0]])  # no anchor reaches IoU 0.5
    assert float(box_iou(anchors, gt).max()) < 0.5
    assert int((assign_anchor_targets(anchors, gt, match_best=False).labels == 1).sum()) == 0
    targets = assign_anchor_targets(anchors, gt)
    (pos,) = torch.nonzero(targets.labels == 1).flatten().tolist()
    assert anchors[pos, 3] == 5.0
    assert torch.allclose(decode_boxes(targets.deltas[pos], anchors[pos]), gt[0], atol=1e-5)
    empty = assign_anchor_targets(anchors, torch.zeros(0, 6))
    assert bool((empty.labels == 0).all())


def test_hard_negative_mining():
    labels = torch.tensor([1, 0, 0, 0, 0, -1, 0])
    scores = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.3, 0.99, 0.05])
    assert hard_negative_mining(labels, scores, num_hard=2).tolist() == [1, 0, -1, 0, -1, -1, -1]
    assert hard_negative_mining(labels, scores, num_hard=10).tolist() == labels.tolist()
    pooled = hard_negative_mining(labels, scores, num_hard=1, num_random=2, generator=torch.Generator().manual_seed(0))
    assert int((pooled == 0).sum()) == 1 and pooled[0] == 1 and pooled[5] == -1


# ---- losses --------------------------------------------------------------------------------------------------


def test_focal_loss_values():
    zero = torch.zeros(1)
    # p = 0.5 for a positive: 0.25 * 0.5^2 * ln 2; for a negative the weight is 0.75
    assert float(focal_loss(zero, torch.ones(1))) == pytest.approx(0.25 * 0.25 * math.log(2))
    assert float(focal_loss(zero, torch.zeros(1))) == pytest.approx(0.75 * 0.25 * math.log(2))
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0])
    labels = torch.tensor([1, 0, -1, 0])
    bce = F.binary_cross_entropy_with_logits(logits[[0, 1, 3]], torch.tensor([1.0, 0.0, 0.0]))
    assert float(focal_loss(logits, labels, alpha=None, gamma=0.0)) == pytest.approx(float(bce))
    multi = torch.tensor([[2.0, -1.0], [0.3, 0.4], [1.0, 1.0]])
    classes = torch.tensor([1, 0, -1])
    ce = F.cross_entropy(multi[:2], classes[:2])
    assert float(focal_loss(multi, classes, alpha=None, gamma=0.0)) == pytest.approx(float(ce))
    assert float(focal_loss(multi, classes)) < float(focal_loss(multi, classes, alpha=None))


def test_box_and_mask_losses():
    deltas = torch.zeros(3, 6, requires_grad=True)
    targets = torch.tensor([[0.5, 0, 0, 0, 0, 2.0]]).repeat(3, 1)
    labels = torch.tensor([1, 0, 1])
    assert float(box_loss(deltas, targets, labels).detach()) == pytest.approx(0.125 + 1.5)
    none = box_loss(deltas, targets, torch.zeros(3, dtype=torch.long))
    assert float(none.detach()) == 0.0 and none.requires_grad
    target = torch.zeros(4, 4, 4)
    target[1:3, 1:3, 1:3] = 1
    good = mask_dice_loss([target * 40 - 20], [target])
    bad = mask_dice_loss([20 - target * 40], [target])
    assert float(good) < 0.02 and float(bad) > 0.95


def test_nodulenet_loss_sums_its_terms():
    g = torch.Generator().manual_seed(3)
    rpn_logits, rpn_deltas = torch.randn(1, 20, generator=g), torch.randn(1, 20, 6, generator=g)
    rpn_labels = torch.tensor([[1, 0, -1, 0] * 5])
    rpn_targets = torch.randn(1, 20, 6, generator=g)
    only_rpn = nodulenet_loss(rpn_logits, rpn_deltas, rpn_labels, rpn_targets)
    assert float(only_rpn.rcnn_cls) == float(only_rpn.mask) == 0.0
    assert float(only_rpn.total) == pytest.approx(float(only_rpn.rpn_cls + only_rpn.rpn_reg))
    mask_t = (torch.rand(6, 6, 6, generator=g) > 0.5).float()
    full = nodulenet_loss(
        rpn_logits, rpn_deltas, rpn_labels, rpn_targets,
        rcnn_logits=torch.randn(4, 2, generator=g), rcnn_deltas=torch.randn(4, 6, generator=g),
        rcnn_labels=torch.tensor([1, 0, 0, 1]), rcnn_targets=torch.randn(4, 6, generator=g),
        mask_logits=[torch.randn(6, 6, 6, generator=g)], mask_targets=[mask_t],
    )  # fmt: skip
    parts = full.rpn_cls + full.rpn_reg + full.rcnn_cls + full.rcnn_reg + full.mask
    assert min(float(full.rcnn_cls), float(full.rcnn_reg), float(full.mask)) > 0
    assert float(full.total) == pytest.approx(float(parts))


# ---- learning --------------------------------------------------------------------------------------------------


def test_rpn_overfits_one_sphere():
    torch.manual_seed(0)
    n = 48
    z, y, x = torch.meshgrid(*[torch.arange(n, dtype=torch.float32)] * 3, indexing="ij")
    centre, radius = (24.0, 22.0, 26.0), 5.0
    sphere = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2).float()
    image = ((sphere * 200 + 30 + torch.randn(n, n, n) * 5) / 255)[None, None]
    gt = torch.tensor([[*centre, 2 * radius, 2 * radius, 2 * radius]])
    net = NoduleNet(width=0.25).train()
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    targets = assign_anchor_targets(anchor_grid((12, 12, 12)), gt)
    positives = torch.nonzero(targets.labels == 1).flatten()
    assert positives.numel() > 0
    losses = []
    for _ in range(30):
        rpn = net(image)
        # NoduleNet's recipe: the positives and the hardest negatives of this step
        labels = hard_negative_mining(targets.labels, rpn.logits[0], num_hard=16)
        terms = nodulenet_loss(rpn.logits, rpn.deltas, labels[None], targets.deltas[None])
        optimiser.zero_grad()
        terms.total.backward()
        optimiser.step()
        losses.append([float(t.detach()) for t in (terms.total, terms.rpn_cls, terms.rpn_reg)])
    (total0, cls0, reg0), (total, cls, reg) = losses[0], losses[-1]
    assert total < 0.5 * total0
    assert cls < 0.5 * cls0 and reg < 0.1 * reg0  # both halves learn, not just the regression
