"""The model card of a trained OAR cascade: inputs, stage-2 crops, labels, document settings and deviations.

``oar_card(...)`` returns the card as a dict (checked against the registry schema by ``write_model_folder``);
the pipeline reads the stage-1 spacing, patch and window from ``inputs`` and each stage-2 organ's crop from a
``postprocessing`` op ``stage2``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..nets.counting import count_parameters
from ..nets.oar_unet import THESIS_WEIGHT_COUNT, OARCascade
from ..registry.card import validate_card
from ..registry.store import sha256_file
from ..terminology import HN_ORGANS
from .oar import HU_WINDOW, N_CLASSES, OarTrainConfig, cascade_kwargs, organ_key

DOCUMENT = "XJTU 2020 thesis on head & neck OARs with a two-stage 3-D U-Net (../shared/seeds/oar.md, " \
           "original 001_453b58f5af266994.txt)"


# Paired organs are handed out by side of the midsagittal plane fitted through these organs (tasks.oar.sides).
SIDES_OP = {"op": "left_right_by_midline", "midline_organs": ["Brain", "Brainstem", "Spinal cord", "Spinal canal",
                                                              "Mandible"]}


def _deviations(config: OarTrainConfig, stage2: bool) -> list[dict]:
    return [
        {"setting": "training data", "document": "30 own H&N CT scans + MICCAI 2015",
         "ours": "CT phantoms synthesised around the real DeepMind/TCIA organ masks (test split, oncologist)",
         "why": "no real H&N CT on this machine; the masks are real anatomy, the CT numbers are synthetic"},
        {"setting": "organs", "document": "8 (brainstem, eyes, optic nerves, parotids, mandible); 9 outputs",
         "ours": f"{len(HN_ORGANS)} organs ({N_CLASSES} outputs): the real masks' 21 plus the optic chiasm",
         "why": "the issue asks for the organs RT users contour and the masks cover"},
        {"setting": "width", "document": "base width 24 (3,154,896 kernel weights)",
         "ours": f"base width {config.width} (stage 2: {config.stage2_width})",
         "why": "CPU budget: about an hour of training on one shared core (~2-4 s per step)"},
        {"setting": "stage-1 input", "document": "whole volume resized to 208x208x72",
         "ours": f"resampled to {list(config.spacing)} mm (i, j, k), {list(config.patch)} cuboids in training, "
                 "sliding window at inference",
         "why": "a fixed spacing keeps organ sizes in voxels constant whatever the scan's field of view"},
        {"setting": "normalisation", "document": "HU [-1000, 600] -> [0, 1], then z-score with dataset statistics",
         "ours": "HU [-1000, 600] -> [0, 1] only", "why": "a fixed affine rescaling is absorbed by the first layer"},
        *([{"setting": "feature normalisation", "document": "none listed in Table 3-3",
            "ours": "BatchNorm after every 3x3x3 convolution (conv biases dropped)",
            "why": "0.1.0 without it (593 steps) found only the brain; not compared one-for-one"}]
          if config.norm == "batch" else []),
        *([{"setting": "stage-1 loss", "document": "focal loss",
            "ours": f"cross-entropy + {config.dice_weight:g} x multi-class soft Dice (organs present in the batch)",
            "why": "the Dice term weighs every organ equally whatever its voxel count; plain cross-entropy instead of "
                   "focal as in common 3-D U-Net recipes; not compared one-for-one"}] if config.loss == "ce" else []),
        {"setting": "stage 2", "document": "8 binary models on resized crops (eyes/optic nerves 32^3, brainstem and "
         "parotids 64^3, mandible 64x128x128)",
         "ours": (f"binary models for {', '.join(config.stage2_organs)}: fixed {list(config.stage2_patch)} crops at "
                  f"{list(config.stage2_spacing)} mm centred on stage 1's organ" if stage2 else "not trained"),
         "why": ("the small organs gain from resolution" if stage2 else "time budget: all CPU time went to stage 1, "
                 "which does not yet locate the lenses, optic nerves and cochleae that stage 2 would refine")},
        {"setting": "schedule", "document": "Adam 1e-3, 6000 steps, batch 1",
         "ours": f"Adam, lr /10 at 80 %, batch {config.batch}, steps in training.steps",
         "why": "time budget"},
        {"setting": "augmentation", "document": "translation +-8, rotation +-5 deg, scale 0.9-1.1",
         "ours": "random cuboid position, rotation +-5 deg, scale 0.9-1.1, mild noise/blur/gamma; no flips",
         "why": "a left-right flip would swap paired organs' labels"},
        {"setting": "dropout", "document": "dropout at the bottom (rate not stated)", "ours": "none",
         "why": "short training; dropout slowed convergence"},
    ]


def oar_card(cascade: OARCascade, config: OarTrainConfig, summary: dict, figures: dict, weights: Path,
             version: str = "1.0.0", model_id: str = "oar-unet-phantom",
             inference_patch: tuple[int, int, int] = (64, 128, 128)) -> dict:
    stage2_ops = []
    by_name = {s.name: s for s in HN_ORGANS}
    for organ in config.stage2_organs:
        if organ_key(organ) in cascade.stage2:
            stage2_ops.append({"op": "stage2", "organ": organ, "key": organ_key(organ), "label": by_name[organ].label,
                               "spacing": list(config.stage2_spacing), "patch": list(config.stage2_patch)})
    labels = []
    for s in HN_ORGANS:
        entry = {"value": s.label, "name": s.name, "color": list(s.color), "category": list(s.category),
                 "type": list(s.type)}
        if s.modifier:
            entry["modifier"] = list(s.modifier)
        labels.append(entry)
    counts = count_parameters(cascade)
    stage1_counts = count_parameters(cascade.stage1)
    return {
        "id": model_id, "version": version, "task": "oar", "licence": "Apache-2.0",
        "description": (f"The thesis's two-stage head & neck OAR 3-D U-Net at base width {config.width}: stage 1 "
                        f"({stage1_counts.full:,} parameters) on the whole scan at {list(config.spacing)} mm for "
                        f"{len(HN_ORGANS)} organs, {len(stage2_ops)} binary stage-2 models on crops for small organs. "
                        "Trained on phantoms only (CT synthesised around real organ masks): not validated on "
                        "patient CT."),
        "citation": "Network after the XJTU 2020 thesis (two-stage 3-D U-Net); phantoms and weights: ClinicalSeg. "
                    "Organ masks: DeepMind/TCIA H&N set (CC BY 4.0).",
        "training_data": {"description": "Phantoms built by clinseg.phantoms.headneck around the oncologist masks of "
                          "the 16 test-split scans of the DeepMind/TCIA H&N set; no patient CT.", "synthetic": True},
        "architecture": {"class": "oar_unet:OARCascade", "kwargs": dict(zip(
            ("stage1", "stage2"), cascade_kwargs(config, [op["key"] for op in stage2_ops])))},
        "inputs": {"modalities": ["CT"], "channels": 1, "spacing": list(config.spacing),
                   "patch_size": list(inference_patch), "overlap": 0.25,
                   "intensity": {"clip": list(HU_WINDOW), "scale": [0, 1]}},
        "inference": {"activation": "softmax", "precision": "float32", "batch_size": 1},
        "postprocessing": [dict(SIDES_OP), *stage2_ops, {"op": "largest_component_per_organ", "connectivity": 26}],
        "labels": labels,
        "files": [{"name": weights.name, "sha256": sha256_file(weights), "size": weights.stat().st_size,
                   "format": "safetensors"}],
        "figures": figures,
        "document": {"source": DOCUMENT, "settings": {
            "stage1_weights_only_parameters": THESIS_WEIGHT_COUNT, "base_width": 24, "poolings": 3,
            "stage1_input": [208, 208, 72], "losses": "stage 1 focal, stage 2 class-weighted CE",
            "published_mean_dice": {"stage1": 0.670, "two_stage": 0.730}},
            "deviations": _deviations(config, bool(stage2_ops))},
        "training": {"command": "clinseg train oar (see training.settings)", **summary},
        "parameter_count": counts.full,
    }


def write_model_folder(card: dict, weights: Path, folder: Path) -> Path:
    """Validate the card and write ``card.json`` plus the weights into ``folder``."""
    problems = validate_card(card)
    if problems:
        raise ValueError("; ".join(problems))
    folder.mkdir(parents=True, exist_ok=True)
    if weights.resolve() != (folder / weights.name).resolve():
        shutil.copyfile(weights, folder / weights.name)
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return folder


def card_from_run(run_dir: str | Path, folder: str | Path, figures: dict | None = None, **kwargs) -> Path:
    """The model folder (card + weights) of a ``clinseg train oar`` run folder."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    raw = summary.pop("config")
    config = OarTrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    weights = run_dir / "model.safetensors"
    state = load_file(str(weights))
    keys = sorted({k.split(".")[1] for k in state if k.startswith("stage2.")})
    cascade = OARCascade(*cascade_kwargs(config, keys))
    cascade.load_state_dict(state)
    summary["settings"] = raw
    card = oar_card(cascade, config, summary, figures or {}, weights, **kwargs)
    return write_model_folder(card, weights, Path(folder))


