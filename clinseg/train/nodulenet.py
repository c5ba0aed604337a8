"""Training NoduleNet (document 004's multi-task network, ``clinseg.nets.nodulenet``) on 1 mm crops.

Each step takes ``batch`` crops (``nodulenet_data``: ``POSITIVE_CROPS`` of them around a nodule) and sums the three
heads' terms (``nodule_losses.nodulenet_loss``: cross-entropy classification, the RPN's positives and negatives weighing
half each, smooth-L1 boxes, soft-Dice masks):

- RPN: anchors labelled by IoU with the nodules' cubes (>= 0.5 nodule, < 0.02 background, each nodule's best
  anchor a nodule too), then only the ``NUM_HARD`` background anchors the network scores highest among
  ``NUM_POOL`` drawn at random count (hard-negative mining, as NoduleNet).
- FPR head (on the down-4 map): the RPN's own best boxes of the crop after NMS plus two jittered copies of each
  nodule's box, labelled by IoU (>= 0.5 nodule, < 0.1 background), at most ``RCNN_SAMPLES`` a crop, at most
  half nodules.
- Mask head: each nodule's box against its voxels (sources without a label map give no mask term).

With ``hard_share`` that share of the crops is centred near one of the starting network's best-scoring false
positives of the case (``mine_false_positives``, once before training): vessel ends and crossings that the random
crops seldom show.

Adam instead of the document's SGD: runs here are minutes, not days. Validation runs the whole network on the
validation cases (``detect_case``) and reports CPM by the LUNA16 rule, as the bench scores the engine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..metrics.detection import Detection, ReferenceNodule, evaluate_detections, match_detections
from ..nets.nodulenet import NoduleNet
from ..post.boxes import assign_anchor_targets, hard_negative_mining
from ..tasks.nodule.nodulenet_engine import SPACING_MM, NoduleNetDetector
from .loop import follow_cosine
from .nodule_losses import balanced_weights, nodulenet_loss
from .nodulenet_data import CROP, PreparedCase, random_crop

NUM_HARD = 100  # per crop
NUM_POOL = 800
RCNN_PROPOSALS = 64  # the RPN's best boxes of a crop after NMS, for the FPR head
RCNN_SAMPLES = 32
RCNN_POSITIVE_IOU, RCNN_NEGATIVE_IOU = 0.5, 0.1
JITTER = 0.15  # nodule boxes for the FPR head: centre moved up to this share of the side, side scaled 1 +- this
POSITIVE_CROPS = 0.7  # share of crops around a nodule (NoduleNet crops at random 30 % of the time)
HARD_PER_CASE = 10  # false positives mined per case for ``hard_share``
# Classification: cross-entropy (focal gamma 0, no alpha), NoduleNet's usual loss; the RPN's positives and mined
# negatives weigh half each (``balanced_weights``): at stride 4 a 3-9 mm nodule reaches IoU 0.5 with no anchor and
# only its best one is positive, so a plain mean over ~100 mined negatives all but ignores it (measured: after 500
# steps the positives scored like the median background anchor).
FOCAL_ALPHA, FOCAL_GAMMA = None, 0.0


@dataclass
class NoduleNetConfig:
    width: float = 0.25
    crop: int = CROP
    batch: int = 2
    lr: float = 1e-3
    minutes: float = 30.0
    max_steps: int | None = None
    every: int = 200
    seed: int = 0
    cosine: bool = False  # learning rate along a half cosine over the run
    hard_share: float = 0.0  # share of crops around the starting network's false positives (the rest 70/30)


def _batch(cases: list[PreparedCase], rng: np.random.Generator, config: NoduleNetConfig, device: torch.device):
    crops = []
    for _ in range(config.batch):
        hard = rng.random() < config.hard_share
        positive = not hard and rng.random() < POSITIVE_CROPS
        crops.append(random_crop(cases[rng.integers(len(cases))], rng, config.crop, positive=positive, hard=hard))
    image = torch.from_numpy(np.stack([c.image for c in crops])[:, None]).to(device).float()
    return image, crops


def _jittered(boxes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    if boxes.numel() == 0:
        return boxes
    side = boxes[:, 3:]
    shift = (torch.rand(boxes.shape[0], 3, generator=generator) * 2 - 1).to(boxes) * JITTER * side
    scale = 1 + (torch.rand(boxes.shape[0], 1, generator=generator) * 2 - 1).to(boxes) * JITTER
    return torch.cat([boxes[:, :3] + shift, side * scale], dim=1)


def _sample(labels: torch.Tensor, limit: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of at most ``limit`` labelled boxes, at most half of them positive."""
    pos = torch.nonzero(labels == 1).flatten()
    neg = torch.nonzero(labels == 0).flatten()
    pos = pos[torch.randperm(pos.numel(), generator=generator)[: limit // 2].to(pos.device)]
    neg = neg[torch.randperm(neg.numel(), generator=generator)[: limit - pos.numel()].to(neg.device)]
    return torch.cat([pos, neg])


def training_loss(net: NoduleNet, image: torch.Tensor, crops: list, generator: torch.Generator):
    """The summed loss of one batch (``nodule_losses.NoduleLoss``) with its targets built as the docstring says."""
    device = image.device
    rpn = net(image)
    gts = [torch.from_numpy(c.boxes).to(device) for c in crops]
    rpn_labels, rpn_targets = [], []
    for b, gt in enumerate(gts):
        t = assign_anchor_targets(rpn.anchors, gt, weights=net.rpn_delta_weights)
        rpn_labels.append(hard_negative_mining(t.labels, torch.sigmoid(rpn.logits[b]).detach(), NUM_HARD, NUM_POOL,
                                               generator))
        rpn_targets.append(t.deltas)
    proposals = net.propose(rpn, score_threshold=0.0, max_proposals=RCNN_PROPOSALS)
    boxes, batch_index, labels, targets = [], [], [], []
    for b, gt in enumerate(gts):
        own = proposals.boxes[proposals.batch_index == b]
        cand = torch.cat([own, _jittered(gt, generator), _jittered(gt, generator)])
        t = assign_anchor_targets(cand, gt, RCNN_POSITIVE_IOU, RCNN_NEGATIVE_IOU, match_best=False,
                                  weights=net.rcnn_delta_weights)
        keep = _sample(t.labels, RCNN_SAMPLES, generator)
        boxes.append(cand[keep])
        batch_index.append(torch.full((keep.numel(),), b, dtype=torch.long, device=device))
        labels.append(t.labels[keep])
        targets.append(t.deltas[keep])
    rcnn = net.classify(rpn.features, torch.cat(boxes), torch.cat(batch_index))
    mask_logits, mask_targets = [], []
    with_mask = [(b, n) for b, c in enumerate(crops) if c.labels is not None
                 for n in range(len(c.boxes)) if c.box_labels[n] > 0]
    if with_mask:
        idx = torch.tensor([b for b, _ in with_mask], dtype=torch.long, device=device)
        mboxes = torch.stack([gts[b][n] for b, n in with_mask])
        for (b, n), m in zip(with_mask, net.segment(rpn.features, mboxes, idx)):
            region = tuple(slice(s, s + k) for s, k in zip(m.start, m.logits.shape))
            target = crops[b].labels[region] == crops[b].box_labels[n]
            mask_logits.append(m.logits)
            mask_targets.append(torch.from_numpy(target).to(device=device, dtype=m.logits.dtype))
    rpn_labels = torch.stack(rpn_labels)
    return nodulenet_loss(rpn.logits, rpn.deltas, rpn_labels, torch.stack(rpn_targets),
                          rcnn.logits, rcnn.deltas, torch.cat(labels), torch.cat(targets), mask_logits, mask_targets,
                          alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA, rpn_weights=balanced_weights(rpn_labels))


def detect_case(detector: NoduleNetDetector, case: PreparedCase) -> tuple[np.ndarray, list[Detection]]:
    """The boxes the whole network keeps on the case, best first, as the engine's detector runs it: their centres
    ``[k, j, i]`` on the case's grid and as detections (LPS mm, score)."""
    detector.network.eval()
    centres, _sides, scores = detector.detect(case.grid)
    lps = case.grid.index_to_physical(centres[:, ::-1]) if len(scores) else np.zeros((0, 3))
    return centres, [Detection(case.name, tuple(float(v) for v in c), float(s)) for c, s in zip(lps, scores)]


def references(case: PreparedCase) -> list[ReferenceNodule]:
    """The case's nodules as the detection metrics read them (centre LPS mm, diameter mm)."""
    centres = case.grid.index_to_physical(case.boxes[:, 2::-1]) if len(case.boxes) else []
    return [ReferenceNodule(case.name, tuple(float(v) for v in c), float(b[3]) * SPACING_MM)
            for c, b in zip(centres, case.boxes)]


def mine_false_positives(detector: NoduleNetDetector, cases: list[PreparedCase],
                         per_case: int = HARD_PER_CASE) -> int:
    """Set each case's ``hard_points`` to the centres of the detector's ``per_case`` best-scoring boxes that the
    LUNA16 rule (``match_detections``) calls false positives; returns how many in all."""
    total = 0
    for case in cases:
        centres, detections = detect_case(detector, case)
        outcome = match_detections(detections, references(case)).outcome
        far = [c for c, o in zip(centres, outcome) if o == "fp"][:per_case]
        case.hard_points = np.asarray(far, np.float32).reshape(-1, 3)
        total += len(case.hard_points)
    return total


def validation_cpm(net: NoduleNet, cases: list[PreparedCase], device: torch.device) -> dict[str, float]:
    """CPM, sensitivity at 8 FPs per scan and nodules found of the whole network on ``cases`` (LUNA16 rule)."""
    detector = NoduleNetDetector("validation", net, str(device))
    detections, nodules = [], []
    for case in cases:
        detections += detect_case(detector, case)[1]
        nodules += references(case)
    result = evaluate_detections(detections, nodules, len(cases))
    return {"cpm": float(result["cpm"]), "sens_at_1": float(result["sensitivity_at"]["1"]),
            "sens_at_8": float(result["sensitivity_at"]["8"]), "found": int(result["tp"])}


def train(cases: list[PreparedCase], val: list[PreparedCase], config: NoduleNetConfig, device: torch.device,
          init: dict | None = None, log: Callable[[str], None] = print,
          checkpoint: Callable[[NoduleNet, dict], None] | None = None) -> tuple[NoduleNet, dict]:
    """A ``NoduleNet`` of ``config.width`` trained for ``config.minutes`` (or ``max_steps``); returns it and the
    training record (history of losses and validation CPM)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    net = NoduleNet(width=config.width, pad_value=170.0).to(device)
    if init is not None:
        net.load_state_dict(init)
    record = {"steps": 0, "history": []}
    if config.hard_share > 0:
        record["mined_false_positives"] = mine_false_positives(NoduleNetDetector("mining", net, str(device)), cases)
        log(f"mined {record['mined_false_positives']} false positives of the starting network for hard crops")
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=1e-5)
    start, step = time.perf_counter(), 0
    deadline = start + 60 * config.minutes
    sums = np.zeros(6)
    while time.perf_counter() < deadline and (config.max_steps is None or step < config.max_steps):
        net.train()
        if config.cosine:
            follow_cosine(optimiser, config.lr, step, config.max_steps, (time.perf_counter() - start) / 60,
                          config.minutes)
        image, crops = _batch(cases, rng, config, device)
        loss = training_loss(net, image, crops, generator)
        optimiser.zero_grad()
        loss.total.backward()
        optimiser.step()
        sums += [float(v.detach()) for v in loss]
        step += 1
        last = step == config.max_steps or time.perf_counter() >= deadline
        if step % config.every == 0 or last:
            n = (step - 1) % config.every + 1
            row = {"step": step, "minutes": round((time.perf_counter() - start) / 60, 1),
                   **{k: round(v / n, 4) for k, v in zip(loss._fields, sums)}}
            sums[:] = 0
            if val:
                row.update({f"val_{k}": round(v, 4) for k, v in validation_cpm(net, val, device).items()})
            record["history"].append(row)
            log(json.dumps(row))
            if checkpoint is not None:
                checkpoint(net, row)
    record.update(steps=step, minutes=round((time.perf_counter() - start) / 60, 1), width=config.width,
                  crop=config.crop, batch=config.batch, lr=config.lr, cosine=config.cosine,
                  hard_share=config.hard_share)
    net.eval()
    return net, record
