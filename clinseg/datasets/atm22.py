"""The ATM'22 / nnU-Net v2 dataset layout.

Written layout (nnU-Net v2)::

    dataset_dir/
      dataset.json                  channel_names, labels, numTraining, file_ending
      imagesTr/<case>_0000.nii.gz   CT (channel 0)
      labelsTr/<case>.nii.gz        airway label (0 background, 1 airway: lumen + wall)
      imagesTs/, labelsTs/          the same for split="Ts"

The reader also accepts the ATM'22 release's own naming, where a label file
carries the image's name including the ``_0000`` suffix
(``labelsTr/ATM_001_0000.nii.gz``), and cases without a label (test images).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..io import write_volume
from ..io.atomic import atomic_write
from ..volume import Volume

SUFFIX = ".nii.gz"
CHANNEL = "_0000"
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Case:
    """One case of a dataset: its id, image file and label file (``None`` when unlabelled)."""

    id: str
    image_path: Path
    label_path: Path | None
    split: str = "Tr"


def _check_id(case_id: str) -> str:
    if not _CASE_ID.match(case_id) or case_id.endswith(CHANNEL):
        raise InputError("case id", f"'{case_id}' must be letters, digits, '_', '-' or '.', without '{CHANNEL}'")
    return case_id


def write_atm22(dataset_dir: str | Path, cases: Iterable[tuple[str, Volume, Volume | None]], split: str = "Tr",
                labels: dict[str, int] | None = None, description: str = "") -> list[Case]:
    """Write ``(case_id, ct, label)`` triples in the nnU-Net v2 layout and (re)write ``dataset.json``.

    Labels must be on the CT's grid. Cases already in the folder are kept and
    counted in ``numTraining``; every file is written atomically.
    """
    if split not in ("Tr", "Ts"):
        raise InputError("split", f"expected 'Tr' or 'Ts', got '{split}'")
    root = Path(dataset_dir)
    written: list[Case] = []
    for case_id, ct, label in cases:
        _check_id(case_id)
        if label is not None and not ct.same_grid(label):
            raise InputError(case_id, "label grid differs from the CT grid")
        image_path = root / f"images{split}" / f"{case_id}{CHANNEL}{SUFFIX}"
        write_volume(ct, image_path)
        label_path = None
        if label is not None:
            label_path = root / f"labels{split}" / f"{case_id}{SUFFIX}"
            write_volume(label, label_path)
        written.append(Case(case_id, image_path, label_path, split))
    _write_dataset_json(root, labels or {"background": 0, "airway": 1}, description)
    return written


def _write_dataset_json(root: Path, labels: dict[str, int], description: str) -> None:
    n_train = sum(1 for c in read_atm22(root, split="Tr") if c.label_path is not None) \
        if (root / "imagesTr").is_dir() else 0
    meta = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": n_train, "file_ending": SUFFIX,
            "description": description or "ClinicalSeg dataset in the nnU-Net v2 / ATM'22 layout"}
    with atomic_write(root / "dataset.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")


def read_atm22(dataset_dir: str | Path, split: str | None = None) -> list[Case]:
    """Cases of an nnU-Net v2 or ATM'22 folder, sorted by id (``split``: 'Tr', 'Ts' or both when ``None``)."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise InputError(root.name or str(root), "dataset folder not found")
    splits = [split] if split else ["Tr", "Ts"]
    cases: list[Case] = []
    for sp in splits:
        images = root / f"images{sp}"
        if not images.is_dir():
            continue
        label_dir = root / f"labels{sp}"
        for image in sorted(images.glob(f"*{SUFFIX}")):
            stem = image.name[: -len(SUFFIX)]
            case_id = stem[: -len(CHANNEL)] if stem.endswith(CHANNEL) else stem
            label = None
            for name in (f"{case_id}{SUFFIX}", f"{stem}{SUFFIX}"):  # nnU-Net naming, then ATM'22's
                if (label_dir / name).is_file():
                    label = label_dir / name
                    break
            cases.append(Case(case_id, image, label, sp))
    if split is None and not cases:
        raise InputError(root.name, f"no images found in imagesTr/ or imagesTs/ (expected *{SUFFIX})")
    return cases
