"""Cases for the nodule false-positive reducer from the three layouts ``clinseg train nodule`` reads.

Each source yields ``NoduleCase``: a CT, its positives as (centre LPS mm, diameter mm) and the findings to
ignore, so that ``clinseg.train.nodule_fpr.case_samples`` builds samples the same way whatever the source.

- ``phantom``: ``clinseg phantom chest`` plain folders (``ct.nii.gz`` + ``nodules.json``), one or a folder of
  them; generated seeds are read by ``nodule_fpr.seed_samples`` instead.
- ``luna16``: ``subset*/<uid>.mhd`` + ``annotations.csv``; the annotated nodules are the positives (LUNA16's
  ``candidates.csv`` is not used: the engine's own candidates are the negatives, as at inference).
- ``lidc``: LIDC-IDRI case folders (DICOM series + reader XML); a nodule outlined by at least ``consensus``
  readers is positive (centre and mean diameter from ``read_nodules``), one with fewer readers is ignored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Volume, label_of

LAYOUTS = ("phantom", "luna16", "lidc")


@dataclass
class NoduleCase:
    name: str
    ct: Volume
    nodules: list[tuple[np.ndarray, float]]
    ignore: list[tuple[np.ndarray, float]] = field(default_factory=list)


def _folder(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise InputError(label_of(root), "is not a folder")
    return root


def phantom_folders(root: str | Path) -> list[Path]:
    root = _folder(root)
    found = [p.parent for p in sorted(root.glob("*/nodules.json")) if (p.parent / "ct.nii.gz").is_file()]
    if (root / "nodules.json").is_file() and (root / "ct.nii.gz").is_file():
        found.insert(0, root)
    if not found:
        raise InputError(label_of(root), "is not a phantom folder (no ct.nii.gz + nodules.json, itself or one "
                         "level down; write them with 'clinseg phantom chest --layout plain')")
    return found


def lidc_folders(root: str | Path) -> list[Path]:
    root = _folder(root)
    found = [p for p in [root, *sorted(q for q in root.iterdir() if q.is_dir())]
             if any(p.glob("*.xml")) or any(p.glob("xml/*.xml"))]
    if not found:
        raise InputError(label_of(root), "is not an LIDC-IDRI folder (no case folder with a DICOM series and "
                         "reader XML, itself or one level down)")
    return found


def luna16_root(root: str | Path):
    from ..datasets.luna16 import Luna16

    luna = Luna16(_folder(root))
    if not luna.scans or not any((luna.root / p).is_file() for p in ("annotations.csv", "CSVFILES/annotations.csv")):
        raise InputError(label_of(luna.root), "is not a LUNA16 folder (needs subset*/<seriesuid>.mhd and "
                         "annotations.csv)")
    return luna


def case_names(root: str | Path, layout: str) -> list[str]:
    """Every case of ``root`` in ``layout`` (checked: a folder in another layout is a one-line error)."""
    if layout == "phantom":
        return [str(p) for p in phantom_folders(root)]
    if layout == "lidc":
        return [str(p) for p in lidc_folders(root)]
    if layout == "luna16":
        return luna16_root(root).series_uids
    raise InputError("--layout", f"unknown layout '{layout}' (use {', '.join(LAYOUTS)})")


def lidc_references(case, consensus: int) -> tuple[list, list]:
    """(positives, ignored) of one LIDC case: its ``read_nodules`` with >= ``consensus`` readers, and the rest."""
    from ..datasets.lidc import read_nodules

    read = read_nodules(case)
    refs = [(r.center_lps, r.mean_diameter_mm, r.readers >= consensus) for r in read]
    return [(c, d) for c, d, ok in refs if ok], [(c, d) for c, d, ok in refs if not ok]


def iter_cases(root: str | Path, layout: str, names: list[str], consensus: int = 3) -> Iterator[NoduleCase]:
    """The cases ``names`` (from ``case_names``) read one at a time."""
    if layout == "luna16":
        luna = luna16_root(root)
        for uid in names:
            yield NoduleCase(uid, luna.read_ct(uid),
                             [(np.asarray(n.centre, float), n.diameter_mm) for n in luna.nodules(uid)])
    elif layout == "lidc":
        from ..datasets.lidc import read_lidc_case

        for folder in names:
            case = read_lidc_case(folder)
            positives, ignored = lidc_references(case, consensus)
            yield NoduleCase(Path(folder).name, case.ct, positives, ignored)
    elif layout == "phantom":
        from ..io import read_volume

        for folder in names:
            truth = json.loads((Path(folder) / "nodules.json").read_text())
            yield NoduleCase(Path(folder).name, read_volume(Path(folder) / "ct.nii.gz"),
                             [(np.asarray(n["center_lps"], float), float(n["diameter_mm"])) for n in truth["nodules"]])
    else:
        raise InputError("--layout", f"unknown layout '{layout}' (use {', '.join(LAYOUTS)})")
