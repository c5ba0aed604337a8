"""The model card of a ``clinseg train ctv`` run: inputs, label, document 002's settings and every deviation.

``python -m clinseg.train.ctv_card RUN FOLDER [--figures bench.json]`` writes ``FOLDER/card.json`` + the weights
(validated against the registry schema by ``write_model_folder``); ``--figures`` takes ``bench/ctv.py --json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..nets.counting import count_parameters
from ..nets.ctv_unet import CTV_WIDTHS, CTVUNet
from ..registry.store import sha256_file
from ..terminology import CTV
from .ctv import HELDOUT_MASK_SEED, HELDOUT_SEEDS, MASK_SEED, CtvTrainConfig, network_kwargs
from .oar_card import write_model_folder

DOCUMENT = "Tsinghua 2019 thesis on target-volume delineation (../shared/seeds/ctv.md, original " \
           "002_ffb3d8ba785eab03.txt)"


def _deviations(config: CtvTrainConfig, thesis_params: int, ours: int) -> list[dict]:
    return [
        {"setting": "training data", "document": "340 annotated cervical-cancer CTs (pelvis), 3-fold cross-validation",
         "ours": "head & neck CT phantoms with a primary tumour (oropharyngeal wall or floor of mouth invading the "
                 "mandible) and its CTV = GTV + 8 mm grown through soft tissue only (clinseg.phantoms.headneck); "
                 "procedural phantoms plus phantoms around the real DeepMind/TCIA test-split masks",
         "why": "no annotated patient CT on this machine; the issue asks for head & neck. The phantom CTV holds no "
                "nodal levels, so the model learns a tumour plus margin, not a clinical elective CTV"},
        {"setting": "widths", "document": f"{list(CTV_WIDTHS)} ({thesis_params:,} parameters with residual, SE and "
                                          "recurrence)",
         "ours": f"{list(config.widths)} ({ours:,} parameters)",
         "why": "one shared CPU core for about an hour of training, and a shipped file under 5 MB"},
        {"setting": "input geometry", "document": "whole volume, z resampled to 72 slices, 72x256x256, batch 1",
         "ours": f"resampled to {list(config.spacing)} mm (i, j, k); {list(config.patch)} cuboids (batch "
                 f"{config.batch}, {config.fg_fraction:.0%} holding CTV voxels) in training, sliding window with "
                 "the same cuboid at inference",
         "why": "a fixed spacing keeps the margin's size in voxels constant; whole volumes do not fit the time budget"},
        {"setting": "normalisation", "document": "raw values 0-2072 clipped at 1600, scaled to [0, 1] "
                                                 "(about HU -1024..576)",
         "ours": f"HU {list(config.window)} -> [0, 1]",
         "why": "the phantom tumour differs from muscle by tens of HU, a few per cent of the thesis's range; air "
                "still maps to 0 and bone to 1. Not compared one-for-one"},
        {"setting": "loss", "document": "BCE + Dice, 1:1 (deployed model)",
         "ours": f"BCE + soft Dice, 1:1, averaged over the {config.n_iterations} recurrent passes",
         "why": "the thesis does not say which passes the loss sees; every pass gets a target"},
        {"setting": "schedule", "document": "Adam 1e-4, up to 100k iterations",
         "ours": f"Adam {config.lr:g}, /10 after 80 % of the run, steps in training.steps",
         "why": "time budget: a higher rate for a run of about an hour"},
        {"setting": "augmentation", "document": "rotation <= 10 deg, flips x/y/z, translation <= 8 px, noise "
                                                "variance 0.001",
         "ours": "flips (p 0.5 per axis), rotation <= 10 deg and scale 0.9-1.1 (p 0.3), gamma, bias field, blur, "
                 "noise (clinseg.train.augment defaults); random cuboid position instead of translation",
         "why": "the shared augmentation module; close to the thesis's set"},
        {"setting": "post-processing", "document": "none stated", "ours": "largest connected component (26)",
         "why": "one primary tumour gives one CTV; stray voxels elsewhere are false positives"},
    ]


def ctv_card(net: CTVUNet, config: CtvTrainConfig, summary: dict, figures: dict, weights: Path,
             version: str = "0.1.0", model_id: str = "ctv-unet-phantom") -> dict:
    thesis = count_parameters(CTVUNet()).full
    ours = count_parameters(net).full
    return {
        "id": model_id, "version": version, "task": "ctv", "licence": "Apache-2.0",
        "description": (f"Document 002's CTV network (5-level 3-D U-Net, residual + squeeze-excitation blocks, "
                        f"{config.n_iterations} recurrent refinement passes, BCE + Dice) at widths "
                        f"{list(config.widths)}, CT only in, the CTV out at {list(config.spacing)} mm. Trained on "
                        "head & neck phantoms only (tumour + 8 mm anatomy-constrained margin; no nodal levels): "
                        "not validated on patient CT, not for clinical use."),
        "citation": "Network after the Tsinghua 2019 thesis (Pick-and-Learn, MICCAI 2019 for the noisy-label part); "
                    "phantoms and weights: ClinicalSeg. Organ masks: DeepMind/TCIA H&N set (CC BY 4.0).",
        "training_data": {"description": f"clinseg.phantoms.headneck phantoms with a tumour: procedural seeds "
                          f"{config.train_seeds[0]}-{config.train_seeds[-1]}"
                          + (f" and phantoms around the oncologist masks of the hn_oar_masks {config.mask_split} "
                             f"split (seeds {MASK_SEED}+)" if config.mask_split else "")
                          + f"; held out: seeds {HELDOUT_SEEDS[0]}-{HELDOUT_SEEDS[-1]} and the validation split "
                          f"(seeds {HELDOUT_MASK_SEED}+). No patient CT.", "synthetic": True},
        "architecture": {"class": "ctv_unet:CTVUNet", "kwargs": network_kwargs(config)},
        "inputs": {"modalities": ["CT"], "channels": 1, "spacing": list(config.spacing),
                   "patch_size": list(config.patch), "overlap": 0.25,
                   "intensity": {"clip": list(config.window), "scale": [0, 1]}},
        "inference": {"activation": "sigmoid", "threshold": 0.5, "precision": "float32", "batch_size": 1},
        "postprocessing": [{"op": "largest_component", "connectivity": 26}],
        "labels": [{"value": 1, "name": CTV.name, "color": list(CTV.color), "category": list(CTV.category),
                    "type": list(CTV.type)}],
        "files": [{"name": weights.name, "sha256": sha256_file(weights), "size": weights.stat().st_size,
                   "format": "safetensors"}],
        "figures": figures,
        "document": {"source": DOCUMENT, "settings": {
            "widths": list(CTV_WIDTHS), "parameters": thesis, "input": [72, 256, 256], "loss": "BCE + Dice 1:1",
            "optimiser": "Adam 1e-4, up to 100k iterations, batch 1",
            "published_dice": {"unet": 0.747, "residual": 0.753, "se": 0.755, "recurrent": 0.757,
                               "bce_dice_deployed": 0.763}},
            "deviations": _deviations(config, thesis, ours)},
        "training": {"command": "clinseg train ctv (see training.settings)", **summary},
        "parameter_count": ours,
    }


def card_from_run(run_dir: str | Path, folder: str | Path, figures: dict | None = None, **kwargs) -> Path:
    """The model folder (card + weights) of a ``clinseg train ctv`` run folder."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    raw = summary.pop("config")
    summary["cases"] = len(summary.get("cases", []))
    config = CtvTrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    weights = run_dir / "model.safetensors"
    net = CTVUNet(**network_kwargs(config))
    net.load_state_dict(load_file(str(weights)))
    summary["settings"] = raw
    return write_model_folder(ctv_card(net, config, summary, figures or {}, weights, **kwargs), weights, Path(folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--figures", type=Path, help="bench/ctv.py --json output")
    parser.add_argument("--version", default="0.1.0")
    args = parser.parse_args()
    figures = json.loads(args.figures.read_text()) if args.figures else {}
    print(card_from_run(args.run, args.folder, figures, version=args.version))


if __name__ == "__main__":
    main()