def card_with_stage2(base: dict, weights: Path, record: dict, version: str, figures: dict,
                     notes: dict | None = None, z_band: dict | None = None) -> dict:
    """A cascade card from an existing (stage-1) card and a ``python -m clinseg.train.oar_stage2`` record
    (``stage2.json``): anchored stage-2 ops, architecture, weights hash, parameter counts, training and deviations.
    ``z_band``: the op of ``python -m clinseg.train.oar_bands`` (default: the base card's, if any)."""
    import copy

    from safetensors.torch import load_file

    from .oar_stage2 import stage2_model_kwargs

    card = copy.deepcopy(base)
    kwargs = card["architecture"]["kwargs"]
    keys = sorted({op["key"] for op in record["ops"]})
    kwargs["stage2"] = stage2_model_kwargs(record["ops"], record["stage2_kwargs"])
    cascade = OARCascade(kwargs["stage1"], kwargs["stage2"])
    cascade.load_state_dict(load_file(str(weights)))
    card["version"] = version
    z_band = z_band or next((op for op in base.get("postprocessing", []) if op["op"] == "z_band"), None)
    card["postprocessing"] = [*([z_band] if z_band else []), dict(SIDES_OP), *record["ops"],
                              {"op": "largest_component_per_organ", "connectivity": 26}]
    card["files"] = [{"name": weights.name, "sha256": sha256_file(weights), "size": weights.stat().st_size,
                      "format": "safetensors"}]
    card["parameter_count"] = count_parameters(cascade).full
    card["figures"] = figures
    card["training"]["stage2"] = {k: v for k, v in record.items() if k != "ops"}
    card["training"]["parameters"] = {"stage1": count_parameters(cascade.stage1).full,
                                      **{f"stage2.{k}": count_parameters(cascade.stage2[k]).full for k in keys}}
    if notes:
        card["training"].update(notes)
    organs = ", ".join(op["organ"] for op in record["ops"])
    own = [op["organ"] for op in record["ops"] if (op.get("anchor") or {}).get("organs") == [op["organ"]]]
    placement = ("an anchor rule (anchor organs' centroid + an offset learnt from the training masks; "
                 "postprocessing ops)" + (f", or, for {', '.join(own)}, on stage 1's own organ" if own else ""))
    spacing = "; ".join(f"{key} {op['patch']} voxels at {op['spacing']}" for key, op in
                        {op["key"]: op for op in record["ops"]}.items())
    stage2_dev = {"setting": "stage 2",
                  "document": "8 binary models on resized crops (eyes/optic nerves 32^3, brainstem and parotids 64^3, "
                              "mandible 64x128x128) placed on stage 1's box of the organ",
                  "ours": f"{len(keys)} binary models ({', '.join(keys)}; one per organ type, right-side crops "
                          f"mirrored) for {organs}: fixed crops ({spacing} mm) placed by {placement}"
                          + (" (replaced inside the crop only for organs longer than it)"
                             if any(op.get("replace") == "crop" for op in record["ops"]) else "")
                          + (", given stage 1's probability of the organ on the crop as a second input channel "
                             f"({', '.join(sorted({op['key'] for op in record['ops'] if op.get('inputs')}))})"
                             if any(op.get("inputs") for op in record["ops"]) else "")
                          + ", CE + soft Dice",
                  "why": "stage 1 at 3 mm never finds the smallest organs, so a crop on its own guess would go "
                         "nowhere; the eyes and brainstem it finds reliably place those crops instead, while the "
                         "organs it does find are refined where it put them. Mirroring doubles the "
                         "training crops; CE + Dice instead of inverse-frequency class weights, which reach "
                         "100-1000 : 1 for organs of 20-300 voxels (not compared one-for-one)"}
    deviations = card["document"]["deviations"]
    card["document"]["deviations"] = [stage2_dev if d["setting"] == "stage 2" else d for d in deviations]
    if not any(d["setting"] == "left/right" for d in deviations):
        card["document"]["deviations"].append(
            {"setting": "left/right", "document": "separate output channels per side, as predicted",
             "ours": "each pair's probabilities merged and handed out by side of the midsagittal plane (fitted "
                     "through the midline organs stage 1 finds); postprocessing op left_right_by_midline",
             "why": "stage 1 mixed the sides of parotids, submandibular glands and eyes (HD95 60-150 mm)"})
    if z_band and not any(d["setting"] == "head-to-foot bands" for d in deviations):
        card["document"]["deviations"].append(
            {"setting": "head-to-foot bands", "document": "none (largest prediction per organ)",
             "ours": "each organ's stage-1 probability zeroed outside the heights, relative to the brain's centroid, "
                     "where the training masks put it (+- margin; op z_band)",
             "why": "stage 1 found parotids and an eye among the shoulders, larger than the true ones"})
    problems = validate_card(card)
    if problems:
        raise ValueError("; ".join(problems))
    return card
