"""The model card (and installable pack) of a ``clinseg train nodule`` run.

The shipped ``nodule-fpr-phantom`` card is the template: inputs, labels, architecture and the document's
settings stay (the network is the same); id, description, training data, files, figures and the
training-data deviation describe the new run. ``write_model_folder`` (shared with the OAR trainer) checks
the card against the registry schema; the pack zip is what ``clinseg models import`` installs.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from ..io import atomic_write
from ..registry.store import BUILTIN_DIR, CARD_NAME, sha256_file
from .oar_card import write_model_folder

TEMPLATE_ID = "nodule-fpr-phantom"
DATA_WORDS = {
    "phantom": "ClinicalSeg chest phantoms (synthetic, no patient data)",
    "luna16": "a LUNA16-layout folder (annotations.csv nodules as positives)",
    "lidc": "LIDC-IDRI cases (DICOM + reader XML)",
}


def nodule_card(model_id: str, weights: Path, layout: str, record: dict) -> dict:
    """The card of the weights ``weights`` trained on ``layout`` data, from the run's ``record``."""
    card = json.loads((BUILTIN_DIR / TEMPLATE_ID / CARD_NAME).read_text())
    data = record["data"]
    consensus = f", nodules outlined by >= {data['consensus']} readers positive" if layout == "lidc" else ""
    what = f"{DATA_WORDS[layout]}{consensus}: {data['train_cases']} training case(s), {data['val_cases']} validation"
    val = record.get("validation") or {}
    checked = f"validation patch AUC {val['auc']:.3f}" if "auc" in val else "no validation cases"
    card.update(
        id=model_id, version="0.1.0",
        licence=card["licence"] if layout == "phantom" else "user-trained: see the licence of the training data",
        description=(f"Nodule false-positive reducer (NoduleFPR, {record['parameters']:,} parameters, as "
                     f"{TEMPLATE_ID}) trained by 'clinseg train nodule --layout {layout}' on {what}. "
                     f"{record['steps']} steps in {record['minutes']} min; {checked}."),
        training_data={"description": what, "synthetic": layout == "phantom"},
        files=[{"name": weights.name, "sha256": sha256_file(weights), "size": weights.stat().st_size,
                "format": "safetensors"}],
        figures={"validation": val, "samples": data["samples"], "prior_shift": record["prior_shift"]},
        parameter_count=record["parameters"],
        training={k: v for k, v in record.items() if k != "data"} | {"data": data},
    )
    card["document"]["deviations"] = [
        d if d["setting"] != "training data" else {**d, "ours": what, "why": "user-trained"}
        for d in card["document"]["deviations"]]
    return card


def write_pack(card: dict, weights: Path, out: Path) -> tuple[Path, Path]:
    """``out/model/`` (card + weights, schema-checked) and ``out/<id>.zip`` for ``clinseg models import``."""
    folder = write_model_folder(card, weights, out / "model")
    pack = out / f"{card['id']}.zip"
    with atomic_write(pack) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr(CARD_NAME, json.dumps(card, indent=2) + "\n")
            archive.write(weights, weights.name)
    return folder, pack
