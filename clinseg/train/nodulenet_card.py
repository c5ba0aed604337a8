"""The model card of a ``clinseg train nodule --network nodulenet`` run: document 004's whole network.

The reducer's shipped card gives the common fields (task, inputs, labels, licence); the architecture, the
document's settings and every deviation here describe NoduleNet as ``clinseg.nets.nodulenet`` builds it and
``clinseg.train.nodulenet`` trains it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..registry.store import BUILTIN_DIR, CARD_NAME, sha256_file
from .nodule_card import DATA_WORDS, TEMPLATE_ID
from .nodulenet import HARD_PER_CASE, NUM_HARD, NUM_POOL, POSITIVE_CROPS, RCNN_SAMPLES

DOCUMENT_SETTINGS = {
    "backbone": "FeatureNet U-Net: stride-2 stem (24 ch), ResBlocks to down-2 (32), down-4 (64), /8, /16 (64); "
                "two transposed-conv paths back to feature-map-4 (128 ch)",
    "rpn": "1x1x1 conv 128 -> 64, per-anchor logit + 6 deltas on feature-map-4; cubic anchors 5, 10, 20, 30, 50 mm",
    "fpr_head": "ROIs on the down-4 map, adaptive max-pool 7^3, FC 64*343 -> 512 -> 256 -> 2 logits + 6 deltas",
    "mask_head": "feature-map-4 crop, x2 + conv, concat down-2, conv, x2, concat CT, conv, 1x1 -> voxel logits",
    "input": "1 mm isotropic, HU [-1200, 600] -> [0, 255], lung mask, 128^3 training crops",
    "losses": "focal (alpha 0.25, gamma 2) classification, smooth-L1 boxes, soft-Dice masks; their sum",
    "nms": "IoU 0.1",
}


def _deviations(record: dict, what: str) -> list[dict]:
    width = record["width"]
    out = [
        {"setting": "width", "document": "1.0 (17.3 M parameters)", "ours": f"{width:g} ({record['parameters']:,})",
         "why": "trained on this project's machines in minutes; width 1.0 is the same code (--width 1)"}
        if width != 1.0 else None,
        {"setting": "training crops", "document": "128^3", "ours": f"{record['crop']}^3, batch {record['batch']}",
         "why": "time per step; 96^3 still holds the 50 mm anchor"} if record["crop"] != 128 else None,
        {"setting": "optimiser", "document": "SGD (NoduleNet's schedule over days)",
         "ours": f"Adam, lr {record['lr']:g}{' along a half cosine' if record.get('cosine') else ''}, "
                 f"{record['steps']} steps in {record['minutes']} min",
         "why": "runs of minutes, not days"},
        {"setting": "sampling", "document": "hard-negative mining (RPN), proposals labelled by IoU (FPR head)",
         "ours": f"the {NUM_HARD} highest-scoring of {NUM_POOL} random background anchors per crop; FPR head on the "
                 f"RPN's best boxes plus two jittered copies of each nodule's box, at most {RCNN_SAMPLES} a crop, "
                 "half nodules at most",
         "why": "the document gives no numbers; jittered nodule boxes give the FPR head positives from the first step"},
        {"setting": "classification loss", "document": "focal, alpha 0.25, gamma 2 (the report's code: no alpha)",
         "ours": "cross-entropy; the RPN's positives and mined background anchors weigh half each",
         "why": "a 3-9 mm nodule has one positive anchor against 100 mined ones: with the focal loss's plain mean the "
                "RPN scored its positives like the median background anchor after 1000 steps (docs/nodule.md)"},
        {"setting": "crops", "document": "around nodules, 30 % at random (NoduleNet's r_rand_crop 0.3)",
         "ours": f"{round(100 * POSITIVE_CROPS)} % around a nodule, flipped and axis-permuted", "why": "as NoduleNet"}
        if not record.get("hard_share") else
        {"setting": "crops", "document": "around nodules, 30 % at random (NoduleNet's r_rand_crop 0.3)",
         "ours": f"{round(100 * record['hard_share'])} % around one of the starting weights' {HARD_PER_CASE} "
                 f"best-scoring false positives of the case, of the rest {round(100 * POSITIVE_CROPS)} % around a "
                 "nodule; flipped and axis-permuted",
         "why": "aimed at the vessel ends and crossings that outscore small nodules; from 0.2.0 it gained nothing over "
                "4000 steps (docs/nodule.md)"},
        {"setting": "outside the lungs", "document": "lung mask, padding 170",
         "ours": "the engine's search region (each lung closed with a 17 mm ball) padded with 170",
         "why": "juxta-pleural nodules lie in the closed lung, as the engine searches them"},
        {"setting": "training data", "document": "LIDC-IDRI (1010 patients)", "ours": what,
         "why": "no patient data on this machine" if record["data"]["layout"] == "phantom" else "user-trained"},
    ]
    return [d for d in out if d is not None]


def nodulenet_card(model_id: str, weights: Path, layout: str, record: dict) -> dict:
    """The card of NoduleNet weights ``weights`` trained on ``layout`` data, from the run's ``record``."""
    card = json.loads((BUILTIN_DIR / TEMPLATE_ID / CARD_NAME).read_text())
    data = record["data"]
    what = f"{DATA_WORDS[layout]}: {data['train_cases']} training case(s), {data['val_cases']} validation"
    val = record.get("validation") or {}
    checked = f"validation CPM {val['val_cpm']:.3f} (whole network, LUNA16 rule)" if "val_cpm" in val else \
        "no validation cases"
    card.update(
        id=model_id, version="0.1.0",
        licence=card["licence"] if layout == "phantom" else "user-trained: see the licence of the training data",
        description=(f"NoduleNet (document 004: RPN, decoupled FPR head, mask head; width {record['width']:g}, "
                     f"{record['parameters']:,} parameters) trained by 'clinseg train nodule --network nodulenet "
                     f"--layout {layout}' on {what}. {record['steps']} steps in {record['minutes']} min; {checked}. "
                     "The engine uses it as its detector with --engine model --model " + model_id + "."),
        citation="NoduleNet (Tang et al., MICCAI 2019) as described in document 004; written from the description, "
                 "no code of the original.",
        training_data={"description": what, "synthetic": layout == "phantom"},
        architecture={"class": "nodulenet:NoduleNet", "kwargs": {"width": record["width"], "pad_value": 170.0}},
        files=[{"name": weights.name, "sha256": sha256_file(weights), "size": weights.stat().st_size,
                "format": "safetensors"}],
        figures={"validation": val},
        parameter_count=record["parameters"],
        training={k: v for k, v in record.items() if k != "data"} | {"data": data},
    )
    card["inputs"]["patch_size"] = [record["crop"]] * 3
    card["document"] = {"source": card["document"]["source"], "settings": DOCUMENT_SETTINGS,
                        "deviations": _deviations(record, what)}
    return card
